//! What a snapshot records: the manifest of each store's files, and the plan of a snapshot that
//! is yet to be taken.

use crate::os::fsutil::Identity;
use crate::server::serverconfig::ConfigFormat;
use crate::server::version::{Class, Version};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// A clone database inside the PostgreSQL server (`CREATE DATABASE .. TEMPLATE .. STRATEGY
    /// FILE_COPY`), named in [`StoreSnapshot::clone_db`].
    PgClone,
    /// `mariadb-dump --single-transaction`.
    MysqlDump,
    /// The server's own `--export` (logical; restore runs `--import`).
    LogicalExport,
    /// Inside another store's directory, or exported together with another store.
    Covered,
}

impl StoreMethod {
    /// Reached through a database connection (taken from the snapshot's copy of the config).
    pub fn needs_connection(self) -> bool {
        matches!(
            self,
            StoreMethod::PgDump | StoreMethod::PgClone | StoreMethod::MysqlDump
        )
    }

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
            StoreMethod::PgClone => {
                "clone database in the PostgreSQL server (CREATE DATABASE .. TEMPLATE, FILE_COPY)"
            }
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
    /// Copied before the stop, the blocks changed since rewritten after it (SQLite).
    PreCopied,
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
    /// The data directory / file, or `postgresql://user@host:port/db` (never a password). A
    /// restore puts file-based stores back exactly here, never where the server config (which
    /// the server's user can edit) points at restore time.
    pub source: String,
    /// The directory holding `source` when the snapshot was taken: a restore refuses to write
    /// into any other (one put in its place since, e.g. through a symlink, is not the store's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_parent: Option<Identity>,
    /// `source` itself (directory or SQLite file) when the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    pub files: Vec<FileEntry>,
    /// Every regular file has its sha256.
    pub hashed: bool,
    /// [`StoreMethod::PgClone`]: the database in the store's PostgreSQL server that holds the
    /// data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_db: Option<CloneDb>,
}

/// A database that holds a snapshot's copy of a PostgreSQL store, in the store's own server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneDb {
    pub name: String,
    /// Its OID when it was made: a database of that name made since (the store's role may
    /// create databases) is not the snapshot's and is never restored from.
    pub oid: u32,
    /// The transaction id (with its epoch) that wrote its `pg_database` row when it was made,
    /// closed to connections: the same id later proves nobody has been inside (`pgclone`).
    /// None in manifests of earlier helpers: such a clone is not restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
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
    #[serde(rename = "generation")]
    pub config_format: ConfigFormat,
    pub stores: Vec<StoreSnapshot>,
    /// How long `create` took (the part of the downtime the snapshot costs).
    pub create_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_at: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// A copy of the server config as it was (relative to the snapshot dir), with its owner and
    /// mode: a restore takes the SQL connections from it (root-only here), not from the live
    /// config the server's user may have changed since; and the admin can read it (the server
    /// may rewrite config.toml itself, facts, and a rollback restores only data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_copy: Option<String>,
    /// Whom the files the config names were read as when the snapshot was taken: the copy is
    /// parsed with that identity (None, from before it was recorded: as nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) config_reader: Option<crate::os::readas::Reader>,
    /// Why this snapshot exists when it is not a snapshot taken on purpose: the data a restore
    /// displaced (what a server ran on since), kept rather than deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Manifest {
    /// Holds data no other snapshot holds: what a restore displaced (the data a newer version
    /// ran on, mail it took included), or the snapshot a rollback took of that data when the
    /// restore deleted the displaced tree as its duplicate. Never pruned by count, never offered
    /// to free space: only `snapshot remove ID` deletes it.
    pub fn set_aside(&self) -> bool {
        self.origin.is_some()
    }
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
    /// Dumps the restore would refuse, with why: what a restore checks before it touches the
    /// database (a custom-format header for pg_dump, the completion trailer for mariadb-dump),
    /// checked here too, so that `verify` says what a restore would say.
    #[serde(default)]
    pub unrestorable: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.mismatched.is_empty()
            && self.missing.is_empty()
            && self.unhashed.is_empty()
            && self.unrestorable.is_empty()
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
    /// What undoing the upgrade may need on the snapshots' file system on top of the snapshot
    /// (issue #24): the dump of the live SQL data taken before a destructive restore, the
    /// copies a restore writes back next to the data it sets aside.
    pub undo_bytes: u64,
    /// What undoing it would copy back onto other file systems (stores apart from the
    /// snapshots): per file system, a directory on it, bytes needed, bytes free.
    pub undo_elsewhere: Vec<(PathBuf, u64, u64)>,
    /// The live tables a hard-linked snapshot shares (RocksDB's immutable .sst files, a file
    /// store's files) on the snapshots' file system: free now, but once the new version
    /// compacts or rewrites them the snapshot's links keep their blocks until it is pruned.
    pub pinned_bytes: u64,
}

impl SnapshotPlan {
    /// A warning when what stays free after the snapshot and its undo could not hold the
    /// tables the snapshot will pin once more (issue #24): not a refusal (compaction is gradual
    /// and the space is given back at pruning), but what the admin must know before a disk
    /// fills up under the new version.
    pub fn pinned_warning(&self) -> Option<String> {
        if self.pinned_bytes == 0 {
            return None;
        }
        let after = self.bytes_free.saturating_sub(self.needed_with_undo());
        (after < self.pinned_bytes).then(|| {
            format!(
                "the snapshot hard-links {} of store tables in {}: as the new version compacts them they stay on that file system until the snapshot is pruned, and only {} would be free then; free space there, or lower [snapshots] keep",
                super::human(self.pinned_bytes),
                self.root.display(),
                super::human(after)
            )
        })
    }

    pub fn fits(&self) -> bool {
        self.bytes_needed.saturating_add(self.margin) <= self.bytes_free
    }
    /// The snapshot and everything its undo may need fit, checked before the stop: an undo
    /// that runs out of space leaves the server down on half-restored data.
    pub fn fits_with_undo(&self) -> bool {
        self.needed_with_undo() <= self.bytes_free
            && self
                .undo_elsewhere
                .iter()
                .all(|(_, need, free)| need.saturating_add(self.margin) <= *free)
    }
    /// On the snapshots' file system: the snapshot, what its undo may need, and the margin.
    fn needed_with_undo(&self) -> u64 {
        self.bytes_needed
            .saturating_add(self.undo_bytes)
            .saturating_add(self.margin)
    }
    /// How many bytes are missing (0 when it fits).
    pub fn shortfall(&self) -> u64 {
        self.bytes_needed
            .saturating_add(self.margin)
            .saturating_sub(self.bytes_free)
    }

    /// Why a snapshot of these stores, taken under `server`, could not be restored: the stores
    /// only the server's own `--export` covers, when `server` cannot `--import` into a fresh
    /// store. Measured on the real 0.16.18 (RocksDB and SQLite; upstream issue #3273, since
    /// 0.16.15): every start of the binary, `--import` included, writes its node lease into
    /// the registry subspace `g` first (store/src/build/registry.rs), and the import refuses a
    /// subspace that already holds keys (common/src/manager/restore.rs), exit 1. Leaving `g`
    /// out keeps the lease but loses every registry primary key: logins fail (measured).
    pub fn unrestorable(&self, server: &crate::server::version::Version) -> Option<String> {
        let v = &server.0;
        let affected = v.major == 0 && v.minor == 16 && v.patch >= 15;
        let stores: Vec<String> = self
            .stores
            .iter()
            .filter(|p| p.method == StoreMethod::LogicalExport)
            .map(|p| format!("`{}` ({})", p.id, p.kind))
            .collect();
        (affected && !stores.is_empty()).then(|| {
            format!(
                "the store {} has no snapshot this helper could restore: its only method is the server's own `--export`, and {server} cannot `--import` that into a fresh store (upstream issue #3273, since 0.16.15), so a rollback would have no data to go back to; nothing was stopped. Back that store up with its own tools and upgrade by hand (upstream's UPGRADING), or wait for a release that fixes the import",
                stores.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(methods: &[StoreMethod]) -> SnapshotPlan {
        SnapshotPlan {
            root: "/var/lib/stalwart-upgrade/snapshots".into(),
            stores: methods
                .iter()
                .enumerate()
                .map(|(i, m)| StorePlan {
                    id: format!("s{i}"),
                    kind: "foundationdb".into(),
                    method: *m,
                    source: String::new(),
                    data_bytes: None,
                    bytes_needed: None,
                    note: String::new(),
                })
                .collect(),
            bytes_needed: 0,
            bytes_free: 0,
            margin: 0,
            unknown: vec![],
            undo_bytes: 0,
            undo_elsewhere: vec![],
            pinned_bytes: 0,
        }
    }

    #[test]
    fn tables_a_snapshot_will_pin_are_warned_about_when_they_could_not_be_held_once_more() {
        let mut p = plan(&[StoreMethod::RocksDbFiles]);
        p.bytes_free = 10 << 30;
        p.margin = 64 << 20;
        p.pinned_bytes = 4 << 30;
        assert!(p.pinned_warning().is_none(), "room for them");
        p.pinned_bytes = 12 << 30;
        let w = p.pinned_warning().expect("no room");
        assert!(w.contains("12.0 GiB") && w.contains("keep"), "{w}");
        p.pinned_bytes = 0;
        assert!(p.pinned_warning().is_none());
    }

    /// Upstream #3273: only 0.16.15 and later, and only stores the export alone covers.
    #[test]
    fn an_export_only_store_under_0_16_15_or_later_has_no_restorable_snapshot() {
        let v = |s: &str| s.parse::<crate::server::version::Version>().unwrap();
        let export = plan(&[StoreMethod::RocksDbFiles, StoreMethod::LogicalExport]);
        let why = export.unrestorable(&v("0.16.18")).expect("refused");
        assert!(
            why.contains("`s1` (foundationdb)") && why.contains("#3273"),
            "{why}"
        );
        assert!(!why.contains("`s0`"), "{why}");
        assert!(export.unrestorable(&v("0.16.15")).is_some());
        assert!(export.unrestorable(&v("0.16.14")).is_none());
        assert!(export.unrestorable(&v("0.15.5")).is_none());
        let files = plan(&[StoreMethod::RocksDbFiles, StoreMethod::SqliteFiles]);
        assert!(files.unrestorable(&v("0.16.18")).is_none());
    }
}
