//! How each store is snapshotted: the method per store type, stores covered by another's
//! snapshot, and which files of a RocksDB directory are immutable.

use super::StoreMethod;
use crate::server::serverconfig::{SqlConn, Store, StoreKind};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Is this (relative) file name of a RocksDB directory immutable once written? Table files
/// (`NNNNNN.sst`) and blob files (`NNNNNN.blob`) are; everything else is copied.
pub fn rocksdb_immutable(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.ends_with(".sst") || name.ends_with(".blob")
}

pub(super) fn sql_source(scheme: &str, c: &SqlConn) -> String {
    let user = c
        .user
        .as_deref()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let port = c.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{user}{}{port}/{}", c.host, c.database)
}

pub(super) fn trim_slash(p: &Path) -> PathBuf {
    p.components().collect()
}

/// Stores whose directory lies inside another file store's directory are covered by it (one
/// copy, one restore). Returns, per store, the id of the covering store.
pub(super) fn covering(stores: &[Store]) -> Vec<Option<String>> {
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
pub(super) fn method_of(kind: &StoreKind) -> StoreMethod {
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
pub(super) fn methods(stores: &[Store]) -> Vec<(StoreMethod, Option<String>)> {
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
pub(super) fn export_types(stores: &[Store]) -> Option<&'static str> {
    let logical: Vec<&Store> = stores
        .iter()
        .filter(|s| matches!(s.kind, StoreKind::Other { .. }))
        .collect();
    (!logical.is_empty() && logical.iter().all(|s| s.roles.iter().all(|r| r == "blob")))
        .then_some("blob")
}

/// SQLite files that belong together, as names in the database's directory: the db and its
/// -wal, -shm and rollback -journal.
pub(super) fn sqlite_names(db_name: &std::ffi::OsStr) -> Vec<OsString> {
    let mut out = vec![db_name.to_owned()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut s = db_name.to_owned();
        s.push(suffix);
        out.push(s);
    }
    out
}

/// The same as paths (for size estimates).
pub(super) fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    let dir = db.parent().unwrap_or(Path::new("/"));
    match db.file_name() {
        Some(n) => sqlite_names(n).into_iter().map(|n| dir.join(n)).collect(),
        None => Vec::new(),
    }
}
