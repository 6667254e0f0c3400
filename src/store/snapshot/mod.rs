//! Snapshots of the server's data, per store.
//!
//! Why a snapshot at all: a binary that finds a higher schema than it knows panics ("Unknown
//! database schema version", facts), so rolling back a minor/major upgrade needs the old data.
//!
//! Layout: `<root>/<id>/manifest.json` and `<root>/<id>/<store id>/...`. A snapshot is built in
//! `<root>/.partial-<id>/` and renamed to `<root>/<id>` only once complete, so a crash or a full
//! disk never leaves something that looks like a usable snapshot.
//!
//! Methods (all with the server STOPPED, so every file is at rest):
//! - RocksDB: `*.sst` / `*.blob` files are immutable once written (RocksDB writes table and blob
//!   files once, then only ever deletes them; compaction writes new files) -> hard links on the
//!   same file system: the snapshot keeps the inode alive after compaction deletes the name.
//!   Everything else (MANIFEST-*, CURRENT, OPTIONS-*, *.log WAL, LOCK, IDENTITY, ...) is
//!   rewritten or appended in place -> a private copy (reflink, copy_file_range, plain copy).
//! - SQLite: the db file is written in place -> private copies of it and its -wal/-shm/-journal.
//! - fs blob store: blobs are write-once files named by content (see `FS_BLOBS_WRITE_ONCE`)
//!   -> hard links.
//! - PostgreSQL: a clone database in the store's server where its role may make one
//!   (`pgclone.rs`: a file copy inside PostgreSQL, no bytes through a client), else pg_dump.
//! - MySQL: mariadb-dump (`sql.rs`).
//! - anything else: the server's own `--export` (a logical export).

mod create;
mod fsops;
mod hash;
mod manifest;
mod methods;
mod pgclone;
mod plan;
mod precopy;
mod prehash;
mod restore;
mod sql;

use fs_err as fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use fsops::link_stays_inside;
pub use manifest::*;
pub use methods::rocksdb_immutable;
pub use prehash::PreHash;
pub use restore::{Displaced, Restored};

/// Why hard links are safe for the fs blob store: the stand-in server writes each blob as a
/// temp file, fsyncs and renames it to the sha256 of its content, and never modifies it again
/// (tests/standin/src/blob.rs). Upstream's fs store is not covered by the facts file: `hash` +
/// `verify` would reveal a blob rewritten in place.
pub const FS_BLOBS_WRITE_ONCE: &str = "fs blobs are write-once (tests/standin)";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Other(String),
    #[error(transparent)]
    StorePathNotAllowed(Box<StorePathRefusal>),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the file system holding {root} is full (while snapshotting store \"{store}\"); the \
         partial snapshot was removed and nothing was changed. Free space there \
         (`stalwart-upgrade snapshot prune`) and retry"
    )]
    NoSpace { root: PathBuf, store: String },
    #[error(
        "{path} is not a private directory (mode {mode:o}, owner uid {uid}, expected a \
         directory owned by uid {euid} with no group/other write access): snapshots there could \
         be replaced by anyone; run `chown root:root {path} && chmod 0700 {path}`"
    )]
    InsecureDir {
        path: PathBuf,
        mode: u32,
        uid: u32,
        euid: u32,
    },
    #[error("there is no snapshot {id} in {root} (see `stalwart-upgrade snapshot list`)")]
    NotFound { id: String, root: PathBuf },
    #[error("{id:?} is not a snapshot id (expected e.g. 20261128T120000Z-0.15.5)")]
    InvalidId { id: String },
    #[error(
        "the store id {id:?} in the server config cannot be used as a directory name; rename \
         the store in the config"
    )]
    UnsafeStoreId { id: String },
    #[error("the manifest {path} is unreadable: {message}; the snapshot cannot be used")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "store \"{store}\": {tool} could not {what}: {detail}. Check that the database is \
         reachable with the credentials in the server config"
    )]
    Tool {
        store: String,
        tool: String,
        what: String,
        detail: String,
    },
    #[error(
        "store \"{store}\": {tool} did not {what} within {secs} s, so it was stopped (its \
         process group killed) and nothing it wrote is used. If the database is that large or \
         that slow, raise `tool_secs` in the [timeouts] section of \
         /etc/stalwart-upgrade/config.toml (or of a drop-in in config.d/); otherwise check why \
         it hung (a lock held by another client, an unreachable database)"
    )]
    ToolTimeout {
        store: String,
        tool: String,
        what: String,
        secs: u64,
    },
    #[error(
        "store \"{store}\" needs {tool}, which is not installed: install the {package} package \
         and retry"
    )]
    ToolMissing {
        store: String,
        tool: String,
        package: String,
    },
    #[error(
        "snapshot {id} is incomplete ({}): refusing to restore from it; nothing was changed",
        problems.join("; ")
    )]
    Incomplete { id: String, problems: Vec<String> },
    #[error(
        "snapshot {id} has no store \"{store}\" that the server config uses now; restore \
         refused, nothing was changed"
    )]
    StoreMismatch { id: String, store: String },
    #[error(
        "not enough space next to {path} to build the restored copy of store \"{store}\"; the \
         live data was NOT changed. Free space on that file system and run the restore again"
    )]
    RestoreNoSpace { store: String, path: PathBuf },
    #[error(
        "the file system of {path} is full: the dump of store \"{store}\"'s live data, taken \
         before a restore replaces it, did not fit; the live data was NOT changed and the partial \
         dump was removed. Free space there, then run the restore again (for an upgrade's or a \
         rollback's undo: `stalwart-upgrade recover`)"
    )]
    KeepNoSpace { store: String, path: PathBuf },
    #[error(
        "store \"{store}\": the dump {path} is not complete ({message}); restore refused before \
         the database was touched. Use another snapshot (`stalwart-upgrade snapshot list`)"
    )]
    BadDump {
        store: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "store \"{store}\": the server config asks for TLS to the database, so the database \
         server's certificate is verified before the store's password is sent to it, but \
         {reason}. Set `database_ca_file` in the [snapshots] section of \
         /etc/stalwart-upgrade/config.toml (or of a drop-in in config.d/) to the CA certificate \
         (PEM) that signed the database server's certificate, readable by the server's user. \
         Nothing was changed"
    )]
    DatabaseCa { store: String, reason: String },
    #[error(
        "store \"{store}\": the database server did not prove its identity against {trusted} \
         ({detail}); the store's password was not sent to it. If its certificate is \
         right, set `database_ca_file` in the [snapshots] section of \
         /etc/stalwart-upgrade/config.toml to the CA certificate (PEM) that signed it; if it is \
         not, something else answers at that address"
    )]
    DatabaseUnverified {
        store: String,
        trusted: String,
        /// Where it answered, and what the tool said.
        detail: String,
    },
    #[error(
        "store \"{store}\": the snapshot's clone database {database} may have been changed since \
         the snapshot was taken ({reason}), so its data is not trusted and not restored. Restore \
         another snapshot (`stalwart-upgrade snapshot list`), or inspect the database and, if \
         you trust it, copy it back by hand (pg_dump / pg_restore)"
    )]
    CloneChanged {
        store: String,
        database: String,
        reason: String,
    },
    #[error("the server config has a store \"{store}\" with an unsafe path: {message}")]
    BadStorePath { store: String, message: String },
    #[error(
        "store \"{store}\": the {what} in the server config is not a plain name (letters, digits, \
         `_ . - $`, not starting with `-`), so it is not passed to the database tools; fix the \
         server config. Nothing was changed"
    )]
    UnsafeValue { store: String, what: String },
    #[error(
        "snapshot {id}: {path} shares its inode with the live data and its content is no longer \
         what the snapshot recorded ({detail}): it was changed through a live name. Restore \
         refused, nothing was changed; use another snapshot (`stalwart-upgrade snapshot list`)"
    )]
    Altered {
        id: String,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "store \"{store}\": {path} is not the directory the snapshot was taken from (it was \
         replaced since); the restore was refused and nothing was changed. Restore by hand from \
         the snapshot directory if that is really where the data belongs"
    )]
    Replaced { store: String, path: PathBuf },
}

impl SnapshotError {
    /// A file system that filled up: our own write, or a dump tool's output (`sql` says so in
    /// the tool error's detail).
    pub(crate) fn is_no_space(&self) -> bool {
        match self {
            SnapshotError::Io { source, .. } => fsops::is_no_space(source),
            SnapshotError::Tool { detail, .. } => {
                detail.contains("No space left") || detail.contains("ENOSPC")
            }
            _ => false,
        }
    }
}

pub struct Snapshots {
    pub root: PathBuf,
    /// The helper's `[snapshots] database_ca_file`: what the database tools verify a SQL
    /// store's server with when its connection uses TLS (see `sql::Trust`).
    pub database_ca_file: Option<PathBuf>,
    /// The server unit's environment: the `%{env:..}%` macros of the config copies a restore
    /// takes SQL connections from (`restore::sql_conns`) are expanded from it alone.
    env: crate::server::serverenv::ServerEnv,
}

const MANIFEST: &str = "manifest.json";
const PARTIAL_PREFIX: &str = ".partial-";
/// Where the copy of the server config goes; a store cannot have this id (it starts with '.').
const CONFIG_DIR: &str = ".server-config";
/// In a PostgreSQL store's directory of a snapshot: the name of its clone database.
const CLONE_MARKER: &str = "clone-db";

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

fn is_safe_store_id(id: &str) -> bool {
    is_valid_id(id) && id != MANIFEST
}

/// Now: (ms since the epoch, compact stamp for ids, RFC 3339 for the manifest).
fn now() -> (u64, String, String) {
    let ms = crate::os::clock::now_ms();
    let secs = ms / 1000;
    (
        ms,
        crate::os::clock::compact(secs),
        crate::os::clock::rfc3339(secs),
    )
}

impl Snapshots {
    pub fn new(root: &Path) -> Snapshots {
        Snapshots {
            root: root.to_owned(),
            database_ca_file: None,
            env: crate::server::serverenv::ServerEnv::default(),
        }
    }

    /// The snapshots the helper's settings name, with their CA file for the database servers.
    pub fn for_settings(s: &crate::config::Settings) -> Snapshots {
        // Every tool run of this process (dumps, restores, queries) is bounded by it.
        sql::set_tool_timeout(s.timeouts.tool_secs);
        Snapshots::new(&s.snapshot_dir()).with_database_ca(s.snapshots.database_ca_file.clone())
    }

    pub fn with_database_ca(mut self, ca_file: Option<PathBuf>) -> Snapshots {
        self.database_ca_file = ca_file;
        self
    }

    /// A SQL store's connection as the tools get it: the server config's, with the helper's CA
    /// file (whatever the server config says, it names none).
    fn conn_for(
        &self,
        conn: &crate::server::serverconfig::SqlConn,
    ) -> crate::server::serverconfig::SqlConn {
        crate::server::serverconfig::SqlConn {
            ca_file: self.database_ca_file.clone(),
            ..conn.clone()
        }
    }

    /// With the server unit's environment (see `systemd::Systemd::server_env`), for the config
    /// copies of snapshots whose SQL connection uses an environment variable.
    pub fn with_server_env(mut self, env: crate::server::serverenv::ServerEnv) -> Snapshots {
        self.env = env;
        self
    }

    fn dir_of(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        if !is_valid_id(id) {
            return Err(SnapshotError::InvalidId { id: id.to_string() });
        }
        Ok(self.root.join(id))
    }

    /// The sequence number the next snapshot gets.
    pub(crate) fn next_seq(&self) -> Result<u64, SnapshotError> {
        Ok(self.list()?.iter().map(|m| m.seq).max().unwrap_or(0) + 1)
    }
    /// Reads one snapshot's manifest.
    pub fn get(&self, id: &str) -> Result<Manifest, SnapshotError> {
        let dir = self.dir_of(id)?;
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound {
                    id: id.to_string(),
                    root: self.root.clone(),
                })
            }
            Err(e) => return Err(fsops::io_err("read", &path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| SnapshotError::Manifest {
            path,
            message: e.to_string(),
        })
    }

    /// All complete snapshots, oldest first. Unreadable ones are logged and left out.
    pub fn list(&self) -> Result<Vec<Manifest>, SnapshotError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fsops::io_err("list", &self.root, e)),
        };
        fsops::check_private_dir(&self.root)?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| fsops::io_err("list", &self.root, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if !is_valid_id(&name) {
                continue;
            }
            match self.get(&name) {
                Ok(m) => out.push(m),
                Err(err) => tracing::warn!(snapshot = %name, "skipping snapshot: {err}"),
            }
        }
        out.sort_by(|a, b| {
            (a.seq, a.created_unix_ms, &a.id).cmp(&(b.seq, b.created_unix_ms, &b.id))
        });
        Ok(out)
    }

    /// Server may be running: fills in the sha256 of every file not hashed yet. Those are the
    /// private copies (mutable files, root-only in the snapshot), so the hashes describe the
    /// data as it was at stop; hard-linked files got theirs when they were linked.
    pub fn hash(&self, id: &str) -> Result<Manifest, SnapshotError> {
        let mut m = self.get(id)?;
        let dir = self.dir_of(id)?;
        let mut jobs: Vec<(PathBuf, u64)> = Vec::new();
        let mut slots: Vec<(usize, usize)> = Vec::new();
        for (si, s) in m.stores.iter().enumerate() {
            for (fi, f) in s.files.iter().enumerate() {
                // Linked files were hashed as they were linked (`prehash`): hashing them now
                // would describe whatever the live name made of them since. Likewise a copy
                // that shares its inode with a name outside the snapshot now (linked back into
                // the data by an earlier restore): left unhashed (`verify` says so), and a
                // missing file is left for `verify` to report.
                let path = dir.join(&s.id).join(&f.path);
                let private = std::fs::symlink_metadata(&path).is_ok_and(|md| {
                    md.is_file() && std::os::unix::fs::MetadataExt::nlink(&md) == 1
                });
                if f.kind == FileKind::File && f.sha256.is_none() && private {
                    jobs.push((path, f.size));
                    slots.push((si, fi));
                }
            }
        }
        let results = hash::hash_files(&jobs);
        for ((si, fi), (r, (path, _))) in slots.into_iter().zip(results.into_iter().zip(&jobs)) {
            let (hex, _) = r.map_err(|e| fsops::io_err("hash", path, e))?;
            m.stores[si].files[fi].sha256 = Some(hex);
        }
        for s in &mut m.stores {
            s.hashed = s
                .files
                .iter()
                .all(|f| f.kind != FileKind::File || f.sha256.is_some());
        }
        m.hashed_at = Some(now().2);
        let data = serde_json::to_vec_pretty(&m).map_err(|e| SnapshotError::Manifest {
            path: dir.join(MANIFEST),
            message: e.to_string(),
        })?;
        crate::os::fsutil::Dir::open(&dir)?.write_atomic(MANIFEST, &data, 0o600, None)?;
        Ok(m)
    }

    /// Re-hashes every file and compares with the manifest.
    pub fn verify(&self, id: &str) -> Result<VerifyReport, SnapshotError> {
        let m = self.get(id)?;
        let dir = self.dir_of(id)?;
        let mut report = VerifyReport {
            id: id.to_string(),
            ..VerifyReport::default()
        };
        // A clone database is checked for being the one the snapshot made, never opened since
        // (`pgclone`: that proves its content, which reading it all back would cost what the
        // clone saved).
        for (store, db, why) in self.bad_clones(&m)? {
            let name = format!("{store}/{db} (clone database)");
            match why {
                SnapshotError::CloneChanged { .. } => report.mismatched.push(name),
                _ => report.missing.push(name),
            }
        }
        let mut jobs = Vec::new();
        let mut expect = Vec::new();
        for s in &m.stores {
            for f in s.files.iter().filter(|f| f.kind == FileKind::File) {
                let name = format!("{}/{}", s.id, f.path);
                let path = dir.join(&s.id).join(&f.path);
                match std::fs::symlink_metadata(&path) {
                    Ok(md) if md.is_file() => {}
                    _ => {
                        report.missing.push(name);
                        continue;
                    }
                }
                match &f.sha256 {
                    None => report.unhashed.push(name),
                    Some(h) => {
                        jobs.push((path, f.size));
                        expect.push((name, h.clone()));
                    }
                }
            }
        }
        // What a restore of a dump checks before it touches the database.
        for s in &m.stores {
            let pg = match s.method {
                StoreMethod::PgDump => true,
                StoreMethod::MysqlDump => false,
                _ => continue,
            };
            let file = if pg { "dump.pgcustom" } else { "dump.sql" };
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(dir.join(&s.id).join(file));
            // A dump that does not open is named as missing by the hash check below.
            if let Ok(f) = opened {
                let checked = if pg {
                    sql::check_pg_magic(&s.id, &f)
                } else {
                    sql::check_mysql_trailer(&s.id, &f)
                };
                if let Err(e) = checked {
                    report.unrestorable.push(format!("{}/{file}: {e}", s.id));
                }
            }
        }
        for ((name, want), r) in expect.into_iter().zip(hash::hash_files(&jobs)) {
            match r {
                Ok((got, bytes)) => {
                    report.files_checked += 1;
                    report.bytes_checked += bytes;
                    if got != want {
                        report.mismatched.push(name);
                    }
                }
                Err(_) => report.missing.push(name),
            }
        }
        Ok(report)
    }

    pub fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        let dir = self.dir_of(id)?;
        if std::fs::symlink_metadata(&dir).is_err() {
            return Err(SnapshotError::NotFound {
                id: id.to_string(),
                root: self.root.clone(),
            });
        }
        self.drop_clones(id)?;
        // The manifest goes first: a crash half way leaves no directory that claims to be a
        // usable snapshot.
        let manifest = dir.join(MANIFEST);
        if std::fs::symlink_metadata(&manifest).is_ok() {
            fs::remove_file(&manifest).map_err(|e| fsops::io_err("remove", &manifest, e))?;
            crate::os::fsutil::Dir::open(&dir)?.fsync()?;
        }
        // Then it takes a partial's name: a tree whose removal fails half way (or is killed)
        // is one `remove_partials` finishes later, never a nameless leftover (issue #25).
        let doomed = self.root.join(format!("{PARTIAL_PREFIX}removed-{id}"));
        fs::rename(&dir, &doomed).map_err(|e| fsops::io_err("rename", &dir, e))?;
        crate::os::fsutil::Dir::open(&self.root)?.fsync()?;
        fsops::remove_tree(&doomed)?;
        Ok(crate::os::fsutil::Dir::open(&self.root)?.fsync()?)
    }

    /// Removes what interrupted `create`s left behind.
    pub fn remove_partials(&self) -> Result<(), SnapshotError> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PARTIAL_PREFIX) && names_a_clone(&e.path()) {
                // Its clone database is dropped by the next create (which has the connection);
                // removing the name now would leave the database behind unnamed.
                tracing::info!(partial = %name, "kept until the next snapshot drops its clone database");
                continue;
            }
            if name.starts_with(PARTIAL_PREFIX) || precopy::is_leftover(&name) {
                fsops::remove_tree(&e.path())?;
            }
        }
        Ok(())
    }

    /// Keeps the `keep` newest snapshots and every id in `protect`; removes the others (or,
    /// with `dry_run`, only says which), oldest first. Removes the snapshots past the newest `keep` (never `protect`ed ones, never set-aside
    /// data). One that cannot be removed (a clone database that will not drop, a file the
    /// disk refuses to unlink) does not stop the others: it is reported in `Pruned::failed`,
    /// so one bad snapshot never leaves every older one filling the disk (issue #25).
    pub fn prune(
        &self,
        keep: usize,
        protect: &[String],
        dry_run: bool,
    ) -> Result<Pruned, SnapshotError> {
        let all = self.list()?;
        let n = all.len();
        let mut out = Pruned::default();
        for (i, m) in all.into_iter().enumerate() {
            // 0 = newest
            let newest_rank = n - 1 - i;
            // Data a rollback or an undo set aside (what a newer version ran on, mail included)
            // goes only when the admin says so (`snapshot remove`), never by count.
            if newest_rank < keep || protect.iter().any(|p| p == &m.id) || m.set_aside() {
                continue;
            }
            if !dry_run {
                if let Err(e) = self.remove(&m.id) {
                    out.failed.push((m.id.clone(), e.to_string()));
                    continue;
                }
            }
            out.gone.push(m);
        }
        if !dry_run {
            if let Err(e) = self.remove_partials() {
                out.failed
                    .push(("(unfinished snapshots)".into(), e.to_string()));
            }
        }
        Ok(out)
    }

    /// The package purge's part: every snapshot that is not set-aside data goes, with the
    /// PostgreSQL clone databases it owns (`remove`), and the clones interrupted creates left
    /// (named by their partial snapshots; `cfg` gives the connection). A snapshot whose clone
    /// cannot be dropped now stays, so the database is never left behind unnamed; set-aside
    /// snapshots stay until the admin removes them by name.
    pub fn purge(
        &self,
        cfg: Option<&crate::server::serverconfig::ServerConfig>,
    ) -> Result<Purged, SnapshotError> {
        if let Some(cfg) = cfg {
            self.drop_partial_clones(cfg);
        }
        let mut out = Purged::default();
        for m in self.list()? {
            if m.set_aside() {
                continue;
            }
            match self.remove(&m.id) {
                Ok(()) => out.removed.push(m.id),
                Err(e) => out.failed.push((m.id, e.to_string())),
            }
        }
        self.remove_partials()?;
        out.set_aside = self.set_aside()?;
        Ok(out)
    }

    /// The snapshots holding set-aside data (`Manifest::set_aside`), oldest first, with what
    /// an admin needs to decide about each.
    pub fn set_aside(&self) -> Result<Vec<SetAside>, SnapshotError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(Manifest::set_aside)
            .map(|m| SetAside {
                reclaimable: self.reclaimable(&m.id).ok(),
                bytes: m.bytes(),
                clone_databases: m
                    .stores
                    .iter()
                    .filter_map(|s| s.clone_db.as_ref().map(|c| c.name.clone()))
                    .collect(),
                remove: format!("stalwart-upgrade snapshot remove {}", m.id),
                id: m.id,
                origin: m.origin.unwrap_or_default(),
                server_version: m.server_version,
                created_at: m.created_at,
            })
            .collect())
    }

    /// Records that snapshot `id` now holds data nothing else holds (`origin` says which), before
    /// the copy it duplicates is deleted: from then on retention keeps it (`Manifest::set_aside`).
    /// A crash between the two leaves a snapshot kept that did not need to be, never the only copy
    /// of that data unprotected.
    pub(crate) fn mark_set_aside(&self, id: &str, origin: &str) -> Result<(), SnapshotError> {
        let mut m = self.get(id)?;
        if m.set_aside() {
            return Ok(());
        }
        m.origin = Some(origin.to_string());
        let dir = self.dir_of(id)?;
        let data = serde_json::to_vec_pretty(&m).map_err(|e| SnapshotError::Manifest {
            path: dir.join(MANIFEST),
            message: e.to_string(),
        })?;
        crate::os::fsutil::Dir::open(&dir)?.write_atomic(MANIFEST, &data, 0o600, None)?;
        tracing::info!(snapshot = %id, "snapshot {id} now holds data set aside: {origin}");
        Ok(())
    }

    /// Bytes that removing this snapshot would give back: files it holds alone (copies, and
    /// links whose live name is gone), counted in allocated blocks.
    pub fn reclaimable(&self, id: &str) -> Result<u64, SnapshotError> {
        let dir = self.dir_of(id)?;
        let mut total = 0;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let rd = fs::read_dir(&d).map_err(|e| fsops::io_err("list", &d, e))?;
            for e in rd.flatten() {
                let Ok(m) = e.path().symlink_metadata() else {
                    continue;
                };
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() && m.nlink() == 1 {
                    total += m.blocks() * 512;
                }
            }
        }
        Ok(total)
    }
}

/// What `prune` did: removed, and what it could not remove (id, why).
#[derive(Debug, Default)]
pub struct Pruned {
    pub gone: Vec<Manifest>,
    pub failed: Vec<(String, String)>,
}

/// What `Snapshots::purge` did.
#[derive(Debug, Default)]
pub struct Purged {
    pub removed: Vec<String>,
    /// Kept: set-aside data.
    pub set_aside: Vec<SetAside>,
    /// Kept because removing them failed (a clone database that could not be dropped), with why.
    pub failed: Vec<(String, String)>,
}

/// A snapshot of set-aside data, as `status`, `history` and purge name it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetAside {
    pub id: String,
    /// What the data is (the manifest's `origin`).
    pub origin: String,
    /// The version that ran on it: the one that can read it.
    pub server_version: crate::server::version::Version,
    pub created_at: String,
    /// Sum of its files' sizes.
    pub bytes: u64,
    /// What removing it gives back (files no live name shares); None when unreadable.
    pub reclaimable: Option<u64>,
    /// PostgreSQL clone databases it owns (dropped with it).
    pub clone_databases: Vec<String>,
    /// The one command that deletes it.
    pub remove: String,
}

impl SetAside {
    /// One line for the admin: what it is, its size, how to put it back (given the `running`
    /// version) and how to remove it.
    pub fn describe(&self, running: Option<&crate::server::version::Version>) -> String {
        let mut size = human(self.bytes);
        if let Some(r) = self.reclaimable.filter(|r| *r != self.bytes) {
            size.push_str(&format!(", {} of it its own", human(r)));
        }
        if !self.clone_databases.is_empty() {
            size.push_str(&format!(
                ", clone database {}",
                self.clone_databases.join(", ")
            ));
        }
        // Data a newer version wrote, of any class: a patch release can change the store too
        // (upstream #2584; measured with a 1.x build on a 0.16 store).
        let newer = running.is_some_and(|r| self.server_version > *r);
        let back = if newer {
            format!(
                "to put it back, run {v} again first (`stalwart-upgrade upgrade --to PATH` with                  {v}'s binary), then `stalwart-upgrade snapshot restore {id} --stop`",
                v = self.server_version,
                id = self.id
            )
        } else {
            format!(
                "`stalwart-upgrade snapshot restore {} --stop` puts it back",
                self.id
            )
        };
        format!(
            "snapshot {id} ({size}, taken {at} under {v}) keeps {origin}; it is never pruned: if \
             mail from that time is missing, look there ({back}); `{remove}` deletes it once it \
             is not needed",
            id = self.id,
            at = self.created_at,
            v = self.server_version,
            origin = self.origin,
            remove = self.remove,
        )
    }
}

/// Does the partial snapshot `dir` name a clone database (a create killed after making it)?
fn names_a_clone(dir: &Path) -> bool {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join(CLONE_MARKER).is_file())
}

/// A store path `check_store_paths` refuses.
#[derive(Debug, thiserror::Error)]
#[error("the server config {config} puts store `{store}` at {path}, outside the directories whose data the helper snapshots and restores as root ({allowed}); nothing was stopped. If that really is the server's store, add it to `[snapshots] store_paths` in /etc/stalwart-upgrade/config.toml, then run the command again")]
pub struct StorePathRefusal {
    pub config: PathBuf,
    pub store: String,
    pub path: PathBuf,
    pub allowed: String,
}

/// Issue #23 finding 5: the stores root snapshots and restores file by file (RocksDB, SQLite,
/// file-system blobs) must lie below a directory the packages own (PREFIX/data, 0.16's
/// /var/lib/stalwart) or one the admin listed in the helper's own config. The server config is
/// the service user's to write: a store path there must not make root copy, hash and later
/// overwrite another service's data, /var/lib/dpkg or /proc. Paths are compared by component,
/// after refusing `..`; the file operations below them never follow symlinks.
pub fn check_store_paths(
    settings: &crate::config::Settings,
    cfg: &crate::server::serverconfig::ServerConfig,
) -> Result<(), SnapshotError> {
    use crate::server::serverconfig::StoreKind;
    let mut allowed = vec![
        settings.prefix.join("data"),
        PathBuf::from("/var/lib/stalwart"),
    ];
    allowed.extend(settings.snapshots.store_paths.iter().cloned());
    for store in &cfg.stores {
        let path = match &store.kind {
            StoreKind::RocksDb { path } | StoreKind::Fs { path } | StoreKind::Sqlite { path } => {
                path
            }
            _ => continue,
        };
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if !(plain && allowed.iter().any(|a| path.starts_with(a))) {
            return Err(SnapshotError::StorePathNotAllowed(Box::new(
                StorePathRefusal {
                    config: cfg.path.clone(),
                    store: store.id.clone(),
                    path: path.clone(),
                    allowed: allowed
                        .iter()
                        .map(|a| a.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            )));
        }
    }
    Ok(())
}

/// Whom the tools of a snapshot run as (SQL clients, the server's `--export`/`--import`):
/// whoever could change the binary or the config. Issue #23 finding 9: that is decided from who
/// can write the file and every directory above it (`fsutil::writer_of`), not from the file's
/// owner alone, so a group- or world-writable config or directory never makes a tool run as
/// root. A real user found that way (the service user) wins over "anybody" (nobody); None (the
/// helper itself) only where root alone controls the binary, the config and every directory
/// above them (then nothing in them is anyone else's), or when the helper is not root.
pub(crate) fn tool_identity(
    config: &Path,
    program: Option<&crate::os::child::Program>,
) -> sql::RunAs {
    if rustix::process::geteuid().as_raw() != 0 {
        return None;
    }
    let of_program = program.and_then(|p| crate::os::fsutil::writer_of(p.path()));
    let of_config = crate::os::fsutil::writer_of(config);
    let real = |w: Option<(u32, u32)>| w.filter(|(uid, _)| *uid != crate::NOBODY);
    real(of_program)
        .or(real(of_config))
        .or(of_program)
        .or(of_config)
}

/// 1.5 GiB style sizes for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::methods::{export_types, methods};
    use super::*;
    use crate::server::serverconfig::{Store, StoreKind};

    #[test]
    fn store_paths_outside_the_packages_data_are_refused() {
        let s = crate::config::Settings::default();
        let cfg = |path: &str| {
            crate::server::serverconfig::ServerConfig::parse_toml(
                Path::new("/nonexistent/config.toml"),
                &format!(
                    "[storage]\ndata = \"db\"\nblob = \"db\"\nfts = \"db\"\nlookup = \"db\"\n\
                     [store.db]\ntype = \"rocksdb\"\npath = \"{path}\"\n"
                ),
            )
            .unwrap()
        };
        for ok in [
            "/opt/stalwart/data",
            "/opt/stalwart/data/",
            "/var/lib/stalwart/db",
        ] {
            check_store_paths(&s, &cfg(ok)).unwrap();
        }
        for bad in [
            "/var/lib/dpkg",
            "/opt/stalwart/data/../../../var/lib/dpkg",
            "/opt/stalwart/database",
            "/proc/1",
            "data",
        ] {
            let e = check_store_paths(&s, &cfg(bad)).unwrap_err().to_string();
            assert!(
                e.contains("store_paths") && e.contains("`db`"),
                "{bad}: {e}"
            );
        }
        let mut listed = s.clone();
        listed.snapshots.store_paths = vec![PathBuf::from("/srv/mail")];
        check_store_paths(&listed, &cfg("/srv/mail/rocks")).unwrap();
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(
            crate::os::clock::rfc3339(1_795_867_200),
            "2026-11-28T12:00:00Z"
        );
        assert_eq!(crate::os::clock::compact(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("20261128T120000Z-0.15.5"));
        assert!(!is_valid_id("../etc"));
        assert!(!is_valid_id(".partial-x"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_safe_store_id("manifest.json"));
    }

    #[test]
    fn rocksdb_classification() {
        for f in ["000012.sst", "sub/000001.blob"] {
            assert!(rocksdb_immutable(f), "{f}");
        }
        for f in [
            "MANIFEST-000005",
            "CURRENT",
            "OPTIONS-000007",
            "000004.log",
            "LOCK",
            "IDENTITY",
            "LOG",
        ] {
            assert!(!rocksdb_immutable(f), "{f}");
        }
    }

    #[test]
    fn symlink_containment() {
        assert!(link_stays_inside(Path::new("a"), Path::new("b")));
        assert!(link_stays_inside(Path::new("d/a"), Path::new("../b")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../b")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/etc/passwd")));
        assert!(!link_stays_inside(
            Path::new("d/a"),
            Path::new("x/../../../b")
        ));
    }

    fn store(id: &str, kind: StoreKind, roles: &[&str]) -> Store {
        Store {
            id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            kind,
        }
    }

    #[test]
    fn methods_cover_nested_and_share_one_export() {
        let stores = vec![
            store(
                "rocks",
                StoreKind::RocksDb {
                    path: "/opt/stalwart/data/".into(),
                },
                &["data"],
            ),
            store(
                "blobs",
                StoreKind::Fs {
                    path: "/opt/stalwart/data/blobs".into(),
                },
                &["blob"],
            ),
            store(
                "s3",
                StoreKind::Other {
                    type_name: "s3".into(),
                },
                &["blob"],
            ),
            store(
                "redis",
                StoreKind::Other {
                    type_name: "redis".into(),
                },
                &["lookup"],
            ),
            store(
                "pg",
                StoreKind::PostgreSql(crate::server::serverconfig::SqlConn::sample()),
                &["fts"],
            ),
        ];
        let m = methods(&stores);
        assert_eq!(m[0], (StoreMethod::RocksDbFiles, None));
        assert_eq!(m[1], (StoreMethod::Covered, Some("rocks".into())));
        assert_eq!(m[2], (StoreMethod::LogicalExport, None));
        assert_eq!(m[3], (StoreMethod::Covered, Some("s3".into())));
        assert_eq!(m[4], (StoreMethod::PgDump, None));
        assert_eq!(export_types(&stores), None);
        assert_eq!(export_types(&stores[..3]), Some("blob"));
    }

    #[test]
    fn plan_arithmetic() {
        let p = SnapshotPlan {
            root: "/x".into(),
            stores: vec![],
            bytes_needed: 100,
            bytes_free: 50,
            margin: 10,
            unknown: vec![],
            undo_bytes: 0,
            undo_elsewhere: vec![],
            pinned_bytes: 0,
        };
        assert!(!p.fits());
        assert_eq!(p.shortfall(), 60);
        // Issue #24: the snapshot fits, what its undo may need does not (here or elsewhere).
        let mut p = SnapshotPlan {
            bytes_free: 200,
            undo_bytes: 100,
            ..p
        };
        assert!(p.fits() && !p.fits_with_undo());
        p.undo_bytes = 90;
        assert!(p.fits_with_undo());
        p.undo_elsewhere = vec![("/srv/data".into(), 30, 20)];
        assert!(!p.fits_with_undo());
        assert_eq!(human(1536), "1.5 KiB");
    }
}
