//! Taking a snapshot, with the server stopped: each store by its method (`methods`), built in
//! `.partial-<id>` and renamed into place once complete.
//!
//! The stores' directories belong to the server's user: they are opened with no symlink on the
//! way and walked through descriptors (`fsops::copy_tree`), and what the snapshot records as the
//! place of each store (path, and the identity of the directory holding it) is what a restore
//! later writes to, whatever the config says by then.

use super::methods::{
    export_types, methods, rocksdb_immutable, sql_source, sqlite_names, trim_slash,
};
use super::{fsops, now, pgclone, sql, FileEntry, FileKind, How, Manifest, SnapshotError};
use super::{SnapshotMeta, CLONE_MARKER};
use super::{Snapshots, StoreMethod, StoreSnapshot, CONFIG_DIR, MANIFEST, PARTIAL_PREFIX};
use crate::os::fsutil::{Dir, Identity};
use crate::server::serverconfig::{ServerConfig, Store, StoreKind};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

impl Snapshots {
    /// Server stopped. The hard-linked files are hashed as they are linked (see `prehash`),
    /// from `known` where their inode is unchanged since it was pre-hashed; the private copies
    /// are hashed later (see `hash`).
    pub fn create_with(
        &self,
        cfg: &ServerConfig,
        meta: &SnapshotMeta,
        known: &super::prehash::PreHash,
    ) -> Result<Manifest, SnapshotError> {
        let started = std::time::Instant::now();
        self.check_root_apart(cfg)?;
        let root = fsops::open_private_dir(&self.root)?;
        for s in &cfg.stores {
            if !super::is_safe_store_id(&s.id) {
                return Err(SnapshotError::UnsafeStoreId { id: s.id.clone() });
            }
        }
        // Leftovers of an interrupted create are never usable: clear them.
        self.drop_partial_clones(cfg);
        self.remove_partials()?;

        let seq = self.next_seq()?;
        let (ms, stamp, created_at) = now();
        let id = self.free_id(&stamp, &meta.server_version.to_string());
        let partial = format!("{PARTIAL_PREFIX}{id}");
        let tmp = root.create_dir(&partial, 0o700)?;

        let (stores, warnings) = match self.create_in(&tmp, &id, cfg, meta, known) {
            Ok(x) => x,
            Err((store, e)) => {
                // Nothing of the live data was touched: only our partial snapshot goes, with the
                // clone database another store may have got already.
                self.drop_partial_clones(cfg);
                let _ = root.remove_tree(&partial);
                return Err(no_space_or(e, &self.root, &store));
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
            config_format: cfg.format,
            stores,
            create_seconds: started.elapsed().as_secs_f64(),
            hashed_at: None,
            warnings,
            config_copy: copy_config(&tmp, &cfg.path),
            config_reader: Some(cfg.reader.clone()),
            origin: None,
        };
        if let Err(e) = Self::finish(&root, &tmp, &partial, &manifest) {
            self.drop_partial_clones(cfg);
            let _ = root.remove_tree(&partial);
            return Err(no_space_or(e, &self.root, "manifest"));
        }
        tracing::info!(snapshot = %id, seconds = manifest.create_seconds, "snapshot created");
        // What was copied before the stop is in the snapshot now (or was not needed).
        let _ = root.remove_tree(format!(
            "{}{}",
            super::precopy::PRECOPY_PREFIX,
            std::process::id()
        ));
        Ok(manifest)
    }

    /// One syncfs makes every link, copy and directory durable before the manifest says the
    /// snapshot is complete; then the rename makes it visible.
    pub(super) fn finish(
        root: &Dir,
        tmp: &Dir,
        partial: &str,
        manifest: &Manifest,
    ) -> Result<(), SnapshotError> {
        tmp.syncfs()?;
        let data = serde_json::to_vec_pretty(manifest).map_err(|e| SnapshotError::Manifest {
            path: tmp.path().join(MANIFEST),
            message: e.to_string(),
        })?;
        tmp.write_atomic(MANIFEST, &data, 0o600, None)?;
        root.rename_noreplace(partial, root, &manifest.id)?;
        root.fsync()?;
        Ok(())
    }

    /// An id `<stamp>-<version>` no snapshot has yet.
    pub(super) fn free_id(&self, stamp: &str, version: &str) -> String {
        let mut id = format!("{stamp}-{version}");
        let mut n = 1;
        while std::fs::symlink_metadata(self.root.join(&id)).is_ok() {
            n += 1;
            id = format!("{stamp}-{version}-{n}");
        }
        id
    }

    /// [`Snapshots::create_with`] without pre-hashes: every linked file is hashed now.
    pub fn create(
        &self,
        cfg: &ServerConfig,
        meta: &SnapshotMeta,
    ) -> Result<Manifest, SnapshotError> {
        self.create_with(cfg, meta, &super::prehash::PreHash::default())
    }

    #[allow(clippy::type_complexity)]
    fn create_in(
        &self,
        tmp: &Dir,
        id: &str,
        cfg: &ServerConfig,
        meta: &SnapshotMeta,
        known: &super::prehash::PreHash,
    ) -> Result<(Vec<StoreSnapshot>, Vec<String>), (String, SnapshotError)> {
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        for (store, (method, covered_by)) in cfg.stores.iter().zip(methods(&cfg.stores)) {
            let fail = |e: SnapshotError| (store.id.clone(), e);
            let mut snap = StoreSnapshot {
                id: store.id.clone(),
                kind: store.kind.type_name().to_string(),
                roles: store.roles.clone(),
                method,
                logical_export: method == StoreMethod::LogicalExport,
                source: String::new(),
                source_parent: None,
                source_identity: None,
                covered_by,
                files: Vec::new(),
                hashed: false,
                clone_db: None,
            };
            let name = OsStr::new(&store.id);
            let _progress = crate::os::progress::bytes(&format!("snapshot {}", store.id), 0);
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
                    let path = trim_slash(path);
                    snap.source = path.display().to_string();
                    let (parent, src) = open_store_dir(store, &path).map_err(fail)?;
                    snap.source_parent = Some(parent);
                    snap.source_identity = Some(src.meta().map_err(|e| fail(e.into()))?.id);
                    let is_rocks = matches!(store.kind, StoreKind::RocksDb { .. });
                    // See the module comment of `snapshot` for why these files can be shared
                    // with the live data (copy_tree links only on the same file system).
                    let link = move |rel: &str| !is_rocks || rocksdb_immutable(rel);
                    let how = fsops::TreeCopy {
                        link: &link,
                        owner: None,
                        hash_links: Some(known),
                    };
                    let (files, _) =
                        fsops::copy_tree(&src, tmp, name, &how, &mut warnings).map_err(fail)?;
                    snap.files = files;
                }
                (StoreKind::Sqlite { path }, _) => {
                    snap.source = path.display().to_string();
                    let (files, parent, ident) =
                        snapshot_sqlite(store, path, tmp, name, known).map_err(fail)?;
                    snap.files = files;
                    snap.source_parent = Some(parent);
                    snap.source_identity = Some(ident);
                }
                (StoreKind::PostgreSql(conn), _) | (StoreKind::MySql(conn), _) => {
                    let pg = matches!(store.kind, StoreKind::PostgreSql(_));
                    snap.source = sql_source(if pg { "postgresql" } else { "mysql" }, conn);
                    let conn = &self.conn_for(conn);
                    let dst = tmp.create_dir(name, 0o700).map_err(|e| fail(e.into()))?;
                    let run_as = super::tool_identity(&cfg.path, None);
                    if pg {
                        if let Some(c) = clone_pg(&store.id, conn, run_as, id, &dst, &mut warnings)
                        {
                            snap.method = StoreMethod::PgClone;
                            snap.clone_db = Some(c);
                            out.push(snap);
                            continue;
                        }
                    }
                    let file = if pg { "dump.pgcustom" } else { "dump.sql" };
                    let mut out = dst.create_file(file, 0o600).map_err(|e| fail(e.into()))?;
                    let r = if pg {
                        sql::pg_dump(&store.id, conn, run_as, &mut out)
                    } else {
                        sql::mysql_dump(&store.id, conn, run_as, &mut out)
                    };
                    r.map_err(fail)?;
                    snap.files = tool_files(&dst).map_err(fail)?;
                }
                (StoreKind::Other { .. }, _) => {
                    snap.source = format!("{} --export", meta.server_binary.display());
                    let program = crate::os::child::Program::open(&meta.server_binary)
                        .map_err(|e| fail(e.into()))?;
                    let run_as = super::tool_identity(&cfg.path, Some(&program));
                    sql::server_export_import(
                        &store.id,
                        &program,
                        &cfg.path,
                        sql::Direction::Export,
                        (tmp, name),
                        export_types(&cfg.stores),
                        run_as,
                    )
                    .map_err(fail)?;
                    let dst = tmp.open_dir(name).map_err(|e| fail(e.into()))?;
                    snap.files = tool_files(&dst).map_err(fail)?;
                    warnings.push(format!(
                        "store \"{}\" ({}) was snapshotted with a logical export (--export); a \
                         restore imports it with --import of the old server",
                        store.id,
                        store.kind.type_name()
                    ));
                }
            }
            out.push(snap);
        }
        Ok((out, warnings))
    }

    /// The snapshot root must not lie inside a store's directory (the snapshot would copy
    /// itself, and a restore would swap the snapshots away), nor a store inside the root.
    pub(super) fn check_root_apart(&self, cfg: &ServerConfig) -> Result<(), SnapshotError> {
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
}

fn no_space_or(e: SnapshotError, root: &Path, store: &str) -> SnapshotError {
    if e.is_no_space() {
        SnapshotError::NoSpace {
            root: root.to_owned(),
            store: store.to_string(),
        }
    } else {
        e
    }
}

/// The directory of a file-based store, opened through its parent: (identity of the parent,
/// the directory).
pub(super) fn open_store_dir(store: &Store, path: &Path) -> Result<(Identity, Dir), SnapshotError> {
    let bad = |message: String| SnapshotError::BadStorePath {
        store: store.id.clone(),
        message,
    };
    let (parent, name) = Dir::open_parent(path).map_err(|e| bad(e.to_string()))?;
    let dir = parent.open_dir(&name).map_err(|_| {
        bad(format!(
            "{} is not a directory (a symlink to the data directory is not followed: point the \
             config at the real directory)",
            path.display()
        ))
    })?;
    Ok((parent.meta()?.id, dir))
}

/// SQLite: the db file is written in place -> private copies of it and its -wal/-shm/-journal,
/// read through the directory holding them (no symlink followed).
fn snapshot_sqlite(
    store: &Store,
    db: &Path,
    tmp: &Dir,
    name: &OsStr,
    known: &super::prehash::PreHash,
) -> Result<(Vec<FileEntry>, Identity, Identity), SnapshotError> {
    let bad = |message: String| SnapshotError::BadStorePath {
        store: store.id.clone(),
        message,
    };
    let (parent, db_name) = Dir::open_parent(db).map_err(|e| bad(e.to_string()))?;
    let db_meta = match parent.stat(&db_name)? {
        Some(m) if m.kind == crate::os::fsutil::Kind::File => m,
        _ => {
            return Err(bad(format!(
                "the SQLite database {} is not a regular file (symlinks are not followed)",
                db.display()
            )))
        }
    };
    let dst = tmp.create_dir(name, 0o700)?;
    let mut files = Vec::new();
    for n in sqlite_names(&db_name) {
        match parent.stat(&n)? {
            Some(m) if m.kind == crate::os::fsutil::Kind::File => {}
            _ => continue,
        }
        let (f, m) = parent.open_file(&n)?;
        // SQLite rewrites pages of these files in place: a private copy, never a link; of the
        // database itself, the copy made before the stop, brought up to date (`precopy`).
        let how = match known.precopy(&m).filter(|_| n == db_name) {
            Some(pre) => {
                let done = super::precopy::catch_up(pre, &f, &m, &dst, &n)?;
                tracing::info!(store = %store.id, blocks = done.blocks, rewritten = done.rewritten, "SQLite database brought up to date from its copy made before the stop");
                How::PreCopied
            }
            None => fsops::copy_file_into(&f, &m, &dst, &n, None)?,
        };
        files.push(fsops::entry(
            &n.to_string_lossy(),
            FileKind::File,
            &m,
            None,
            Some(how),
        ));
    }
    Ok((files, parent.meta()?.id, db_meta.id))
}

/// A copy of the server config with its owner and mode, read through its directory. Best
/// effort: a config we cannot copy is no reason to refuse the data snapshot (it was read a
/// moment ago), but a restore of SQL stores then cannot take the connection from it.
fn copy_config(tmp: &Dir, config: &Path) -> Option<String> {
    let (parent, name) = Dir::open_parent(config).ok()?;
    let (f, m) = parent.open_file(&name).ok()?;
    let dir = tmp.create_dir(CONFIG_DIR, 0o700).ok()?;
    match fsops::copy_file_into(&f, &m, &dir, &name, None) {
        Ok(_) => Some(format!("{CONFIG_DIR}/{}", name.to_string_lossy())),
        Err(e) => {
            tracing::warn!("could not keep a copy of the server config: {e}");
            None
        }
    }
}

/// The snapshot's clone database of a PostgreSQL store, where the store's role may make one
/// (see `pgclone`); None: dump it. The clone's name is written into the partial snapshot first,
/// so a create killed half way leaves nothing unnamed behind (`drop_partial_clones`).
fn clone_pg(
    store: &str,
    conn: &crate::server::serverconfig::SqlConn,
    run_as: sql::RunAs,
    id: &str,
    dst: &Dir,
    warnings: &mut Vec<String>,
) -> Option<super::CloneDb> {
    if !pgclone::possible(store, conn, run_as) {
        return None;
    }
    let name = pgclone::snapshot_name(&conn.database, id, store);
    if let Err(e) = dst.write_atomic(CLONE_MARKER, name.as_bytes(), 0o600, None) {
        tracing::warn!("store \"{store}\": cannot record the clone's name, dumping: {e}");
        return None;
    }
    match pgclone::create(store, conn, run_as, &name) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = dst.remove_file(CLONE_MARKER);
            warnings.push(format!(
                "store \"{store}\": the clone database could not be made ({e}); it was dumped \
                 with pg_dump instead"
            ));
            None
        }
    }
}

impl Snapshots {
    /// Clone databases that interrupted creates made: their partial snapshots name them, and
    /// are about to be removed. Best effort (a database that cannot be dropped now is named in
    /// the log).
    pub(super) fn drop_partial_clones(&self, cfg: &ServerConfig) {
        let Ok(root) = fsops::open_private_dir(&self.root) else {
            return;
        };
        let run_as = super::tool_identity(&cfg.path, None);
        for partial in root.entries().unwrap_or_default() {
            if !partial.to_string_lossy().starts_with(PARTIAL_PREFIX) {
                continue;
            }
            for store in &cfg.stores {
                let StoreKind::PostgreSql(conn) = &store.kind else {
                    continue;
                };
                let Ok(dir) = root.open_dir(&partial).and_then(|d| d.open_dir(&store.id)) else {
                    continue;
                };
                let Ok(text) = dir.read_file(CLONE_MARKER, 256) else {
                    continue;
                };
                let name = String::from_utf8_lossy(&text).to_string();
                match pgclone::drop_db(&store.id, &self.conn_for(conn), run_as, &name) {
                    Ok(()) => {
                        let _ = dir.remove_file(CLONE_MARKER);
                    }
                    Err(e) => tracing::warn!(
                        "the clone database {name} of an interrupted snapshot could not be \
                         dropped: {e}; drop it with DROP DATABASE"
                    ),
                }
            }
        }
    }
}

/// Files a dump/export tool wrote into `dir` (ours, root-only).
pub(super) fn tool_files(dir: &Dir) -> Result<Vec<FileEntry>, SnapshotError> {
    Ok(fsops::list_tree(dir)?
        .into_iter()
        .filter(|e| e.path != ".")
        .map(|mut e| {
            if e.kind == FileKind::File {
                e.how = Some(How::Tool);
            }
            e
        })
        .collect())
}
