//! Putting a snapshot back, with the server stopped.
//!
//! Where each store goes is what the snapshot recorded when it was taken (its path, and the
//! identity of the directory holding it), never what the live config says at restore time: the
//! server's user can edit that config, and a config pointing a store at /etc would otherwise make
//! root swap a copy in and take the original away. The SQL connections come from the config
//! copy the snapshot keeps (root-only), checked against the source the snapshot recorded.
//!
//! Nothing a restore displaces is deleted unless it is proven to be data another snapshot holds
//! (`Displaced::Discard`, only for the tree that snapshot recorded, by identity): the displaced
//! data is what a server ran on since the snapshot — mail delivered in between — and is kept as a
//! snapshot of its own (`Restored::kept`).

use super::create::tool_files;
use super::methods::{rocksdb_immutable, sql_source, sqlite_names, trim_slash};
use super::StoreSnapshot;
use super::{fsops, now, pgclone, sql, FileKind, Manifest, SnapshotError, Snapshots, StoreMethod};
use crate::os::fsutil::{Dir, Kind};
use crate::server::serverconfig::{ServerConfig, SqlConn, StoreKind};
use crate::server::version::Version;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// What becomes of the data a restore replaces.
#[derive(Debug, Clone)]
pub enum Displaced {
    /// Kept as a new snapshot: `origin` says what it is (for `snapshot list` and the report),
    /// `version` which server ran on it.
    Keep { origin: String, version: Version },
    /// Removed where it is exactly what snapshot `covered_by` (taken with the server stopped
    /// since) recorded; kept as under `Keep` otherwise.
    Discard {
        covered_by: String,
        origin: String,
        version: Version,
    },
}

/// What a restore did with the data it replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot that now holds the displaced data.
    pub kept: Option<String>,
    /// Displaced data that could not be moved into the snapshot root (another file system):
    /// left next to the store, under these names.
    pub left_in_place: Vec<PathBuf>,
}

/// The snapshot being filled with displaced data: built in `.displaced-for-<id>` so that an
/// interrupted restore's leftovers are never mistaken for an unfinished `create` (whose
/// leftovers are deleted) and are kept when the restore runs again.
struct Keeper<'a> {
    snaps: &'a Snapshots,
    root: Dir,
    name: String,
    dir: Option<Dir>,
    stores: Vec<StoreSnapshot>,
    left_in_place: Vec<PathBuf>,
}

impl<'a> Keeper<'a> {
    fn dir(&mut self) -> Result<&Dir, SnapshotError> {
        if self.dir.is_none() {
            let d = match self.root.open_dir(&self.name) {
                Ok(d) => d,
                Err(_) => self.root.create_dir(&self.name, 0o700)?,
            };
            self.dir = Some(d);
        }
        self.dir
            .as_ref()
            .ok_or_else(|| SnapshotError::Other("no directory for the displaced data".into()))
    }

    /// A free entry name for store `id` in the keep directory.
    fn slot(&mut self, id: &str) -> Result<String, SnapshotError> {
        let d = self.dir()?;
        let mut name = id.to_string();
        let mut n = 1;
        while d.stat(&name)?.is_some() {
            n += 1;
            name = format!("{id}.{n}");
        }
        Ok(name)
    }

    /// Moves the displaced tree or file `name` of `from` in as store `snap`. On another file
    /// system it stays next to the store (listed in the report): a directory under its
    /// displaced name already, a file renamed to `aside` first (its live name is about to be
    /// taken by the restored file).
    fn take(
        &mut self,
        from: &Dir,
        name: &OsStr,
        snap: &StoreSnapshot,
        kind: Kind,
        aside: &OsStr,
    ) -> Result<(), SnapshotError> {
        let slot = match kind {
            Kind::Dir => self.slot(&snap.id)?,
            _ => {
                // SQLite: the files of one store go into one directory.
                let d = self.dir()?;
                if d.stat(&snap.id)?.is_none() {
                    d.create_dir(&snap.id, 0o700)?;
                }
                snap.id.clone()
            }
        };
        let moved = {
            let d = self.dir()?;
            let (target_dir, target_name) = match kind {
                Kind::Dir => (d.try_clone()?, OsString::from(&slot)),
                _ => (d.open_dir(&slot)?, name.to_owned()),
            };
            match from.rename_noreplace(name, &target_dir, &target_name) {
                Ok(()) => {
                    // Power loss must not drop the moved entry from the keep directory (nor that
                    // directory from the root) while the live name is reused by the restore.
                    self.settle(&target_dir)?;
                    from.fsync()?;
                    true
                }
                // Another file system than the snapshots (a data volume of its own): copied,
                // then removed from the store, where it must not stay (the server would find it
                // inside its data directory).
                Err(e) if e.source.raw_os_error() == Some(libc::EXDEV) => {
                    match copy_across(from, name, &target_dir, &target_name, kind) {
                        Ok(()) => {
                            // Power loss after the delete must find the copy on disk: its data
                            // and directories are flushed before the source goes.
                            target_dir.syncfs()?;
                            from.remove_tree(name)?;
                            // ... and must not bring the deleted source back into the store.
                            from.fsync()?;
                            true
                        }
                        Err(e) => {
                            let _ = target_dir.remove_tree(&target_name);
                            tracing::warn!(
                                "could not copy the displaced data into the snapshots: {e}"
                            );
                            false
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        if !moved {
            if kind != Kind::Dir {
                from.rename_noreplace(name, from, aside)?;
                // The live name is taken next by the restored file: power loss must not undo
                // this rename while that one survives (the displaced file would be lost).
                from.fsync()?;
                self.left_in_place.push(from.path().join(aside));
            } else {
                self.left_in_place.push(from.path().join(name));
            }
            return Ok(());
        }
        if !self.stores.iter().any(|s| s.id == slot) {
            self.stores.push(StoreSnapshot {
                id: slot,
                files: Vec::new(),
                hashed: false,
                covered_by: None,
                source_parent: None,
                source_identity: None,
                ..snap.clone()
            });
        }
        Ok(())
    }

    /// Makes the new entries of `slot` (the keep directory or a directory in it) durable, with
    /// the keep directory's own entries and its entry in the snapshot root: what was put there
    /// must survive a power loss before the live data it came from is replaced.
    fn settle(&mut self, slot: &Dir) -> Result<(), SnapshotError> {
        slot.fsync()?;
        let keep = self.dir()?;
        if keep.meta()?.id != slot.meta()?.id {
            keep.fsync()?;
        }
        self.root.fsync()?;
        Ok(())
    }

    /// Turns what was moved in into a snapshot (its manifest lists the files; hashing comes
    /// later, `snapshot verify` says so). None when nothing was displaced.
    fn finish(
        mut self,
        origin: &str,
        version: &Version,
        from: &Manifest,
    ) -> Result<Option<String>, SnapshotError> {
        let Some(dir) = self.dir.take() else {
            return Ok(None);
        };
        for s in &mut self.stores {
            let d = dir.open_dir(&s.id)?;
            s.files = match s.method {
                StoreMethod::PgClone => Vec::new(),
                StoreMethod::PgDump | StoreMethod::MysqlDump | StoreMethod::LogicalExport => {
                    tool_files(&d)?
                }
                // The files of a SQLite store sit directly in its directory.
                StoreMethod::SqliteFiles => fsops::list_tree(&d)?
                    .into_iter()
                    .filter(|e| e.path != ".")
                    .collect(),
                _ => fsops::list_tree(&d)?,
            };
        }
        if self.stores.is_empty() {
            self.root.remove_tree(&self.name)?;
            return Ok(None);
        }
        let config_copy = self.copy_config_of(from, &dir);
        let (ms, stamp, created_at) = now();
        let id = self.snaps.free_id(&stamp, &version.to_string());
        let manifest = Manifest {
            id: id.clone(),
            format: 1,
            seq: self.snaps.next_seq()?,
            created_at,
            created_unix_ms: ms,
            server_version: version.clone(),
            target_version: None,
            class: None,
            server_binary: from.server_binary.clone(),
            config_path: from.config_path.clone(),
            config_format: from.config_format,
            stores: std::mem::take(&mut self.stores),
            create_seconds: 0.0,
            hashed_at: None,
            warnings: Vec::new(),
            config_copy,
            // The displaced data's connections are the snapshot's it replaced.
            config_reader: from.config_reader.clone(),
            origin: Some(origin.to_string()),
        };
        Snapshots::finish(&self.root, &dir, &self.name, &manifest)?;
        tracing::info!(snapshot = %id, "the data the restore replaced is kept as snapshot {id}");
        Ok(Some(id))
    }
}

impl Keeper<'_> {
    /// The kept data of a SQL store is reached through the same connection as the snapshot it
    /// replaced (a restore checked that it is the store's): the kept snapshot gets a copy of
    /// that snapshot's server config, so it can be restored and removed like any other.
    fn copy_config_of(&self, from: &Manifest, dir: &Dir) -> Option<String> {
        if !self.stores.iter().any(|s| s.method.needs_connection()) {
            return None;
        }
        let rel = from.config_copy.as_ref()?;
        let (src, name) = Dir::open_parent(&self.snaps.dir_of(&from.id).ok()?.join(rel)).ok()?;
        let (f, meta) = src.open_file(&name).ok()?;
        let to = dir.create_dir(super::CONFIG_DIR, 0o700).ok()?;
        fsops::copy_file_into(&f, &meta, &to, &name, None).ok()?;
        Some(rel.clone())
    }
}

/// The database a slot of displaced data names (`<name>\n<oid>\n<xid>`), as a restore wrote it.
fn read_kept_marker(slot: &Dir) -> Option<super::CloneDb> {
    let text = slot.read_file(super::CLONE_MARKER, 256).ok()?;
    let text = String::from_utf8(text).ok()?;
    let mut lines = text.lines();
    let name = lines.next()?.to_string();
    let oid = lines.next()?.parse().ok()?;
    let xid = lines.next().and_then(|l| l.parse().ok());
    Some(super::CloneDb { name, oid, xid })
}

fn kept_marker(db: &super::CloneDb) -> String {
    let xid = db.xid.map(|x| x.to_string()).unwrap_or_default();
    format!("{}\n{}\n{xid}\n", db.name, db.oid)
}

/// A [`StoreMethod::PgClone`] store: its id, connection and clone database.
type CloneStore = (String, SqlConn, super::CloneDb);

/// The connection and the clone database of a [`StoreMethod::PgClone`] store.
fn clone_of<'m>(
    m: &Manifest,
    snap: &'m StoreSnapshot,
    conns: &'m [(String, SqlConn)],
) -> Result<(&'m SqlConn, &'m super::CloneDb), SnapshotError> {
    let conn = conns.iter().find(|(s, _)| s == &snap.id).map(|(_, c)| c);
    match (conn, snap.clone_db.as_ref()) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => Err(SnapshotError::StoreMismatch {
            id: m.id.clone(),
            store: snap.id.clone(),
        }),
    }
}

impl Snapshots {
    /// The [`StoreMethod::PgClone`] stores of `m`: (store, its connection, its clone database).
    fn clone_stores(&self, m: &Manifest) -> Result<Vec<CloneStore>, SnapshotError> {
        if !m.stores.iter().any(|s| s.method == StoreMethod::PgClone) {
            return Ok(Vec::new());
        }
        let conns = self.sql_conns(m)?;
        let mut out = Vec::new();
        for snap in m.stores.iter().filter(|s| s.method == StoreMethod::PgClone) {
            let (conn, clone) = clone_of(m, snap, &conns)?;
            out.push((snap.id.clone(), conn.clone(), clone.clone()));
        }
        Ok(out)
    }

    /// The clone databases of `m` that are gone or not the ones it made (`BadDump`), or not
    /// proven unchanged (`CloneChanged`), as (store, database, why).
    pub(super) fn bad_clones(
        &self,
        m: &Manifest,
    ) -> Result<Vec<(String, String, SnapshotError)>, SnapshotError> {
        let run_as = super::tool_identity(&m.config_path, None);
        let mut out = Vec::new();
        for (store, conn, clone) in self.clone_stores(m)? {
            match pgclone::check(&store, &conn, run_as, &clone) {
                Ok(()) => {}
                Err(e @ (SnapshotError::BadDump { .. } | SnapshotError::CloneChanged { .. })) => {
                    out.push((store, clone.name, e))
                }
                // Not an answer about the clone (PostgreSQL unreachable, a wrong password).
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Drops the clone databases snapshot `id` holds (before its directory goes). A database
    /// that cannot be dropped now keeps the snapshot: removing its manifest would leave the
    /// database behind unnamed.
    pub(super) fn drop_clones(&self, id: &str) -> Result<(), SnapshotError> {
        let Ok(m) = self.get(id) else {
            return Ok(());
        };
        let run_as = super::tool_identity(&m.config_path, None);
        for (store, conn, clone) in self.clone_stores(&m)? {
            // Only the database the snapshot made: one made under its name since is not ours.
            if pgclone::oid_of(&store, &conn, run_as, &clone.name)? == Some(clone.oid) {
                pgclone::drop_db(&store, &conn, run_as, &clone.name)?;
            }
        }
        Ok(())
    }
}

/// Copies the entry `name` of `from` (a directory tree or a file) to `to/to_name`.
fn copy_across(
    from: &Dir,
    name: &OsStr,
    to: &Dir,
    to_name: &OsStr,
    kind: Kind,
) -> Result<(), SnapshotError> {
    if kind == Kind::Dir {
        let src = from.open_dir(name)?;
        let how = fsops::TreeCopy {
            link: &|_| false,
            owner: None,
            hash_links: None,
        };
        let mut warnings = Vec::new();
        fsops::copy_tree(&src, to, to_name, &how, &mut warnings)?;
    } else {
        let (f, m) = from.open_file(name)?;
        fsops::copy_file_into(&f, &m, to, to_name, None)?;
    }
    Ok(())
}

/// Where displaced data of a restore of snapshot `id` is collected.
fn keep_dir_name(id: &str) -> String {
    format!(".displaced-for-{id}")
}

impl Snapshots {
    /// Cheap completeness check before a restore: every file is there with its size.
    fn check_complete(&self, m: &Manifest) -> Result<(), SnapshotError> {
        let dir = self.dir_of(&m.id)?;
        let mut problems = Vec::new();
        for s in &m.stores {
            for f in &s.files {
                let p = dir.join(&s.id).join(&f.path);
                match (std::fs::symlink_metadata(&p), f.kind) {
                    (Ok(md), FileKind::File) if md.is_file() && md.len() == f.size => {}
                    (Ok(md), FileKind::File) if md.is_file() => problems.push(format!(
                        "{}/{} has {} bytes instead of {}",
                        s.id,
                        f.path,
                        md.len(),
                        f.size
                    )),
                    (Ok(md), FileKind::Dir) if md.is_dir() => {}
                    (Ok(md), FileKind::Symlink) if md.file_type().is_symlink() => {}
                    _ => problems.push(format!("{}/{} is missing", s.id, f.path)),
                }
                if problems.len() > 10 {
                    break;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SnapshotError::Incomplete {
                id: m.id.clone(),
                problems,
            })
        }
    }

    /// Before a restore relies on them: the files of the snapshot that share their inode with
    /// a name outside it (hard links: `How::HardLink`, or linked back into the data by an
    /// earlier restore) have the sha256 the manifest recorded. The service user can write such
    /// an inode through its live name, keeping its size, and a size check alone would restore
    /// whatever it wrote. Private copies (one link, root-only) are not re-read: nobody else can
    /// reach them. A file with no recorded hash (displaced data not hashed yet) is checked by
    /// size only (`check_complete`).
    fn check_linked(&self, m: &Manifest) -> Result<(), SnapshotError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.dir_of(&m.id)?;
        let mut jobs = Vec::new();
        let mut want = Vec::new();
        for s in &m.stores {
            for f in s.files.iter().filter(|f| f.kind == FileKind::File) {
                let path = dir.join(&s.id).join(&f.path);
                let shared = f.how == Some(super::How::HardLink)
                    || std::fs::symlink_metadata(&path).is_ok_and(|md| md.nlink() > 1);
                match (&f.sha256, shared) {
                    (Some(h), true) => {
                        jobs.push((path, f.size));
                        want.push((h.as_str(), f.size));
                    }
                    (None, true) if f.how == Some(super::How::HardLink) => {
                        return Err(SnapshotError::Altered {
                            id: m.id.clone(),
                            path,
                            detail: "the manifest has no sha256 of it to check it against".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
        for (((path, _), (hash, size)), got) in
            jobs.iter().zip(want).zip(super::hash::hash_files(&jobs))
        {
            let (got, bytes) = got.map_err(|e| fsops::io_err("hash", path, e))?;
            if got != hash || bytes != size {
                return Err(SnapshotError::Altered {
                    id: m.id.clone(),
                    path: path.clone(),
                    detail: format!(
                        "sha256 {got} of {bytes} bytes, the manifest says {hash} of {size}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The SQL connections of the snapshot's stores, from its own copy of the server config.
    fn sql_conns(&self, m: &Manifest) -> Result<Vec<(String, SqlConn)>, SnapshotError> {
        let needs = m.stores.iter().any(|s| s.method.needs_connection());
        if !needs {
            return Ok(Vec::new());
        }
        let copy = m.config_copy.as_ref().ok_or_else(|| SnapshotError::Other(format!(
            "snapshot {} keeps no copy of the server config, which the database connection of its SQL store is taken from; restore it with pg_restore / mariadb by hand",
            m.id
        )))?;
        let nobody = crate::os::readas::Reader::nobody();
        let reader = m.config_reader.as_ref().unwrap_or(&nobody);
        let cfg = ServerConfig::load_copy(&self.dir_of(&m.id)?.join(copy), reader, &self.env)
            .map_err(|e| SnapshotError::Other(e.to_string()))?;
        let mut out = Vec::new();
        for s in &m.stores {
            let found = cfg.stores.iter().find(|c| c.id == s.id);
            let conn = match (s.method, found.map(|c| &c.kind)) {
                (StoreMethod::PgDump | StoreMethod::PgClone, Some(StoreKind::PostgreSql(c))) => c,
                (StoreMethod::MysqlDump, Some(StoreKind::MySql(c))) => c,
                (method, _) if method.needs_connection() => {
                    return Err(SnapshotError::StoreMismatch {
                        id: m.id.clone(),
                        store: s.id.clone(),
                    })
                }
                _ => continue,
            };
            let scheme = if s.method != StoreMethod::MysqlDump {
                "postgresql"
            } else {
                "mysql"
            };
            if sql_source(scheme, conn) != s.source {
                return Err(SnapshotError::StoreMismatch {
                    id: m.id.clone(),
                    store: s.id.clone(),
                });
            }
            out.push((s.id.clone(), self.conn_for(conn)));
        }
        Ok(out)
    }

    /// Puts the server config snapshot `id` kept back at the path it was copied from, with its
    /// owner and mode, when nothing is there now (a server started without its config is not
    /// the version of before: 0.16 comes up in bootstrap mode, 0.15 exits). An existing file,
    /// even a changed one, is the admin's or the server's and is left alone. Ok(false): nothing
    /// to do.
    pub fn put_back_config(&self, id: &str) -> Result<bool, SnapshotError> {
        let m = self.get(id)?;
        let Some(copy) = m.config_copy.as_ref() else {
            return Ok(false);
        };
        let (dest, name) = Dir::open_parent(&m.config_path)?;
        if dest.stat(&name)?.is_some() {
            return Ok(false);
        }
        let (from, from_name) = Dir::open_parent(&self.dir_of(id)?.join(copy))?;
        let (_, meta) = from.open_file(&from_name)?;
        let text = from.read_file(&from_name, 16 << 20)?;
        dest.write_atomic(&name, &text, meta.mode & 0o7777, Some((meta.uid, meta.gid)))?;
        Ok(true)
    }

    /// Server stopped. Puts every store of snapshot `id` back where it was taken from. `current`
    /// (the config the server will run with) only adds a check: each of its stores must be in
    /// the snapshot, since restoring half of the data would mix versions.
    pub fn restore(
        &self,
        id: &str,
        current: Option<&ServerConfig>,
        displaced: &Displaced,
    ) -> Result<Restored, SnapshotError> {
        let m = self.get(id)?;
        let root = fsops::open_private_dir(&self.root)?;
        self.check_complete(&m)?;
        self.check_linked(&m)?;
        if let Some(cfg) = current {
            for s in &cfg.stores {
                if !m.stores.iter().any(|x| x.id == s.id) {
                    return Err(SnapshotError::StoreMismatch {
                        id: id.to_string(),
                        store: s.id.clone(),
                    });
                }
            }
        }
        let conns = self.sql_conns(&m)?;
        // Dumps, clones and the tools' TLS are checked before anything is changed (MySQL DDL is
        // not transactional, and a store that fails half way leaves the others restored).
        let src_root = root.open_dir(id)?;
        for (store, conn) in &conns {
            let postgres = m
                .stores
                .iter()
                .any(|s| &s.id == store && s.method != StoreMethod::MysqlDump);
            sql::check_trust(
                store,
                conn,
                super::tool_identity(&m.config_path, None),
                postgres,
            )?;
        }
        for snap in &m.stores {
            match snap.method {
                StoreMethod::PgDump => {
                    let (f, _) = src_root.open_dir(&snap.id)?.open_file("dump.pgcustom")?;
                    sql::check_pg_magic(&snap.id, &f)?;
                }
                StoreMethod::MysqlDump => {
                    let (f, _) = src_root.open_dir(&snap.id)?.open_file("dump.sql")?;
                    sql::check_mysql_trailer(&snap.id, &f)?;
                }
                StoreMethod::PgClone => {
                    let (conn, clone) = clone_of(&m, snap, &conns)?;
                    let run_as = super::tool_identity(&m.config_path, None);
                    pgclone::check(&snap.id, conn, run_as, clone)?;
                }
                _ => {}
            }
        }
        let (origin, version, covered_by) = match displaced {
            Displaced::Keep { origin, version } => (origin, version, None),
            Displaced::Discard {
                covered_by,
                origin,
                version,
            } => (origin, version, Some(self.get(covered_by)?)),
        };
        // An interrupted restore's displaced data comes first, as a snapshot of its own.
        let mut leftover = Keeper {
            snaps: self,
            root: root.try_clone()?,
            name: keep_dir_name(id),
            dir: root.open_dir(keep_dir_name(id)).ok(),
            stores: Vec::new(),
            left_in_place: Vec::new(),
        };
        if let Some(d) = &leftover.dir {
            for n in d.entries()? {
                let n = n.to_string_lossy().to_string();
                if let Some(s) = m
                    .stores
                    .iter()
                    .find(|s| n == s.id || n.starts_with(&format!("{}.", s.id)))
                {
                    let mut kept = StoreSnapshot {
                        id: n.clone(),
                        ..s.clone()
                    };
                    if s.method == StoreMethod::PgClone {
                        // Never the snapshot's own clone: the one its slot names, or none.
                        kept.clone_db = d.open_dir(&n).ok().and_then(|sd| read_kept_marker(&sd));
                        if kept.clone_db.is_none() {
                            continue;
                        }
                    }
                    leftover.stores.push(kept);
                }
            }
        }
        let earlier =
            leftover.finish(&format!("{origin} (an interrupted restore)"), version, &m)?;
        let mut keep = Keeper {
            snaps: self,
            root: root.try_clone()?,
            name: keep_dir_name(id),
            dir: None,
            stores: Vec::new(),
            left_in_place: Vec::new(),
        };
        let mut import: Option<&StoreSnapshot> = None;
        let marked = std::cell::Cell::new(false);
        for snap in &m.stores {
            let proven = |live: Option<crate::os::fsutil::Identity>| {
                let same = match (&covered_by, live) {
                    (Some(c), Some(live)) => c.stores.iter().any(|s| {
                        s.id == snap.id
                            && s.source == snap.source
                            && s.source_identity == Some(live)
                    }),
                    _ => false,
                };
                if let (true, Some(c)) = (same, &covered_by) {
                    if !marked.get() {
                        // The displaced tree is about to be deleted as a duplicate of
                        // `covered_by`, which from then on is the only copy of it (mail the
                        // newer version took): retention must keep it like data set aside.
                        self.mark_set_aside(&c.id, origin)?;
                        marked.set(true);
                    }
                }
                Ok(same)
            };
            match snap.method {
                StoreMethod::Covered => {}
                StoreMethod::RocksDbFiles | StoreMethod::FsFiles => {
                    let src = src_root.open_dir(&snap.id)?;
                    let rocks = snap.method == StoreMethod::RocksDbFiles;
                    restore_dir(&m.id, snap, &src, rocks, &mut keep, &proven)?;
                }
                StoreMethod::SqliteFiles => {
                    let src = src_root.open_dir(&snap.id)?;
                    restore_sqlite(&m.id, snap, &src, &mut keep, &proven)?;
                }
                StoreMethod::PgDump | StoreMethod::MysqlDump => {
                    let conn = conns
                        .iter()
                        .find(|(s, _)| s == &snap.id)
                        .map(|(_, c)| c)
                        .ok_or_else(|| SnapshotError::StoreMismatch {
                            id: id.to_string(),
                            store: snap.id.clone(),
                        })?;
                    let pg = snap.method == StoreMethod::PgDump;
                    let run_as = super::tool_identity(&m.config_path, None);
                    // The database as it is now is dumped first: nothing the server wrote since
                    // the snapshot is lost.
                    let slot = keep.slot(&snap.id)?;
                    let kd = keep.dir()?.create_dir(&slot, 0o700)?;
                    let file = if pg { "dump.pgcustom" } else { "dump.sql" };
                    let mut out = kd.create_file(file, 0o600)?;
                    let dumped = if pg {
                        sql::pg_dump(&snap.id, conn, run_as, &mut out)
                    } else {
                        sql::mysql_dump(&snap.id, conn, run_as, &mut out)
                    }
                    // The restore below replaces the live database: power loss after it must
                    // still find this dump (the only copy of what was written since) on disk.
                    .and_then(|()| Ok(crate::os::fsutil::sync_file(&out, &kd.path().join(file))?));
                    if let Err(e) = dumped {
                        // A partial dump keeps nothing and only holds the space that ran out.
                        let _ = kd.remove_file(file);
                        return Err(keep_failed(e, &snap.id, kd.path()));
                    }
                    keep.settle(&kd)?;
                    keep.stores.push(StoreSnapshot {
                        id: slot,
                        ..snap.clone()
                    });
                    let (dump, _) = src_root.open_dir(&snap.id)?.open_file(file)?;
                    if pg {
                        sql::pg_restore(&snap.id, conn, run_as, dump)?;
                    } else {
                        sql::mysql_restore(&snap.id, conn, run_as, dump)?;
                    }
                }
                StoreMethod::PgClone => {
                    let (conn, clone) = clone_of(&m, snap, &conns)?;
                    let run_as = super::tool_identity(&m.config_path, None);
                    // The database as it is now is kept (renamed, not copied): nothing the
                    // server wrote since the snapshot is lost.
                    for replaced in pgclone::restore(&snap.id, conn, run_as, &m.id, clone)? {
                        let slot = keep.slot(&snap.id)?;
                        let sd = keep.dir()?.create_dir(&slot, 0o700)?;
                        let marker = kept_marker(&replaced);
                        sd.write_atomic(super::CLONE_MARKER, marker.as_bytes(), 0o600, None)?;
                        // Power loss must not lose the slot naming the kept database (it would
                        // be left behind, unnamed by any snapshot).
                        keep.settle(&sd)?;
                        keep.stores.push(StoreSnapshot {
                            id: slot,
                            clone_db: Some(replaced),
                            files: Vec::new(),
                            hashed: false,
                            ..snap.clone()
                        });
                    }
                }
                StoreMethod::LogicalExport => import = Some(snap),
            }
        }
        // The import runs last, once the file-based stores it may write into are back.
        if let Some(snap) = import {
            let program = crate::os::child::Program::open(&m.server_binary)?;
            let run_as = super::tool_identity(&m.config_path, Some(&program));
            let slot = keep.slot(&snap.id)?;
            {
                let kd = keep.dir()?;
                sql::server_export_import(
                    &snap.id,
                    &program,
                    &m.config_path,
                    sql::Direction::Export,
                    (kd, OsStr::new(&slot)),
                    None,
                    run_as,
                )?;
                // The import below replaces the live data: power loss after it must still
                // find this export (what was written since the snapshot) on disk.
                kd.open_dir(&slot)?.syncfs()?;
            }
            keep.stores.push(StoreSnapshot {
                id: slot,
                ..snap.clone()
            });
            sql::server_export_import(
                &snap.id,
                &program,
                &m.config_path,
                sql::Direction::Import,
                (&src_root, OsStr::new(&snap.id)),
                None,
                run_as,
            )?;
        }
        let left_in_place = std::mem::take(&mut keep.left_in_place);
        let kept = keep.finish(origin, version, &m)?;
        tracing::info!(snapshot = %id, "snapshot restored");
        Ok(Restored {
            kept: kept.or(earlier),
            left_in_place,
        })
    }
}

/// The directory holding a recorded store path, checked to be the one the snapshot was taken
/// from.
fn open_recorded_parent(
    snap: &StoreSnapshot,
    path: &Path,
) -> Result<(Dir, OsString), SnapshotError> {
    let (parent, name) = Dir::open_parent(path).map_err(|e| SnapshotError::BadStorePath {
        store: snap.id.clone(),
        message: e.to_string(),
    })?;
    if let Some(want) = snap.source_parent {
        let got = parent.meta()?.id;
        // Only root can mount, so a new device number is a remount (overlayfs and btrfs give
        // one per mount, e.g. after the reboot that boot-time recovery runs in), never the
        // service user's doing; within a device the inode must be the recorded one.
        if got.dev == want.dev && got.ino != want.ino {
            return Err(SnapshotError::Replaced {
                store: snap.id.clone(),
                path: parent.path().to_owned(),
            });
        }
    }
    Ok((parent, name))
}

/// A directory store: builds `.<name>.restore-<id>` from the snapshot next to the live
/// directory, makes it durable, swaps it in (RENAME_EXCHANGE), and hands the displaced tree to
/// `keep`. A failure before the swap leaves the live data untouched.
fn restore_dir(
    id: &str,
    snap: &StoreSnapshot,
    src: &Dir,
    is_rocks: bool,
    keep: &mut Keeper,
    proven: &dyn Fn(Option<crate::os::fsutil::Identity>) -> Result<bool, SnapshotError>,
) -> Result<(), SnapshotError> {
    let live_path = trim_slash(Path::new(&snap.source));
    let (parent, name) = open_recorded_parent(snap, &live_path)?;
    let live = parent.stat(&name)?;
    if let Some(l) = &live {
        if l.kind != Kind::Dir {
            return Err(SnapshotError::BadStorePath {
                store: snap.id.clone(),
                message: format!(
                    "{} is not a directory now (a symlink is not followed); nothing was changed",
                    live_path.display()
                ),
            });
        }
    }
    let live_id = live.map(|l| l.id);
    // A data directory that is a mount point (its own volume) cannot be renamed: its content is
    // swapped inside it instead.
    let mount_point =
        live.is_some_and(|l| l.id.dev != parent.meta().map(|m| m.id.dev).unwrap_or(l.id.dev));
    let (work, fresh, displaced) = if mount_point {
        (
            parent.open_dir(&name)?,
            OsString::from(format!(".stalwart-restore-{id}")),
            OsString::from(format!(".stalwart-displaced-{id}")),
        )
    } else {
        let n = name.to_string_lossy();
        (
            parent.try_clone()?,
            OsString::from(format!(".{n}.restore-{id}")),
            OsString::from(format!(".{n}.displaced-{id}")),
        )
    };
    // Our own unfinished copy goes; displaced data of an interrupted restore is kept.
    work.remove_tree(&fresh)?;
    if work.stat(&displaced)?.is_some() {
        keep.take(&work, &displaced, snap, Kind::Dir, &displaced)?;
    }
    // Linking back from the snapshot is safe for the same reason linking into it was: the
    // files are immutable, so the snapshot stays valid while the server runs on them.
    let link = move |rel: &str| !is_rocks || rocksdb_immutable(rel);
    let how = fsops::TreeCopy {
        link: &link,
        owner: None,
        hash_links: None,
    };
    let mut warnings = Vec::new();
    let built = fsops::copy_tree(src, &work, &fresh, &how, &mut warnings)
        .and_then(|(_, d)| Ok(d.syncfs()?));
    if let Err(e) = built {
        let _ = work.remove_tree(&fresh);
        if let SnapshotError::Io { source, .. } = &e {
            if fsops::is_no_space(source) {
                return Err(SnapshotError::RestoreNoSpace {
                    store: snap.id.clone(),
                    path: live_path,
                });
            }
        }
        return Err(e);
    }
    if mount_point {
        fsops::swap_contents(&work, &fresh, &displaced)?;
    } else {
        fsops::swap_in(&work, &fresh, &name, &displaced)?;
    }
    if work.stat(&displaced)?.is_some() {
        if proven(live_id)? {
            work.remove_tree(&displaced)?;
        } else {
            keep.take(&work, &displaced, snap, Kind::Dir, &displaced)?;
        }
    }
    Ok(())
}

/// SQLite: every file of the snapshot is staged as `.<file>.restore-<id>` next to the live one;
/// the live db and its companions (-wal/-shm/-journal) are moved away to `keep` (a stale WAL must
/// never meet the restored db), then the staged files are renamed in, the db last.
fn restore_sqlite(
    id: &str,
    snap: &StoreSnapshot,
    src: &Dir,
    keep: &mut Keeper,
    proven: &dyn Fn(Option<crate::os::fsutil::Identity>) -> Result<bool, SnapshotError>,
) -> Result<(), SnapshotError> {
    let live_db = PathBuf::from(&snap.source);
    let (dir, db_name) = open_recorded_parent(snap, &live_db)?;
    let live_names = sqlite_names(&db_name);
    let stage_of = |n: &OsStr| OsString::from(format!(".{}.restore-{id}", n.to_string_lossy()));
    let mut staged: Vec<(OsString, OsString)> = Vec::new();
    let result = (|| -> Result<(), SnapshotError> {
        for f in snap.files.iter().filter(|f| f.kind == FileKind::File) {
            let target = OsString::from(&f.path);
            if !live_names.contains(&target) {
                continue;
            }
            let stage = stage_of(&target);
            dir.remove_file(&stage)?;
            let (from, meta) = src.open_file(&f.path)?;
            fsops::copy_file_into(&from, &meta, &dir, &stage, None)?;
            staged.push((stage, target));
        }
        dir.syncfs()?;
        Ok(())
    })();
    if let Err(e) = result {
        for (stage, _) in &staged {
            let _ = dir.remove_file(stage);
        }
        if let SnapshotError::Io { source, .. } = &e {
            if fsops::is_no_space(source) {
                return Err(SnapshotError::RestoreNoSpace {
                    store: snap.id.clone(),
                    path: live_db,
                });
            }
        }
        return Err(e);
    }
    let db_identity = dir.stat(&db_name)?.map(|m| m.id);
    let discard = proven(db_identity)?;
    // Companions first, the db file last.
    for n in live_names.iter().skip(1).chain(live_names.first()) {
        match dir.stat(n)? {
            Some(m) if m.kind == Kind::File => {
                if discard {
                    dir.remove_file(n)?;
                } else {
                    let aside = format!(".{}.displaced-{id}", n.to_string_lossy());
                    keep.take(&dir, n, snap, Kind::File, OsStr::new(&aside))?;
                }
            }
            Some(_) => {
                return Err(SnapshotError::BadStorePath {
                    store: snap.id.clone(),
                    message: format!(
                        "{} is not a regular file; nothing more was changed",
                        dir.path().join(n).display()
                    ),
                })
            }
            None => {}
        }
    }
    staged.sort_by_key(|(_, t)| *t == db_name);
    for (stage, target) in &staged {
        dir.rename(stage, &dir, target)?;
    }
    dir.fsync()?;
    Ok(())
}

/// A dump of the live data that a full file system cut short is named as such (the tool's own
/// words would send the admin to check the database's credentials).
fn keep_failed(e: SnapshotError, store: &str, dir: &Path) -> SnapshotError {
    if e.is_no_space() {
        SnapshotError::KeepNoSpace {
            store: store.to_string(),
            path: dir.to_owned(),
        }
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FileEntry, How, MANIFEST};
    use super::*;
    use sha2::Digest;

    /// A snapshot `id` of a RocksDB store at `data` holding one table hard-linked from the live
    /// directory, with its sha256 recorded as linked.
    fn linked_snapshot(t: &Path, id: &str) -> (Snapshots, PathBuf) {
        let data = t.join("data");
        std::fs::create_dir(&data).unwrap();
        let live = data.join("000010.sst");
        std::fs::write(&live, b"table as linked").unwrap();
        let snaps = Snapshots::new(&t.join("snapshots"));
        fsops::ensure_private_dir(&snaps.root).unwrap();
        let store = snaps.root.join(id).join("r");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::hard_link(&live, store.join("000010.sst")).unwrap();
        let md = std::fs::metadata(&live).unwrap();
        let file = |path: &str, kind, size, how, sha256| FileEntry {
            path: path.into(),
            kind,
            size,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            link_target: None,
            how,
            sha256,
        };
        let m = Manifest {
            id: id.into(),
            format: 1,
            seq: 1,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_unix_ms: 0,
            server_version: "0.15.5".parse().unwrap(),
            target_version: None,
            class: None,
            server_binary: "/nonexistent/stalwart".into(),
            config_path: t.join("config.toml"),
            config_format: crate::server::serverconfig::ConfigFormat::Toml,
            stores: vec![StoreSnapshot {
                id: "r".into(),
                kind: "rocksdb".into(),
                roles: vec!["data".into()],
                method: StoreMethod::RocksDbFiles,
                logical_export: false,
                source: data.display().to_string(),
                source_parent: None,
                source_identity: None,
                covered_by: None,
                files: vec![
                    file(".", FileKind::Dir, 0, None, None),
                    file(
                        "000010.sst",
                        FileKind::File,
                        md.len(),
                        Some(How::HardLink),
                        Some(crate::os::fsutil::hex(&sha2::Sha256::digest(
                            b"table as linked",
                        ))),
                    ),
                ],
                hashed: true,
                clone_db: None,
            }],
            create_seconds: 0.0,
            hashed_at: None,
            warnings: vec![],
            config_copy: None,
            config_reader: None,
            origin: None,
        };
        std::fs::write(
            snaps.root.join(id).join(MANIFEST),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        (snaps, live)
    }

    #[test]
    fn a_linked_file_changed_through_its_live_name_is_refused_by_hash_not_size() {
        let t = tempfile::tempdir().unwrap();
        let id = "20260101T000000Z-0.15.5";
        let (snaps, live) = linked_snapshot(t.path(), id);
        let m = snaps.get(id).unwrap();
        snaps.check_linked(&m).unwrap();
        // The server's user rewrites the shared inode in place, size unchanged.
        std::fs::write(&live, b"TABLE AS ALTERD").unwrap();
        assert_eq!(m.stores[0].files[1].size, 15);
        snaps.check_complete(&m).unwrap();
        let keep = Displaced::Keep {
            origin: "test".into(),
            version: "0.16.0".parse().unwrap(),
        };
        let e = snaps.restore(id, None, &keep).unwrap_err();
        let want = snaps.root.join(id).join("r/000010.sst");
        assert!(
            matches!(&e, SnapshotError::Altered { id: i, path, .. } if i == id && path == &want),
            "{e:?}"
        );
        assert!(e.to_string().contains(&want.display().to_string()), "{e}");
        // Nothing was changed: no restored copy next to the data, the live file as it was.
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(std::fs::read(&live).unwrap(), b"TABLE AS ALTERD");
    }

    #[test]
    fn the_displaced_tree_is_durable_in_the_keep_directory_before_the_restore_goes_on() {
        use crate::os::fsutil::trace;
        let t = tempfile::tempdir().unwrap();
        let id = "20260101T000000Z-0.15.5";
        let (snaps, live) = linked_snapshot(t.path(), id);
        let keep = Displaced::Keep {
            origin: "test".into(),
            version: "0.16.0".parse().unwrap(),
        };
        trace::start();
        let r = snaps.restore(id, None, &keep).unwrap();
        let log = trace::take();
        assert!(r.kept.is_some(), "{r:?}");
        assert_eq!(std::fs::read(&live).unwrap(), b"table as linked");
        let displaced = t.path().join(format!(".data.displaced-{id}"));
        let keep_dir = snaps.root.join(keep_dir_name(id));
        // The tree is moved into the keep directory (same file system) ...
        let moved = trace::position(&log, &format!("rename {}", displaced.display()));
        // ... and, right after, the keep directory, its entry in the root and the directory it
        // left are fsync'd, before anything else is changed.
        assert_eq!(
            log[moved + 1..moved + 4],
            [
                format!("fsync {}", keep_dir.display()),
                format!("fsync {}", snaps.root.display()),
                format!("fsync {}", t.path().display()),
            ],
            "{log:#?}"
        );
    }

    #[test]
    fn displaced_data_on_another_file_system_is_flushed_before_its_source_is_deleted() {
        use crate::os::fsutil::trace;
        // The data on tmpfs, the snapshots on the file system of the temp dir: a real EXDEV.
        let shm = Path::new("/dev/shm");
        let t = tempfile::tempdir().unwrap();
        let Some(shm_dev) = fsops::device_of(shm).filter(|_| shm.is_dir()) else {
            eprintln!("SKIPPED: no /dev/shm for a second file system");
            return;
        };
        if Some(shm_dev) == fsops::device_of(t.path()) {
            eprintln!("SKIPPED: /dev/shm is on the same file system as the temp dir");
            return;
        }
        let data = tempfile::tempdir_in(shm).unwrap();
        let id = "20260101T000000Z-0.15.5";
        let (snaps, _) = linked_snapshot(t.path(), id);
        let snap = snaps.get(id).unwrap().stores[0].clone();
        let from = Dir::open(data.path()).unwrap();
        let name = OsStr::new(".data.displaced-x");
        from.create_dir(name, 0o700)
            .unwrap()
            .write_atomic("000011.sst", b"mail written since", 0o600, None)
            .unwrap();
        let mut keeper = Keeper {
            snaps: &snaps,
            root: fsops::open_private_dir(&snaps.root).unwrap(),
            name: keep_dir_name(id),
            dir: None,
            stores: Vec::new(),
            left_in_place: Vec::new(),
        };
        trace::start();
        keeper.take(&from, name, &snap, Kind::Dir, name).unwrap();
        let log = trace::take();
        assert!(
            keeper.left_in_place.is_empty(),
            "{:?}",
            keeper.left_in_place
        );
        let copy = snaps.root.join(keep_dir_name(id)).join("r/000011.sst");
        assert_eq!(std::fs::read(copy).unwrap(), b"mail written since");
        assert!(!data.path().join(name).exists());
        let synced = trace::position(
            &log,
            &format!("syncfs {}", snaps.root.join(keep_dir_name(id)).display()),
        );
        let src = data.path().join(name);
        let deleted = trace::position(&log, &format!("remove {}", src.display()));
        let dir_synced = trace::position(&log, &format!("fsync {}", data.path().display()));
        assert!(synced < deleted && deleted < dir_synced, "{log:#?}");
    }

    #[test]
    fn a_linked_file_without_a_recorded_hash_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let id = "20260101T000000Z-0.15.5";
        let (snaps, _) = linked_snapshot(t.path(), id);
        let mut m = snaps.get(id).unwrap();
        m.stores[0].files[1].sha256 = None;
        let e = snaps.check_linked(&m).unwrap_err();
        assert!(matches!(e, SnapshotError::Altered { .. }), "{e:?}");
    }
}
