//! Hashes of the files a snapshot will hard-link, taken before the server is stopped.
//!
//! A hard link shares its inode with the live file, and the service user owns that inode: once
//! the server runs again it could change the snapshot's copy through the live name before a
//! later hash saw it, and the manifest would bless the changed content. So the manifest's hash of
//! a linked file must describe the content at the moment of the link. Hashing every linked file
//! during the downtime would make it grow with the data; instead they are hashed here, while the
//! server still runs (immutable files: RocksDB tables, write-once blobs), and at link time a
//! hash is reused only when the inode is unchanged since: same device, inode, size, mtime and
//! ctime. No unprivileged process can set ctime, and every write updates it, so an equal ctime
//! means equal content. Whatever does not match (a table written since) is hashed from the open
//! descriptor during the snapshot.

use super::methods::{methods, rocksdb_immutable, trim_slash};
use super::precopy::PreCopyError;
use super::{SnapshotPlan, Snapshots, StoreMethod};
use crate::os::fsutil::{self, Dir, Kind, Meta};
use crate::server::serverconfig::{ServerConfig, StoreKind};
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a pre-hash knows of one inode.
#[derive(Debug, Clone)]
struct Known {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    sha256: String,
}

/// What is done before the stop: sha256 of the linkable files of a config's file stores (by
/// inode), and copies of its SQLite databases (`precopy`).
#[derive(Debug, Default)]
pub struct PreHash {
    known: HashMap<(u64, u64), Known>,
    /// Bytes hashed (for the log).
    pub bytes: u64,
    precopies: Vec<super::precopy::PreCopy>,
}

impl PreHash {
    /// The hash of the inode `m` describes, if it is unchanged since it was hashed.
    pub fn lookup(&self, m: &Meta) -> Option<&str> {
        let k = self.known.get(&(m.id.dev, m.id.ino))?;
        (k.size == m.size && k.mtime == m.mtime && k.ctime == m.ctime).then_some(k.sha256.as_str())
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// The precopy of the inode `m` describes, if one was made.
    pub(super) fn precopy(&self, m: &Meta) -> Option<&super::precopy::PreCopy> {
        self.precopies
            .iter()
            .find(|p| p.source == (m.id.dev, m.id.ino))
    }

    /// How many databases were copied ahead of the stop.
    pub fn precopied(&self) -> usize {
        self.precopies.len()
    }
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

impl Snapshots {
    /// Server running. Best effort: a file that cannot be read now is hashed at link time.
    /// `plan` is the space check made for `cfg`: a copy made now stays within what it counted.
    pub fn prehash(&self, cfg: &ServerConfig, plan: &SnapshotPlan) -> PreHash {
        let mut jobs: Vec<(Arc<Dir>, OsString)> = Vec::new();
        for (store, (method, _)) in cfg.stores.iter().zip(methods(&cfg.stores)) {
            let (path, rocks) = match (&store.kind, method) {
                (StoreKind::RocksDb { path }, StoreMethod::RocksDbFiles) => (path, true),
                (StoreKind::Fs { path }, StoreMethod::FsFiles) => (path, false),
                _ => continue,
            };
            if let Ok(d) = Dir::open(&trim_slash(path)) {
                collect(Arc::new(d), "", rocks, &mut jobs);
            }
        }
        let next = AtomicUsize::new(0);
        let out: Mutex<PreHash> = Mutex::new(PreHash::default());
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(jobs.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((dir, name)) = jobs.get(k) else {
                        break;
                    };
                    if let Some((key, known)) = hash_one(dir, name) {
                        if let Ok(mut o) = out.lock() {
                            o.bytes += known.size;
                            o.known.insert(key, known);
                        }
                    }
                });
            }
        });
        let mut out = out.into_inner().unwrap_or_default();
        out.precopies = self.precopy_sqlite(cfg, plan);
        out
    }

    /// Server running: copies of the SQLite database files (not their -wal/-shm, which are small
    /// and copied at the stop). Best effort: a database that cannot be copied now is copied whole
    /// during the snapshot. Each copy is bounded by the bytes `plan` counted for its store plus
    /// the plan's margin: the file's length is the service user's to choose, the space the
    /// copy takes in root's state dir is not.
    fn precopy_sqlite(
        &self,
        cfg: &ServerConfig,
        plan: &SnapshotPlan,
    ) -> Vec<super::precopy::PreCopy> {
        let Ok(root) = super::fsops::open_private_dir(&self.root) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for store in &cfg.stores {
            let StoreKind::Sqlite { path } = &store.kind else {
                continue;
            };
            let Some(counted) = plan
                .stores
                .iter()
                .find(|p| p.id == store.id)
                .and_then(|p| p.bytes_needed)
            else {
                continue;
            };
            let limit = counted.saturating_add(plan.margin);
            let r = (|| -> Result<Option<super::precopy::PreCopy>, PreCopyError> {
                let (parent, name) = Dir::open_parent(path)?;
                let (f, m) = parent.open_file(&name)?;
                let dir = super::precopy::dir_in(&root)?;
                if super::precopy::reflinks(&f, &dir) {
                    tracing::info!(store = %store.id, "the snapshots share extents with the SQLite database: it is cloned at the stop, no copy before it");
                    return Ok(None);
                }
                let store_dir = match dir.open_dir(&store.id) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(&store.id, 0o700)?,
                };
                store_dir.remove_file(&name)?;
                super::precopy::copy(&f, path, &m, store_dir, &name, limit).map(Some)
            })();
            match r {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(store = %store.id, "no copy of the SQLite database before the stop ({e}); it is copied whole during the snapshot")
                }
            }
        }
        out
    }
}

/// The linkable files below `dir`.
fn collect(dir: Arc<Dir>, rel: &str, rocks: bool, jobs: &mut Vec<(Arc<Dir>, OsString)>) {
    for name in dir.entries().unwrap_or_default() {
        let r = if rel.is_empty() {
            name.to_string_lossy().to_string()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        match dir.stat(&name) {
            Ok(Some(m)) if m.kind == Kind::Dir => {
                if let Ok(sub) = dir.open_dir(&name) {
                    collect(Arc::new(sub), &r, rocks, jobs);
                }
            }
            Ok(Some(m)) if m.kind == Kind::File && (!rocks || rocksdb_immutable(&r)) => {
                jobs.push((dir.clone(), name));
            }
            _ => {}
        }
    }
}

/// Hashes one file; None when it changed while it was read (or cannot be read).
fn hash_one(dir: &Dir, name: &OsString) -> Option<((u64, u64), Known)> {
    let (f, before) = dir.open_file(name).ok()?;
    let path = dir.path().join(name);
    let sha256 = fsutil::sha256_of(&f, &path).ok()?;
    let after = fsutil::meta_of(&f, &path).ok()?;
    (after.ctime == before.ctime && after.size == before.size).then_some((
        (before.id.dev, before.id.ino),
        Known {
            size: before.size,
            mtime: before.mtime,
            ctime: before.ctime,
            sha256,
        },
    ))
}
