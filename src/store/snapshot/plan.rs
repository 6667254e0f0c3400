//! What a snapshot would do and cost, checked before the server is stopped.

use super::methods::{methods, rocksdb_immutable, sql_source, sqlite_files};
use super::{
    fsops, human, pgclone, sql, SnapshotError, SnapshotPlan, Snapshots, StoreMethod, StorePlan,
};
use crate::os::fsutil::{Dir, Kind};
use crate::server::serverconfig::{ServerConfig, StoreKind};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

impl Snapshots {
    /// What a snapshot of `cfg` would do and cost; checked before the server is stopped.
    pub fn plan(&self, cfg: &ServerConfig) -> Result<SnapshotPlan, SnapshotError> {
        self.check_root_apart(cfg)?;
        let root_dev = fsops::device_of(&self.root);
        let mut stores = Vec::new();
        let mut undo_bytes = 0u64;
        let mut pinned_bytes = 0u64;
        // Per other file system: a directory on it, what an undo copies back there.
        let mut elsewhere: std::collections::BTreeMap<u64, (std::path::PathBuf, u64)> =
            Default::default();
        let mut undo_elsewhere_add = |path: &Path, bytes: u64| {
            if let Some(dev) = fsops::device_of(path) {
                let e = elsewhere
                    .entry(dev)
                    .or_insert_with(|| (path.to_path_buf(), 0));
                e.1 += bytes;
            }
        };
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
                    // The undo links the tables back and copies the rest; apart from the
                    // snapshots it copies everything back beside the data it keeps in place.
                    if same_fs {
                        undo_bytes += other;
                        pinned_bytes += linkable;
                    } else {
                        undo_elsewhere_add(path, linkable + other);
                    }
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
                        .map(|m| m.blocks() * 512)
                        .sum();
                    p.data_bytes = Some(size);
                    p.bytes_needed = Some(size);
                    // The restore copies the file back beside the one it sets aside.
                    if root_dev.is_some() && fsops::device_of(path) == root_dev {
                        undo_bytes += size;
                    } else {
                        undo_elsewhere_add(path.parent().unwrap_or(path), size);
                    }
                }
                (StoreKind::PostgreSql(c), _) => {
                    p.source = sql_source("postgresql", c);
                    let c = &self.conn_for(c);
                    let run_as = super::tool_identity(&cfg.path, None);
                    // A server the tools could not verify refuses the upgrade before the stop.
                    sql::check_trust(&s.id, c, run_as, true)?;
                    p.data_bytes = sql::pg_size(c, run_as);
                    if pgclone::possible(&s.id, c, run_as) {
                        // The copy is made inside the PostgreSQL server, on its disk.
                        p.method = StoreMethod::PgClone;
                        p.note = StoreMethod::PgClone.describe().to_string();
                        p.bytes_needed = Some(0);
                    } else {
                        // An uncompressed custom-format dump: about the database size; the
                        // undo dumps the live data once more before its destructive restore.
                        p.bytes_needed = p.data_bytes;
                        undo_bytes += p.data_bytes.unwrap_or(0);
                    }
                }
                (StoreKind::MySql(c), _) => {
                    p.source = sql_source("mysql", c);
                    let c = &self.conn_for(c);
                    let run_as = super::tool_identity(&cfg.path, None);
                    sql::check_trust(&s.id, c, run_as, false)?;
                    p.data_bytes = sql::mysql_size(c, run_as);
                    // Text dump: roughly the data size (hex-encoded blobs may double it); the
                    // undo dumps the live data once more before its restore.
                    p.bytes_needed = p.data_bytes;
                    // Why not before the stop, as PostgreSQL's clone is: a consistent online
                    // dump (--single-transaction) is easy, but an exact catch-up of what the
                    // server writes until the stop needs MariaDB's binary log (off by default,
                    // and the store's role cannot read it) or a change log Stalwart's tables do
                    // not keep; MariaDB has no clone of a database inside the server either.
                    p.note = format!(
                        "{}; taken inside the downtime: an online dump could not be caught up exactly to the stop without MariaDB's binary log",
                        p.note
                    );
                    undo_bytes += p.data_bytes.unwrap_or(0);
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
        let undo_elsewhere = elsewhere
            .into_values()
            .map(|(dir, need)| {
                let free = fsops::bytes_free(&dir).unwrap_or(0);
                (dir, need, free)
            })
            .collect();
        Ok(SnapshotPlan {
            root: self.root.clone(),
            bytes_free: fsops::bytes_free(&self.root)?,
            stores,
            bytes_needed,
            margin: 64 << 20,
            unknown,
            undo_bytes,
            undo_elsewhere,
            pinned_bytes,
        })
    }

    /// Why `plan` cannot go ahead for lack of space, if so: the snapshot itself does not fit
    /// (`space_advice`), or it does but what undoing the transaction may need does not
    /// (`undo_space_advice`). One answer for the upgrade and the rollback plans.
    pub fn space_refusal(&self, plan: &SnapshotPlan, protect: &[String]) -> Option<String> {
        if !plan.fits() {
            Some(self.space_advice(plan, protect))
        } else if !plan.fits_with_undo() {
            Some(self.undo_space_advice(plan, protect))
        } else {
            None
        }
    }

    /// A message for an admin when the snapshot fits but what undoing the upgrade may need
    /// does not (`fits_with_undo`): where, how much, and what a prune could free.
    pub fn undo_space_advice(&self, plan: &SnapshotPlan, protect: &[String]) -> String {
        let mut parts = Vec::new();
        let root_need = plan
            .bytes_needed
            .saturating_add(plan.undo_bytes)
            .saturating_add(plan.margin);
        if root_need > plan.bytes_free {
            parts.push(format!(
                "in {}: the snapshot takes {} and a rollback may need {} more (the copies a restore writes back, the dump of the live database before its restore), plus {} margin; {} free",
                plan.root.display(),
                human(plan.bytes_needed),
                human(plan.undo_bytes),
                human(plan.margin),
                human(plan.bytes_free)
            ));
        }
        for (dir, need, free) in plan
            .undo_elsewhere
            .iter()
            .filter(|(_, n, f)| n.saturating_add(plan.margin) > *f)
        {
            parts.push(format!(
                "in {}: a rollback would copy {} of data back there (plus {} margin), {} free",
                dir.display(),
                human(*need),
                human(plan.margin),
                human(*free)
            ));
        }
        let mut msg = format!(
            "not enough space to undo this upgrade if it fails ({})",
            parts.join("; ")
        );
        let candidates = self.prune_candidates(protect);
        if !candidates.is_empty() {
            msg.push_str("; `stalwart-upgrade snapshot prune` could free: ");
            msg.push_str(&candidates.join(", "));
        }
        msg
    }

    /// Snapshots a prune could remove (not `protect`ed, not set aside), with what each frees.
    fn prune_candidates(&self, protect: &[String]) -> Vec<String> {
        self.list()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| !protect.contains(&m.id))
            // Set-aside data is never offered: it is the only copy of what it holds.
            .filter(|m| !m.set_aside())
            .filter_map(|m| {
                self.reclaimable(&m.id)
                    .ok()
                    .map(|b| format!("{} ({})", m.id, human(b)))
            })
            .collect()
    }

    /// A message for an admin when `plan.fits()` is false: how much is missing and which
    /// snapshots (not in `protect`, not set aside) a prune would free.
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
        let candidates = self.prune_candidates(protect);
        if candidates.is_empty() {
            msg.push_str("; no snapshot can be pruned: free space on that file system");
        } else {
            msg.push_str("; `stalwart-upgrade snapshot prune` could free: ");
            msg.push_str(&candidates.join(", "));
        }
        msg
    }
}

/// Size of a tree, split into (immutable-and-linkable bytes, other bytes), in allocated blocks:
/// a copy of a sparse file costs what it holds, not its length. Estimates only (the server runs
/// while we look), walked through directory descriptors like the copy itself.
fn tree_bytes(dir: &Path, immutable: &dyn Fn(&str) -> bool) -> (u64, u64) {
    fn walk(d: &Dir, rel: &str, immutable: &dyn Fn(&str) -> bool, acc: &mut (u64, u64)) {
        for name in d.entries().unwrap_or_default() {
            let n = name.to_string_lossy();
            let r = if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            };
            match d.stat(&name) {
                Ok(Some(m)) if m.kind == Kind::Dir => {
                    if let Ok(sub) = d.open_dir(&name) {
                        walk(&sub, &r, immutable, acc);
                    }
                }
                Ok(Some(m)) if m.kind == Kind::File => {
                    if immutable(&r) {
                        acc.0 += m.allocated;
                    } else {
                        acc.1 += m.allocated;
                    }
                }
                _ => {}
            }
        }
    }
    let mut acc = (0, 0);
    if let Ok(d) = Dir::open(dir) {
        walk(&d, "", immutable, &mut acc);
    }
    acc
}
