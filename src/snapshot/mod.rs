//! Snapshots of the server's data, per store. OWNER: snapshot helper.
//! Interface used by the engine — keep these signatures (add to them freely).
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
//! - PostgreSQL / MySQL: pg_dump / mariadb-dump (`sql.rs`).
//! - anything else: the server's own `--export` (a logical export).

mod fsops;
mod hash;
mod sql;

use crate::serverconfig::{Generation, ServerConfig, Store, StoreKind};
use crate::version::{Class, Version};
use fs_err as fs;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use fsops::link_stays_inside;

/// Why hard links are safe for the fs blob store: the stand-in server writes each blob as a
/// temp file, fsyncs and renames it to the sha256 of its content, and never modifies it again
/// (tests/standin/src/blob.rs). Upstream's fs store is not covered by the facts file: `hash` +
/// `verify` would reveal a blob rewritten in place.
pub const FS_BLOBS_WRITE_ONCE: &str = "fs blobs are write-once (tests/standin)";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Other(String),
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
        "store \"{store}\": the dump {path} is not complete ({message}); restore refused before \
         the database was touched. Use another snapshot (`stalwart-upgrade snapshot list`)"
    )]
    BadDump {
        store: String,
        path: PathBuf,
        message: String,
    },
    #[error("the server config has a store \"{store}\" with an unsafe path: {message}")]
    BadStorePath { store: String, message: String },
}

/// What the caller knows about the snapshot it asks for (recorded in the manifest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub server_version: Version,
    pub target_version: Option<Version>,
    pub class: Option<Class>,
    /// The server binary, for the `--export` fallback.
    pub server_binary: PathBuf,
}

/// How one store is snapshotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreMethod {
    /// RocksDB directory: immutable table files hard-linked, the rest copied.
    RocksDbFiles,
    /// SQLite database file and its -wal/-shm/-journal, copied.
    SqliteFiles,
    /// fs blob store: write-once blobs hard-linked.
    FsFiles,
    /// `pg_dump --format=custom`.
    PgDump,
    /// `mariadb-dump --single-transaction`.
    MysqlDump,
    /// The server's own `--export` (logical; restore runs `--import`).
    LogicalExport,
    /// Inside another store's directory, or exported together with another store.
    Covered,
}

impl StoreMethod {
    pub fn describe(self) -> &'static str {
        match self {
            StoreMethod::RocksDbFiles => {
                "hard links for immutable .sst/.blob files, copies of the rest"
            }
            StoreMethod::SqliteFiles => {
                "copy (reflink where supported) of the database file and its -wal/-shm"
            }
            StoreMethod::FsFiles => "hard links of the write-once blob files",
            StoreMethod::PgDump => "pg_dump --format=custom",
            StoreMethod::MysqlDump => "mariadb-dump --single-transaction",
            StoreMethod::LogicalExport => "logical export with the server's --export (slow)",
            StoreMethod::Covered => "covered by another store's snapshot",
        }
    }
}

/// How one file got into the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    HardLink,
    Reflink,
    CopyFileRange,
    Copy,
    /// Written by a dump/export tool.
    Tool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the store's snapshot directory ("." is the directory itself).
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<How>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    pub id: String,
    /// rocksdb, sqlite, fs, postgresql, mysql, or the config's type name.
    pub kind: String,
    pub roles: Vec<String>,
    pub method: StoreMethod,
    /// True for the server's `--export`: a logical copy, restored by `--import`.
    pub logical_export: bool,
    /// The data directory / file, or `postgresql://user@host:port/db` (never a password).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    pub files: Vec<FileEntry>,
    /// Every regular file has its sha256.
    pub hashed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub format: u32,
    /// Order among the snapshots (1, 2, ...): `list`, retention and rollback go by it, not by
    /// the wall clock, which may have been set back between two snapshots. 0 in manifests
    /// written before it existed.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub created_unix_ms: u64,
    pub server_version: Version,
    pub target_version: Option<Version>,
    pub class: Option<Class>,
    pub server_binary: PathBuf,
    pub config_path: PathBuf,
    pub generation: Generation,
    pub stores: Vec<StoreSnapshot>,
    /// How long `create` took (the part of the downtime the snapshot costs).
    pub create_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_at: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// A copy of the server config as it was (relative to the snapshot dir), for the admin:
    /// the server may rewrite config.toml itself (facts), and a rollback restores only data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_copy: Option<String>,
}

impl Manifest {
    pub fn hashed(&self) -> bool {
        self.stores.iter().all(|s| s.hashed)
    }
    /// Sum of the sizes of the regular files in the snapshot.
    pub fn bytes(&self) -> u64 {
        self.stores
            .iter()
            .flat_map(|s| &s.files)
            .filter(|f| f.kind == FileKind::File)
            .map(|f| f.size)
            .sum()
    }
    pub fn has_logical_export(&self) -> bool {
        self.stores.iter().any(|s| s.logical_export)
    }
}

/// Result of `verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub id: String,
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// `store/path` whose content no longer matches the recorded sha256.
    pub mismatched: Vec<String>,
    /// `store/path` listed in the manifest but missing (or no longer a regular file).
    pub missing: Vec<String>,
    /// `store/path` with no recorded sha256 (the snapshot was never hashed).
    pub unhashed: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.mismatched.is_empty() && self.missing.is_empty() && self.unhashed.is_empty()
    }
}

/// What a snapshot of the current config would do and cost.
#[derive(Debug, Clone, Serialize)]
pub struct StorePlan {
    pub id: String,
    pub kind: String,
    pub method: StoreMethod,
    pub source: String,
    /// Size of the store's data (files) or of the database (as the server reports it).
    pub data_bytes: Option<u64>,
    /// Space the snapshot takes: ~0 for hard links, the size for copies, an estimate for
    /// dumps; None when unknown (logical export, unreachable database).
    pub bytes_needed: Option<u64>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPlan {
    pub root: PathBuf,
    pub stores: Vec<StorePlan>,
    pub bytes_needed: u64,
    pub bytes_free: u64,
    /// Kept free on top of what is needed (metadata, growth of a dump estimate).
    pub margin: u64,
    /// Stores whose size we could not estimate.
    pub unknown: Vec<String>,
}

impl SnapshotPlan {
    pub fn fits(&self) -> bool {
        self.bytes_needed.saturating_add(self.margin) <= self.bytes_free
    }
    /// How many bytes are missing (0 when it fits).
    pub fn shortfall(&self) -> u64 {
        self.bytes_needed
            .saturating_add(self.margin)
            .saturating_sub(self.bytes_free)
    }
}

pub struct Snapshots {
    pub root: PathBuf,
}

const MANIFEST: &str = "manifest.json";
const PARTIAL_PREFIX: &str = ".partial-";
/// Where the copy of the server config goes; a store cannot have this id (it starts with '.').
const CONFIG_DIR: &str = ".server-config";

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

/// Is this (relative) file name of a RocksDB directory immutable once written? Table files
/// (`NNNNNN.sst`) and blob files (`NNNNNN.blob`) are; everything else is copied.
pub fn rocksdb_immutable(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.ends_with(".sst") || name.ends_with(".blob")
}

/// UTC civil time from a Unix timestamp (Howard Hinnant's days-from-civil inverse).
fn utc_parts(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

fn now() -> (u64, String, String) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, da, h, mi, s) = utc_parts(d.as_secs());
    (
        d.as_millis() as u64,
        format!("{y:04}{mo:02}{da:02}T{h:02}{mi:02}{s:02}Z"),
        format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}Z"),
    )
}

fn sql_source(scheme: &str, c: &crate::serverconfig::SqlConn) -> String {
    let user = c
        .user
        .as_deref()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let port = c.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{user}{}{port}/{}", c.host, c.database)
}

fn trim_slash(p: &Path) -> PathBuf {
    p.components().collect()
}

/// Stores whose directory lies inside another file store's directory are covered by it (one
/// copy, one restore). Returns, per store, the id of the covering store.
fn covering(stores: &[Store]) -> Vec<Option<String>> {
    let dir_of = |s: &Store| match &s.kind {
        StoreKind::RocksDb { path } | StoreKind::Fs { path } => Some(trim_slash(path)),
        _ => None,
    };
    stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mine = match &s.kind {
                StoreKind::RocksDb { path }
                | StoreKind::Fs { path }
                | StoreKind::Sqlite { path } => trim_slash(path),
                _ => return None,
            };
            stores.iter().enumerate().find_map(|(j, o)| {
                let theirs = dir_of(o)?;
                (j != i && mine.starts_with(&theirs) && (mine != theirs || j < i))
                    .then(|| o.id.clone())
            })
        })
        .collect()
}

/// The method for a store (before covering is applied).
fn method_of(kind: &StoreKind) -> StoreMethod {
    match kind {
        StoreKind::RocksDb { .. } => StoreMethod::RocksDbFiles,
        StoreKind::Sqlite { .. } => StoreMethod::SqliteFiles,
        StoreKind::Fs { .. } => StoreMethod::FsFiles,
        StoreKind::PostgreSql(_) => StoreMethod::PgDump,
        StoreKind::MySql(_) => StoreMethod::MysqlDump,
        StoreKind::Other { .. } => StoreMethod::LogicalExport,
    }
}

/// Methods for all stores: covered stores, and a single export for all logical stores (one
/// `--export` writes every store the server uses).
fn methods(stores: &[Store]) -> Vec<(StoreMethod, Option<String>)> {
    let cov = covering(stores);
    let mut first_export: Option<String> = None;
    stores
        .iter()
        .zip(cov)
        .map(|(s, c)| {
            if let Some(c) = c {
                return (StoreMethod::Covered, Some(c));
            }
            let m = method_of(&s.kind);
            if m == StoreMethod::LogicalExport {
                if let Some(first) = &first_export {
                    return (StoreMethod::Covered, Some(first.clone()));
                }
                first_export = Some(s.id.clone());
            }
            (m, None)
        })
        .collect()
}

/// EXPORT_TYPES for the export (facts: it restricts the families). Only when every logical
/// store serves blobs alone do we restrict the export to blobs; otherwise everything.
fn export_types(stores: &[Store]) -> Option<&'static str> {
    let logical: Vec<&Store> = stores
        .iter()
        .filter(|s| matches!(s.kind, StoreKind::Other { .. }))
        .collect();
    (!logical.is_empty() && logical.iter().all(|s| s.roles.iter().all(|r| r == "blob")))
        .then_some("blob")
}

/// SQLite files that belong together: the db and its -wal, -shm and rollback -journal.
fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    let mut out = vec![db.to_owned()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        out.push(PathBuf::from(s));
    }
    out
}

/// Size of a tree, split into (immutable-and-linkable bytes, other bytes).
fn tree_bytes(dir: &Path, immutable: &dyn Fn(&str) -> bool) -> (u64, u64) {
    let mut linkable = 0;
    let mut other = 0;
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push((e.path(), r));
            } else if m.is_file() {
                if immutable(&r) {
                    linkable += m.len();
                } else {
                    other += m.len();
                }
            }
        }
    }
    (linkable, other)
}

impl Snapshots {
    pub fn new(root: &Path) -> Snapshots {
        Snapshots {
            root: root.to_owned(),
        }
    }

    fn dir_of(&self, id: &str) -> Result<PathBuf, SnapshotError> {
        if !is_valid_id(id) {
            return Err(SnapshotError::InvalidId { id: id.to_string() });
        }
        Ok(self.root.join(id))
    }

    /// Server stopped. Fast: no hashing (see `hash`).
    pub fn create(
        &self,
        cfg: &ServerConfig,
        meta: &SnapshotMeta,
    ) -> Result<Manifest, SnapshotError> {
        let started = std::time::Instant::now();
        self.check_root_apart(cfg)?;
        fsops::ensure_private_dir(&self.root)?;
        for s in &cfg.stores {
            if !is_safe_store_id(&s.id) {
                return Err(SnapshotError::UnsafeStoreId { id: s.id.clone() });
            }
        }
        // Leftovers of an interrupted create are never usable: clear them.
        self.remove_partials()?;

        let seq = self.list()?.iter().map(|m| m.seq).max().unwrap_or(0) + 1;
        let (ms, stamp, created_at) = now();
        let mut id = format!("{stamp}-{}", meta.server_version);
        let mut n = 1;
        while self.root.join(&id).exists() {
            n += 1;
            id = format!("{stamp}-{}-{n}", meta.server_version);
        }
        let tmp = self.root.join(format!("{PARTIAL_PREFIX}{id}"));
        fsops::ensure_private_dir(&tmp)?;

        let result = self.create_in(&tmp, &id, cfg, meta);
        let (stores, warnings) = match result {
            Ok(x) => x,
            Err((store, e)) => {
                // Nothing of the live data was touched: only our partial snapshot goes.
                let _ = fsops::remove_tree(&tmp);
                let no_space = match &e {
                    SnapshotError::Io { source, .. } => fsops::is_no_space(source),
                    SnapshotError::Tool { detail, .. } => {
                        detail.contains("No space left") || detail.contains("ENOSPC")
                    }
                    _ => false,
                };
                if no_space {
                    return Err(SnapshotError::NoSpace {
                        root: self.root.clone(),
                        store,
                    });
                }
                return Err(e);
            }
        };
        let manifest = Manifest {
            id: id.clone(),
            format: 1,
            seq,
            created_at,
            created_unix_ms: ms,
            server_version: meta.server_version.clone(),
            target_version: meta.target_version.clone(),
            class: meta.class,
            server_binary: meta.server_binary.clone(),
            config_path: cfg.path.clone(),
            generation: cfg.generation,
            stores,
            create_seconds: started.elapsed().as_secs_f64(),
            hashed_at: None,
            warnings,
            config_copy: self.copy_config(&tmp, &cfg.path),
        };
        let finish = || -> Result<(), SnapshotError> {
            // One syncfs makes every link, copy and directory durable before the manifest says
            // the snapshot is complete.
            fsops::syncfs(&tmp)?;
            Self::write_manifest(&tmp, &manifest)?;
            let dst = self.root.join(&id);
            fs::rename(&tmp, &dst).map_err(|e| fsops::io_err("rename into place", &dst, e))?;
            fsops::fsync_dir(&self.root)
        };
        if let Err(e) = finish() {
            let _ = fsops::remove_tree(&tmp);
            if let SnapshotError::Io { source, .. } = &e {
                if fsops::is_no_space(source) {
                    return Err(SnapshotError::NoSpace {
                        root: self.root.clone(),
                        store: "manifest".into(),
                    });
                }
            }
            return Err(e);
        }
        tracing::info!(snapshot = %id, seconds = manifest.create_seconds, "snapshot created");
        Ok(manifest)
    }

    #[allow(clippy::type_complexity)]
    fn create_in(
        &self,
        tmp: &Path,
        id: &str,
        cfg: &ServerConfig,
        meta: &SnapshotMeta,
    ) -> Result<(Vec<StoreSnapshot>, Vec<String>), (String, SnapshotError)> {
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        let root_dev = fsops::device_of(tmp);
        for (store, (method, covered_by)) in cfg.stores.iter().zip(methods(&cfg.stores)) {
            let fail = |e: SnapshotError| (store.id.clone(), e);
            let dst = tmp.join(&store.id);
            let mut snap = StoreSnapshot {
                id: store.id.clone(),
                kind: store.kind.type_name().to_string(),
                roles: store.roles.clone(),
                method,
                logical_export: method == StoreMethod::LogicalExport,
                source: String::new(),
                covered_by,
                files: Vec::new(),
                hashed: false,
            };
            match (&store.kind, method) {
                (_, StoreMethod::Covered) => {
                    snap.source = store
                        .kind
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    snap.hashed = true;
                }
                (StoreKind::RocksDb { path }, _) | (StoreKind::Fs { path }, _) => {
                    snap.source = path.display().to_string();
                    let same_fs = root_dev.is_some() && fsops::device_of(path) == root_dev;
                    let is_rocks = matches!(store.kind, StoreKind::RocksDb { .. });
                    let link = move |rel: &str| -> bool {
                        // Hard links only on the same file system; see the module comment for
                        // why these files can be shared with the live data.
                        same_fs && (!is_rocks || rocksdb_immutable(rel))
                    };
                    snap.files =
                        fsops::copy_tree(path, &dst, &link, &mut warnings).map_err(fail)?;
                }
                (StoreKind::Sqlite { path }, _) => {
                    snap.source = path.display().to_string();
                    snap.files = self.snapshot_sqlite(path, &dst).map_err(fail)?;
                }
                (StoreKind::PostgreSql(conn), _) => {
                    snap.source = sql_source("postgresql", conn);
                    fsops::ensure_private_dir(&dst).map_err(fail)?;
                    sql::pg_dump(&store.id, conn, &dst.join("dump.pgcustom")).map_err(fail)?;
                    snap.files = tool_files(&dst).map_err(fail)?;
                }
                (StoreKind::MySql(conn), _) => {
                    snap.source = sql_source("mysql", conn);
                    fsops::ensure_private_dir(&dst).map_err(fail)?;
                    sql::mysql_dump(&store.id, conn, &dst.join("dump.sql")).map_err(fail)?;
                    snap.files = tool_files(&dst).map_err(fail)?;
                }
                (StoreKind::Other { .. }, _) => {
                    snap.source = format!("{} --export", meta.server_binary.display());
                    fsops::ensure_private_dir(&dst).map_err(fail)?;
                    sql::server_export_import(
                        &store.id,
                        &meta.server_binary,
                        &cfg.path,
                        "--export",
                        &dst,
                        export_types(&cfg.stores),
                    )
                    .map_err(fail)?;
                    snap.files = tool_files(&dst).map_err(fail)?;
                    warnings.push(format!(
                        "store \"{}\" ({}) was snapshotted with a logical export (--export); a \
                         restore imports it with --import of the old server",
                        store.id,
                        store.kind.type_name()
                    ));
                }
            }
            let _ = id;
            out.push(snap);
        }
        Ok((out, warnings))
    }

    /// Best effort: a config we cannot copy is no reason to refuse the data snapshot (the
    /// config was read successfully a moment ago; the copy is for reference only).
    fn copy_config(&self, tmp: &Path, config: &Path) -> Option<String> {
        let name = config.file_name()?.to_str()?.to_string();
        let meta = std::fs::symlink_metadata(config)
            .ok()
            .filter(|m| m.is_file())?;
        let dir = tmp.join(CONFIG_DIR);
        fsops::ensure_private_dir(&dir).ok()?;
        match fsops::copy_file(config, &dir.join(&name), &meta) {
            Ok(_) => Some(format!("{CONFIG_DIR}/{name}")),
            Err(e) => {
                tracing::warn!("could not keep a copy of the server config: {e}");
                None
            }
        }
    }

    fn snapshot_sqlite(&self, db: &Path, dst: &Path) -> Result<Vec<FileEntry>, SnapshotError> {
        let db_meta = fs::symlink_metadata(db).map_err(|e| fsops::io_err("inspect", db, e))?;
        if !db_meta.is_file() {
            return Err(SnapshotError::BadStorePath {
                store: db.display().to_string(),
                message: "the SQLite database is not a regular file (symlinks are not followed)"
                    .into(),
            });
        }
        fsops::ensure_private_dir(dst)?;
        let mut files = Vec::new();
        for f in sqlite_files(db) {
            let meta = match std::fs::symlink_metadata(&f) {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            // SQLite rewrites pages of these files in place: a private copy, never a link.
            let how = fsops::copy_file(&f, &dst.join(&name), &meta)?;
            files.push(fsops::entry(&name, FileKind::File, &meta, None, Some(how)));
        }
        Ok(files)
    }

    fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), SnapshotError> {
        let data = serde_json::to_vec_pretty(m).map_err(|e| SnapshotError::Manifest {
            path: dir.join(MANIFEST),
            message: e.to_string(),
        })?;
        fsops::write_atomic(&dir.join(MANIFEST), &data)
    }

    /// The snapshot root must not lie inside a store's directory (the snapshot would copy
    /// itself, and a restore would swap the snapshots away), nor a store inside the root.
    fn check_root_apart(&self, cfg: &ServerConfig) -> Result<(), SnapshotError> {
        // Resolve the longest existing prefix (the root may not exist yet), keep the rest.
        let canon = |p: &Path| {
            let p = trim_slash(p);
            let mut head = p.clone();
            let mut tail = Vec::new();
            loop {
                if let Ok(c) = std::fs::canonicalize(&head) {
                    return tail.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
                }
                match (head.file_name().map(|n| n.to_owned()), head.parent()) {
                    (Some(n), Some(parent)) => {
                        tail.push(n);
                        head = parent.to_owned();
                    }
                    _ => return p,
                }
            }
        };
        let root = canon(&self.root);
        for s in &cfg.stores {
            let Some(path) = s.kind.path() else { continue };
            let path = canon(path);
            if root.starts_with(&path) || path.starts_with(&root) {
                return Err(SnapshotError::BadStorePath {
                    store: s.id.clone(),
                    message: format!(
                        "{} and the snapshot directory {} are inside one another; move the \
                         snapshots elsewhere (`[snapshots] dir` in /etc/stalwart-upgrade/config.toml)",
                        path.display(),
                        root.display()
                    ),
                });
            }
        }
        Ok(())
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

    /// Server may be running: fills in sha256 of every file. Hard links and reflinks of
    /// immutable files keep their content while the server runs (it never rewrites them), and
    /// every mutable file is a private copy, so the hashes describe the data as it was at stop.
    pub fn hash(&self, id: &str) -> Result<Manifest, SnapshotError> {
        let mut m = self.get(id)?;
        let dir = self.dir_of(id)?;
        let mut jobs: Vec<(PathBuf, u64)> = Vec::new();
        let mut slots: Vec<(usize, usize)> = Vec::new();
        for (si, s) in m.stores.iter().enumerate() {
            for (fi, f) in s.files.iter().enumerate() {
                if f.kind == FileKind::File {
                    jobs.push((dir.join(&s.id).join(&f.path), f.size));
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
            s.hashed = true;
        }
        m.hashed_at = Some(now().2);
        Self::write_manifest(&dir, &m)?;
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

    /// Server stopped. Restores into a fresh dir next to each store's data, then renames it in.
    pub fn restore(&self, id: &str, cfg: &ServerConfig) -> Result<(), SnapshotError> {
        let m = self.get(id)?;
        fsops::check_private_dir(&self.root)?;
        self.check_complete(&m)?;
        // Every store the config uses now must be in the snapshot (same ids): restoring half
        // of the data would mix versions.
        for s in &cfg.stores {
            if !m.stores.iter().any(|x| x.id == s.id) {
                return Err(SnapshotError::StoreMismatch {
                    id: id.to_string(),
                    store: s.id.clone(),
                });
            }
        }
        let dir = self.dir_of(id)?;
        let mut import: Option<&StoreSnapshot> = None;
        for snap in &m.stores {
            // Where it goes now: the config's current store of that id, else the recorded one.
            let kind = cfg
                .stores
                .iter()
                .find(|s| s.id == snap.id)
                .map(|s| s.kind.clone());
            let src = dir.join(&snap.id);
            match snap.method {
                StoreMethod::Covered => {}
                StoreMethod::RocksDbFiles | StoreMethod::FsFiles => {
                    let live = match &kind {
                        Some(StoreKind::RocksDb { path }) | Some(StoreKind::Fs { path }) => {
                            trim_slash(path)
                        }
                        _ => PathBuf::from(&snap.source),
                    };
                    let is_rocks = snap.method == StoreMethod::RocksDbFiles;
                    self.restore_dir(&snap.id, &m.id, &src, &live, is_rocks)?;
                }
                StoreMethod::SqliteFiles => {
                    let live = match &kind {
                        Some(StoreKind::Sqlite { path }) => path.clone(),
                        _ => PathBuf::from(&snap.source),
                    };
                    self.restore_sqlite(&m.id, snap, &src, &live)?;
                }
                StoreMethod::PgDump => {
                    let Some(StoreKind::PostgreSql(conn)) = &kind else {
                        return Err(SnapshotError::StoreMismatch {
                            id: id.to_string(),
                            store: snap.id.clone(),
                        });
                    };
                    sql::pg_restore(&snap.id, conn, &src.join("dump.pgcustom"))?;
                }
                StoreMethod::MysqlDump => {
                    let Some(StoreKind::MySql(conn)) = &kind else {
                        return Err(SnapshotError::StoreMismatch {
                            id: id.to_string(),
                            store: snap.id.clone(),
                        });
                    };
                    sql::mysql_restore(&snap.id, conn, &src.join("dump.sql"))?;
                }
                StoreMethod::LogicalExport => import = Some(snap),
            }
        }
        // The import runs last, once the file-based stores it may write into are back.
        if let Some(snap) = import {
            sql::server_export_import(
                &snap.id,
                &m.server_binary,
                &cfg.path,
                "--import",
                &dir.join(&snap.id),
                None,
            )?;
        }
        tracing::info!(snapshot = %id, "snapshot restored");
        Ok(())
    }

    /// Builds `<live>.restore-<id>` from the snapshot, makes it durable, swaps it in, then
    /// removes the displaced tree. A failure before the swap leaves the live data untouched.
    fn restore_dir(
        &self,
        store: &str,
        id: &str,
        src: &Path,
        live: &Path,
        is_rocks: bool,
    ) -> Result<(), SnapshotError> {
        let parent = live.parent().ok_or_else(|| SnapshotError::BadStorePath {
            store: live.display().to_string(),
            message: "a store directory cannot be /".into(),
        })?;
        let name = live
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        // A data directory that is a mount point (its own volume) cannot be renamed: its
        // content is swapped inside it instead.
        let live_dev = std::fs::symlink_metadata(live).ok().map(|m| m.dev());
        let mount_point = live_dev.is_some() && live_dev != fsops::device_of(parent);
        let (fresh, displaced) = if mount_point {
            (
                live.join(format!(".stalwart-restore-{id}")),
                live.join(format!(".stalwart-displaced-{id}")),
            )
        } else {
            (
                parent.join(format!("{name}.restore-{id}")),
                parent.join(format!("{name}.displaced-{id}")),
            )
        };
        // Leftovers of an interrupted restore are ours and incomplete.
        fsops::remove_tree(&fresh)?;
        fsops::remove_tree(&displaced)?;
        let same_fs = fsops::device_of(src) == fsops::device_of(fresh.parent().unwrap_or(parent));
        // Linking back from the snapshot is safe for the same reason linking into it was: the
        // files are immutable, so the snapshot stays valid while the server runs on them.
        let link = move |rel: &str| same_fs && (!is_rocks || rocksdb_immutable(rel));
        let mut warnings = Vec::new();
        let built =
            fsops::copy_tree(src, &fresh, &link, &mut warnings).and_then(|_| fsops::syncfs(&fresh));
        if let Err(e) = built {
            let _ = fsops::remove_tree(&fresh);
            if let SnapshotError::Io { source, .. } = &e {
                if fsops::is_no_space(source) {
                    return Err(SnapshotError::RestoreNoSpace {
                        store: store.to_string(),
                        path: live.to_owned(),
                    });
                }
            }
            return Err(e);
        }
        if mount_point {
            fsops::swap_contents(&fresh, live, &displaced)?;
        } else {
            fsops::swap_in(&fresh, live, &displaced)?;
        }
        fsops::remove_tree(&displaced)?;
        Ok(())
    }

    /// SQLite: every restored file is staged as `<file>.restore-<id>` and renamed over the live
    /// one; live companions (-wal/-shm/-journal) that the snapshot does not have are removed,
    /// since SQLite would otherwise replay a newer WAL onto the old database.
    fn restore_sqlite(
        &self,
        id: &str,
        snap: &StoreSnapshot,
        src: &Path,
        live_db: &Path,
    ) -> Result<(), SnapshotError> {
        let dir = live_db.parent().unwrap_or(Path::new("/"));
        let live_files = sqlite_files(live_db);
        let db_name = snap
            .files
            .first()
            .map(|f| f.path.clone())
            .unwrap_or_default();
        let live_name = live_db
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        // (staged, live) pairs; the snapshot's names are mapped onto the current db name.
        let mut staged = Vec::new();
        let result = (|| -> Result<(), SnapshotError> {
            for f in snap.files.iter().filter(|f| f.kind == FileKind::File) {
                let target_name = f.path.replacen(&db_name, &live_name, 1);
                let target = dir.join(&target_name);
                let stage = dir.join(format!("{target_name}.restore-{id}"));
                fsops::remove_tree(&stage)?;
                let from = src.join(&f.path);
                let meta =
                    fs::symlink_metadata(&from).map_err(|e| fsops::io_err("inspect", &from, e))?;
                fsops::copy_file(&from, &stage, &meta)?;
                let file = fs::File::open(&stage).map_err(|e| fsops::io_err("open", &stage, e))?;
                file.sync_all()
                    .map_err(|e| fsops::io_err("fsync", &stage, e))?;
                staged.push((stage, target));
            }
            Ok(())
        })();
        if let Err(e) = result {
            for (stage, _) in &staged {
                let _ = std::fs::remove_file(stage);
            }
            for f in snap.files.iter().filter(|f| f.kind == FileKind::File) {
                let target_name = f.path.replacen(&db_name, &live_name, 1);
                let _ = std::fs::remove_file(dir.join(format!("{target_name}.restore-{id}")));
            }
            if let SnapshotError::Io { source, .. } = &e {
                if fsops::is_no_space(source) {
                    return Err(SnapshotError::RestoreNoSpace {
                        store: snap.id.clone(),
                        path: live_db.to_owned(),
                    });
                }
            }
            return Err(e);
        }
        // Companions first (a stale WAL must never meet the restored db), the db file last.
        for f in live_files.iter().skip(1) {
            if !staged.iter().any(|(_, t)| t == f) && std::fs::symlink_metadata(f).is_ok() {
                fs::remove_file(f).map_err(|e| fsops::io_err("remove", f, e))?;
            }
        }
        staged.sort_by_key(|(_, t)| t == live_db);
        for (stage, target) in &staged {
            fs::rename(stage, target).map_err(|e| fsops::io_err("rename into place", target, e))?;
        }
        fsops::fsync_dir(dir)
    }

    pub fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        let dir = self.dir_of(id)?;
        if std::fs::symlink_metadata(&dir).is_err() {
            return Err(SnapshotError::NotFound {
                id: id.to_string(),
                root: self.root.clone(),
            });
        }
        // The manifest goes first: a crash half way leaves no directory that claims to be a
        // usable snapshot.
        let manifest = dir.join(MANIFEST);
        if std::fs::symlink_metadata(&manifest).is_ok() {
            fs::remove_file(&manifest).map_err(|e| fsops::io_err("remove", &manifest, e))?;
            fsops::fsync_dir(&dir)?;
        }
        fsops::remove_tree(&dir)?;
        fsops::fsync_dir(&self.root)
    }

    /// Removes what interrupted `create`s left behind.
    pub fn remove_partials(&self) -> Result<(), SnapshotError> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
                fsops::remove_tree(&e.path())?;
            }
        }
        Ok(())
    }

    /// Keeps the `keep` newest snapshots and every id in `protect`; removes the others (or,
    /// with `dry_run`, only says which). Returns the removed (or removable) ones, oldest first.
    pub fn prune(
        &self,
        keep: usize,
        protect: &[String],
        dry_run: bool,
    ) -> Result<Vec<Manifest>, SnapshotError> {
        let all = self.list()?;
        let n = all.len();
        let mut gone = Vec::new();
        for (i, m) in all.into_iter().enumerate() {
            let newest_rank = n - 1 - i; // 0 = newest
            if newest_rank < keep || protect.iter().any(|p| p == &m.id) {
                continue;
            }
            if !dry_run {
                self.remove(&m.id)?;
            }
            gone.push(m);
        }
        if !dry_run {
            self.remove_partials()?;
        }
        Ok(gone)
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

    /// What a snapshot of `cfg` would do and cost; checked before the server is stopped.
    pub fn plan(&self, cfg: &ServerConfig) -> Result<SnapshotPlan, SnapshotError> {
        self.check_root_apart(cfg)?;
        let root_dev = fsops::device_of(&self.root);
        let mut stores = Vec::new();
        for (s, (method, covered_by)) in cfg.stores.iter().zip(methods(&cfg.stores)) {
            let mut p = StorePlan {
                id: s.id.clone(),
                kind: s.kind.type_name().to_string(),
                method,
                source: String::new(),
                data_bytes: None,
                bytes_needed: None,
                note: method.describe().to_string(),
            };
            match (&s.kind, method) {
                (_, StoreMethod::Covered) => {
                    p.source = s
                        .kind
                        .path()
                        .map(|x| x.display().to_string())
                        .unwrap_or_default();
                    p.bytes_needed = Some(0);
                    p.note = format!(
                        "covered by the snapshot of store \"{}\"",
                        covered_by.unwrap_or_default()
                    );
                }
                (StoreKind::RocksDb { path }, _) | (StoreKind::Fs { path }, _) => {
                    p.source = path.display().to_string();
                    let same_fs = root_dev.is_some() && fsops::device_of(path) == root_dev;
                    let is_rocks = matches!(s.kind, StoreKind::RocksDb { .. });
                    let (linkable, other) =
                        tree_bytes(path, &|rel| !is_rocks || rocksdb_immutable(rel));
                    p.data_bytes = Some(linkable + other);
                    p.bytes_needed = Some(if same_fs { other } else { linkable + other });
                    if !same_fs {
                        p.note = format!(
                            "full copy: {} is on another file system than the snapshots",
                            path.display()
                        );
                    }
                }
                (StoreKind::Sqlite { path }, _) => {
                    p.source = path.display().to_string();
                    let size: u64 = sqlite_files(path)
                        .iter()
                        .filter_map(|f| std::fs::symlink_metadata(f).ok())
                        .filter(|m| m.is_file())
                        .map(|m| m.len())
                        .sum();
                    p.data_bytes = Some(size);
                    p.bytes_needed = Some(size);
                }
                (StoreKind::PostgreSql(c), _) => {
                    p.source = sql_source("postgresql", c);
                    p.data_bytes = sql::pg_size(c);
                    // A custom-format dump is compressed; the database size bounds it.
                    p.bytes_needed = p.data_bytes;
                }
                (StoreKind::MySql(c), _) => {
                    p.source = sql_source("mysql", c);
                    p.data_bytes = sql::mysql_size(c);
                    // Text dump: roughly the data size (hex-encoded blobs may double it).
                    p.bytes_needed = p.data_bytes;
                }
                (StoreKind::Other { .. }, _) => {
                    p.source = "server --export".into();
                }
            }
            stores.push(p);
        }
        let unknown: Vec<String> = stores
            .iter()
            .filter(|p| p.bytes_needed.is_none())
            .map(|p| p.id.clone())
            .collect();
        let bytes_needed = stores.iter().filter_map(|p| p.bytes_needed).sum();
        Ok(SnapshotPlan {
            root: self.root.clone(),
            bytes_free: fsops::bytes_free(&self.root)?,
            stores,
            bytes_needed,
            margin: 64 << 20,
            unknown,
        })
    }

    /// A message for an admin when `plan.fits()` is false: how much is missing and which
    /// snapshots (not in `protect`) a prune would free.
    pub fn space_advice(&self, plan: &SnapshotPlan, protect: &[String]) -> String {
        let mut msg = format!(
            "not enough space for the snapshot in {}: {} needed (plus {} margin), {} free, \
             {} missing",
            plan.root.display(),
            human(plan.bytes_needed),
            human(plan.margin),
            human(plan.bytes_free),
            human(plan.shortfall())
        );
        let candidates: Vec<(String, u64)> = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| !protect.contains(&m.id))
            .filter_map(|m| self.reclaimable(&m.id).ok().map(|b| (m.id, b)))
            .collect();
        if candidates.is_empty() {
            msg.push_str("; no snapshot can be pruned: free space on that file system");
        } else {
            msg.push_str("; `stalwart-upgrade snapshot prune` could free: ");
            let parts: Vec<String> = candidates
                .iter()
                .map(|(id, b)| format!("{id} ({})", human(*b)))
                .collect();
            msg.push_str(&parts.join(", "));
        }
        msg
    }
}

/// Files a dump/export tool wrote into `dir`.
fn tool_files(dir: &Path) -> Result<Vec<FileEntry>, SnapshotError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(|e| fsops::io_err("list", &d, e))?;
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let m = e
                .path()
                .symlink_metadata()
                .map_err(|err| fsops::io_err("inspect", &e.path(), err))?;
            if m.is_dir() {
                out.push(fsops::entry(&r, FileKind::Dir, &m, None, None));
                stack.push((e.path(), r));
            } else if m.is_file() {
                out.push(fsops::entry(&r, FileKind::File, &m, None, Some(How::Tool)));
            }
        }
    }
    Ok(out)
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
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_parts(0), (1970, 1, 1, 0, 0, 0));
        // 2026-11-28T12:00:00Z
        assert_eq!(utc_parts(1_795_867_200), (2026, 11, 28, 12, 0, 0));
        assert_eq!(utc_parts(951_782_400), (2000, 2, 29, 0, 0, 0));
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
                StoreKind::PostgreSql(crate::serverconfig::SqlConn {
                    host: "h".into(),
                    port: None,
                    database: "d".into(),
                    user: None,
                    password: None,
                    tls: false,
                }),
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
        };
        assert!(!p.fits());
        assert_eq!(p.shortfall(), 60);
        assert_eq!(human(1536), "1.5 KiB");
    }
}
