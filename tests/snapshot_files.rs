//! Snapshots of file-based stores (RocksDB-like dir, SQLite, fs blobs), on the host, as root.

use stalwart_upgrade::server::serverconfig::ServerConfig;
use stalwart_upgrade::store::snapshot::{
    FileKind, How, SnapshotError, SnapshotMeta, Snapshots, StoreMethod,
};

/// What a restore does with the data it replaces: kept as a snapshot (the helper's default).
fn keep() -> stalwart_upgrade::store::snapshot::Displaced {
    stalwart_upgrade::store::snapshot::Displaced::Keep {
        origin: "replaced by a test restore".into(),
        version: "0.15.6".parse().unwrap(),
    }
}
use stalwart_upgrade::server::version::Version;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        server_version: "0.15.5".parse().unwrap(),
        target_version: Some("0.16.18".parse::<Version>().unwrap()),
        class: None,
        server_binary: PathBuf::from("/nonexistent/stalwart"),
    }
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn sha(p: &Path) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// path -> (kind, sha or link target, mode, uid, gid) of every entry below `dir`.
fn inventory(dir: &Path) -> BTreeMap<String, (String, String, u32, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = p.symlink_metadata().unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            let (kind, content) = if m.file_type().is_symlink() {
                (
                    "link",
                    std::fs::read_link(&p).unwrap().display().to_string(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir", String::new())
            } else {
                ("file", sha(&p))
            };
            out.insert(
                rel,
                (kind.into(), content, m.mode() & 0o7777, m.uid(), m.gid()),
            );
        }
    }
    out
}

fn ino(p: &Path) -> u64 {
    p.symlink_metadata().unwrap().ino()
}

fn toml_cfg(dir: &Path, text: &str) -> ServerConfig {
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    ServerConfig::load(&p).unwrap()
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn snaps(&self) -> Snapshots {
        Snapshots::new(&self.path("snapshots"))
    }
}

/// A RocksDB-looking directory owned by uid/gid 4242 (as the server's user would own it).
fn make_rocksdb(dir: &Path) {
    for (name, size) in [
        ("000010.sst", 300_000usize),
        ("000011.sst", 5_000),
        ("blobs/000012.blob", 70_000),
        ("MANIFEST-000005", 1_000),
        ("CURRENT", 16),
        ("OPTIONS-000007", 4_000),
        ("000004.log", 20_000),
        ("LOCK", 0),
        ("IDENTITY", 36),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + name.len()) as u8).collect();
        write(&dir.join(name), &data);
    }
    std::os::unix::fs::symlink("000010.sst", dir.join("latest.sst")).unwrap();
    let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(4242), Some(4242)).unwrap();
    for e in [
        "",
        "000010.sst",
        "000011.sst",
        "blobs",
        "blobs/000012.blob",
        "MANIFEST-000005",
        "CURRENT",
        "latest.sst",
    ] {
        chown(&dir.join(e));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(dir.join("CURRENT"), std::fs::Permissions::from_mode(0o640)).unwrap();
}

#[test]
fn rocksdb_links_immutable_copies_mutable_and_restores() {
    let fx = Fixture::new();
    let data = fx.path("opt/stalwart/data");
    make_rocksdb(&data);
    let original = inventory(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "[storage]\ndata = \"rocksdb\"\nblob = \"rocksdb\"\n[store.rocksdb]\ntype = \"rocksdb\"\npath = \"{}/\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let plan = snaps.plan(&cfg).unwrap();
    assert_eq!(plan.stores[0].method, StoreMethod::RocksDbFiles);
    // Only the mutable files need space (the .sst/.blob files are linked), counted in the
    // blocks they take (a copy of a sparse file takes what it holds, not its length).
    let blocks = |names: &[&str]| -> u64 {
        names
            .iter()
            .map(|n| std::fs::metadata(data.join(n)).unwrap().blocks() * 512)
            .sum()
    };
    assert_eq!(
        plan.stores[0].bytes_needed,
        Some(blocks(&[
            "MANIFEST-000005",
            "CURRENT",
            "OPTIONS-000007",
            "000004.log",
            "IDENTITY"
        ]))
    );
    assert!(plan.fits());
    // The linked tables are what the snapshot pins once the new version compacts them.
    assert_eq!(
        plan.pinned_bytes,
        blocks(&["000010.sst", "000011.sst", "blobs/000012.blob"])
    );

    let m = snaps.create(&cfg, &meta()).unwrap();
    assert!(m.id.ends_with("-0.15.5"), "{}", m.id);
    assert_eq!(m.id.len(), "20261128T120000Z-0.15.5".len());
    let root_mode = std::fs::metadata(&snaps.root).unwrap().mode() & 0o777;
    assert_eq!(root_mode, 0o700);
    let sdir = snaps.root.join(&m.id);
    assert_eq!(std::fs::metadata(&sdir).unwrap().mode() & 0o777, 0o700);
    let store = sdir.join("rocksdb");
    for f in ["000010.sst", "000011.sst", "blobs/000012.blob"] {
        assert_eq!(
            ino(&data.join(f)),
            ino(&store.join(f)),
            "{f} should be a hard link"
        );
    }
    for f in [
        "MANIFEST-000005",
        "CURRENT",
        "OPTIONS-000007",
        "000004.log",
        "LOCK",
        "IDENTITY",
    ] {
        assert_ne!(
            ino(&data.join(f)),
            ino(&store.join(f)),
            "{f} should be a copy"
        );
    }
    assert!(store
        .join("latest.sst")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        inventory(&store),
        original,
        "snapshot differs from the data"
    );
    let s = &m.stores[0];
    // Linked files are hashed as they are linked; the private copies only later (`hash`).
    assert!(!s.hashed);
    for f in s.files.iter().filter(|f| f.kind == FileKind::File) {
        assert_eq!(
            f.sha256.is_some(),
            f.how == Some(How::HardLink),
            "{}: {f:?}",
            f.path
        );
    }
    let entry = |p: &str| s.files.iter().find(|f| f.path == p).unwrap();
    assert_eq!(entry("000010.sst").how, Some(How::HardLink));
    assert!(matches!(
        entry("CURRENT").how,
        Some(How::Reflink | How::CopyFileRange | How::Copy)
    ));
    assert_eq!((entry("CURRENT").mode, entry("CURRENT").uid), (0o640, 4242));
    assert_eq!(entry("latest.sst").kind, FileKind::Symlink);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.config_copy.as_deref(), Some(".server-config/config.toml"));
    assert_eq!(
        sha(&sdir.join(".server-config/config.toml")),
        sha(&fx.path("config.toml"))
    );

    // hash after the fact; verify is clean.
    let hm = snaps.hash(&m.id).unwrap();
    assert!(hm.hashed());
    assert_eq!(
        hm.stores[0]
            .files
            .iter()
            .find(|f| f.path == "000010.sst")
            .unwrap()
            .sha256
            .as_deref(),
        Some(original["000010.sst"].1.as_str())
    );
    let report = snaps.verify(&m.id).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.files_checked, 9);

    // The "new server" compacts, rewrites mutable files, adds files and changes modes.
    std::fs::remove_file(data.join("000010.sst")).unwrap();
    write(&data.join("000099.sst"), b"new table");
    write(
        &data.join("MANIFEST-000005"),
        b"rewritten by a newer version",
    );
    std::fs::write(data.join("CURRENT"), b"MANIFEST-000100\n").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();

    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(
        inventory(&data),
        original,
        "restored data differs from the original"
    );
    let dmeta = std::fs::metadata(&data).unwrap();
    assert_eq!(
        (dmeta.mode() & 0o7777, dmeta.uid(), dmeta.gid()),
        (0o750, 4242, 4242)
    );
    // No staging or displaced directory left next to the data.
    let siblings: Vec<_> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(siblings, vec!["data".to_string()]);
    // The snapshot survives its restore and still verifies.
    assert!(snaps.verify(&m.id).unwrap().ok());

    // A second restore after the data dir was deleted entirely.
    std::fs::remove_dir_all(&data).unwrap();
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(inventory(&data), original);
}

#[test]
fn verify_detects_modified_and_missing_files() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let m = snaps.create(&cfg, &meta()).unwrap();
    // Before hashing every copied file is reported unhashed (the 3 linked ones are hashed).
    let r = snaps.verify(&m.id).unwrap();
    assert!(
        !r.ok() && r.unhashed.len() == 6 && r.files_checked == 3,
        "{r:?}"
    );
    snaps.hash(&m.id).unwrap();
    let store = snaps.root.join(&m.id).join("r");
    std::fs::write(store.join("OPTIONS-000007"), b"tampered").unwrap();
    std::fs::remove_file(store.join("000011.sst")).unwrap();
    let r = snaps.verify(&m.id).unwrap();
    assert_eq!(r.mismatched, vec!["r/OPTIONS-000007".to_string()]);
    assert_eq!(r.missing, vec!["r/000011.sst".to_string()]);
    assert!(!r.ok());
    // A snapshot with a missing file is refused for restore, before anything is touched.
    let before = inventory(&data);
    let err = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap_err();
    assert!(matches!(err, SnapshotError::Incomplete { .. }), "{err}");
    assert_eq!(inventory(&data), before);
}

#[test]
fn sqlite_files_are_copied_and_restored_without_stale_wal() {
    let fx = Fixture::new();
    let db = fx.path("var/db/stalwart.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);")
        .output();
    if !matches!(&out, Ok(o) if o.status.success()) {
        // No sqlite3 CLI: an SQLite-like file is enough for the file-level behaviour.
        write(&db, &vec![7u8; 100_000]);
    }
    write(
        &PathBuf::from(format!("{}-wal", db.display())),
        b"wal frames",
    );
    std::os::unix::fs::chown(&db, Some(4242), Some(4242)).unwrap();
    let original = inventory(db.parent().unwrap());
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"sq\"\nstore.sq.type = \"sqlite\"\nstore.sq.path = \"{}\"\n",
            db.display()
        ),
    );
    let snaps = fx.snaps();
    assert_eq!(
        snaps.plan(&cfg).unwrap().stores[0].method,
        StoreMethod::SqliteFiles
    );
    let m = snaps.create(&cfg, &meta()).unwrap();
    let names: Vec<&str> = m.stores[0].files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, vec!["stalwart.db", "stalwart.db-wal"]);
    let store = snaps.root.join(&m.id).join("sq");
    assert_ne!(
        ino(&db),
        ino(&store.join("stalwart.db")),
        "SQLite must be copied, not linked"
    );
    assert_eq!(sha(&db), sha(&store.join("stalwart.db")));

    // Newer server: rewrites the db, leaves a WAL and SHM the snapshot never had.
    write(&db, b"newer schema");
    write(
        &PathBuf::from(format!("{}-wal", db.display())),
        b"newer wal",
    );
    write(&PathBuf::from(format!("{}-shm", db.display())), b"shm");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(inventory(db.parent().unwrap()), original);
}

#[test]
fn fs_blob_store_is_hard_linked_and_restored() {
    let fx = Fixture::new();
    let blobs = fx.path("blobs");
    for i in 0..20u8 {
        write(
            &blobs.join(format!("{:02x}/{:02x}blob", i % 4, i)),
            &vec![i; 1000 + i as usize],
        );
    }
    let original = inventory(&blobs);
    let rocks = fx.path("rocks");
    make_rocksdb(&rocks);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "[storage]\ndata = \"r\"\nblob = \"b\"\n[store.r]\ntype = \"rocksdb\"\npath = \"{}\"\n[store.b]\ntype = \"fs\"\npath = \"{}\"\n",
            rocks.display(),
            blobs.display()
        ),
    );
    let snaps = fx.snaps();
    let m = snaps.create(&cfg, &meta()).unwrap();
    let s = m.stores.iter().find(|s| s.id == "b").unwrap();
    assert_eq!(s.method, StoreMethod::FsFiles);
    assert!(s
        .files
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .all(|f| f.how == Some(How::HardLink)));
    assert_eq!(
        ino(&blobs.join("00/00blob")),
        ino(&snaps.root.join(&m.id).join("b/00/00blob"))
    );
    std::fs::remove_dir_all(blobs.join("01")).unwrap();
    write(&blobs.join("ff/new"), b"x");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(inventory(&blobs), original);
}

/// A RocksDB store and four snapshots of it, oldest first.
fn four_rocksdb_snapshots() -> (Fixture, Snapshots, Vec<String>) {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let ids: Vec<String> = (0..4)
        .map(|_| snaps.create(&cfg, &meta()).unwrap().id)
        .collect();
    (fx, snaps, ids)
}

/// Issue #25: a snapshot that cannot be removed (here its manifest is immutable, as a file the
/// disk refuses to unlink) does not stop the pruning of the others; it is reported by id.
#[test]
fn prune_goes_past_a_snapshot_it_cannot_remove() {
    let (fx, snaps, ids) = four_rocksdb_snapshots();
    let stuck = fx.path("snapshots").join(&ids[1]).join("manifest.json");
    assert!(stuck.exists(), "{}", stuck.display());
    let chattr = |flag: &str| {
        let o = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&stuck)
            .output()
            .expect("chattr");
        assert!(o.status.success(), "chattr {flag}: {o:?}");
    };
    chattr("+i");
    let pruned = snaps.prune(1, &[], false);
    chattr("-i");
    let pruned = pruned.unwrap();
    let gone: Vec<&str> = pruned.gone.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(gone, [ids[0].as_str(), ids[2].as_str()]);
    assert_eq!(pruned.failed.len(), 1, "{:?}", pruned.failed);
    assert_eq!(pruned.failed[0].0, ids[1]);
    let left: Vec<String> = snaps.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(left, vec![ids[1].clone(), ids[3].clone()]);
}

#[test]
fn prune_keeps_newest_and_protected() {
    let (_fx, snaps, ids) = four_rocksdb_snapshots();
    let listed: Vec<String> = snaps.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, ids, "list is oldest first");
    let dry = snaps.prune(1, &[ids[0].clone()], true).unwrap().gone;
    assert_eq!(
        dry.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![ids[1].clone(), ids[2].clone()]
    );
    assert_eq!(snaps.list().unwrap().len(), 4, "dry run removes nothing");
    let gone = snaps.prune(1, &[ids[0].clone()], false).unwrap();
    assert_eq!(gone.gone.len(), 2);
    assert!(gone.failed.is_empty(), "{:?}", gone.failed);
    let left: Vec<String> = snaps.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(left, vec![ids[0].clone(), ids[3].clone()]);
    // keep = 0 still never removes a protected one.
    snaps.prune(0, &[ids[3].clone()], false).unwrap();
    let left: Vec<String> = snaps.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(left, vec![ids[3].clone()]);
    snaps.remove(&ids[3]).unwrap();
    assert!(snaps.list().unwrap().is_empty());
    assert!(matches!(
        snaps.get(&ids[3]),
        Err(SnapshotError::NotFound { .. })
    ));
    assert!(matches!(
        snaps.get("../etc"),
        Err(SnapshotError::InvalidId { .. })
    ));
}

/// Issue #24: a rollback snapshots the data the newer version ran on, then restores the older
/// snapshot and deletes the displaced tree as a proven duplicate of that new snapshot, which is
/// then the only copy of the mail the newer version took. It must become set-aside data: never
/// pruned by count, never offered to free space, named with its size and removal command.
#[test]
fn a_snapshot_that_became_the_only_copy_of_displaced_data_is_set_aside() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let before = snaps.create(&cfg, &meta()).unwrap();
    // The newer version takes mail, then the rollback snapshots that data (server stopped).
    write(&data.join("000013.sst"), b"mail the newer version took");
    let newer = inventory(&data);
    let taken = snaps
        .create(
            &cfg,
            &SnapshotMeta {
                server_version: "0.16.1".parse().unwrap(),
                ..meta()
            },
        )
        .unwrap();
    assert!(!taken.set_aside());
    let restored = snaps
        .restore(
            &before.id,
            Some(&cfg),
            &stalwart_upgrade::store::snapshot::Displaced::Discard {
                covered_by: taken.id.clone(),
                origin: "the data 0.16.1 ran on, replaced by rollback tx-1".into(),
                version: "0.16.1".parse().unwrap(),
            },
        )
        .unwrap();
    assert_eq!(restored.kept, None, "the displaced tree was a duplicate");
    assert!(!data.join("000013.sst").exists(), "the older data is back");
    let m = snaps.get(&taken.id).unwrap();
    assert!(m.set_aside(), "{:?}", m.origin);
    assert!(m.origin.as_deref().unwrap().contains("tx-1"));

    // Five more snapshots with keep = 1: the set-aside one stays, the plain older one goes.
    for _ in 0..5 {
        snaps.create(&cfg, &meta()).unwrap();
    }
    snaps.prune(1, &[], false).unwrap();
    let left: Vec<String> = snaps.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0], taken.id);
    assert!(!left.contains(&before.id));
    // Named, with its size and how to remove it; never offered to free space.
    let aside = snaps.set_aside().unwrap();
    assert_eq!(aside.len(), 1);
    let line = aside[0].describe(Some(&"0.15.5".parse().unwrap()));
    assert!(
        line.contains(&taken.id)
            && line.contains("KiB")
            && line.contains(&format!("stalwart-upgrade snapshot remove {}", taken.id))
            && line.contains("run 0.16.1 again first"),
        "{line}"
    );
    let plan = stalwart_upgrade::store::snapshot::SnapshotPlan {
        root: snaps.root.clone(),
        stores: vec![],
        bytes_needed: u64::MAX / 4,
        bytes_free: 0,
        margin: 0,
        unknown: vec![],
        undo_bytes: 0,
        undo_elsewhere: vec![],
        pinned_bytes: 0,
    };
    let advice = snaps.space_advice(&plan, &[]);
    assert!(!advice.contains(&taken.id), "{advice}");
    let advice = snaps.undo_space_advice(&plan, &[]);
    assert!(!advice.contains(&taken.id), "{advice}");
    // It still restores: the mail the newer version took comes back.
    snaps.restore(&taken.id, Some(&cfg), &keep()).unwrap();
    let mut back = inventory(&data);
    let mut want = newer.clone();
    // The restore's own bookkeeping aside, the tree is the one the newer version left.
    back.retain(|k, _| !k.starts_with('.'));
    want.retain(|k, _| !k.starts_with('.'));
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read(data.join("000013.sst")).unwrap(),
        b"mail the newer version took"
    );
    // Only removal by name deletes it.
    snaps.remove(&taken.id).unwrap();
    assert!(snaps.get(&taken.id).is_err());
}

#[test]
fn symlink_out_of_the_data_dir_is_not_followed() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let secret = fx.path("outside/secret.sst");
    write(&secret, b"not part of the store");
    std::os::unix::fs::symlink(&secret, data.join("escape.sst")).unwrap();
    std::os::unix::fs::symlink("../outside", data.join("escape-dir")).unwrap();
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let m = snaps.create(&cfg, &meta()).unwrap();
    let store = snaps.root.join(&m.id).join("r");
    for l in ["escape.sst", "escape-dir"] {
        let md = store.join(l).symlink_metadata().unwrap();
        assert!(md.file_type().is_symlink(), "{l} must stay a symlink");
    }
    assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
    assert!(m.warnings[0].contains("outside"), "{:?}", m.warnings);
    // Nothing of the outside content is in the snapshot.
    assert!(!m.stores[0]
        .files
        .iter()
        .any(|f| f.path.starts_with("escape-dir/")));
    assert_ne!(ino(&secret), ino(&store.join("escape.sst")));

    // A data dir that is itself a symlink is refused (not followed).
    let link_dir = fx.path("datalink");
    std::os::unix::fs::symlink(&data, &link_dir).unwrap();
    let cfg2 = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            link_dir.display()
        ),
    );
    let err = snaps.create(&cfg2, &meta()).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(snaps.list().unwrap().len(), 1);
    let leftovers = std::fs::read_dir(&snaps.root).unwrap().count();
    assert_eq!(leftovers, 1, "the failed create left something behind");
}

#[test]
fn insecure_root_is_refused() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let root = fx.path("snapshots");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Snapshots::new(&root).create(&cfg, &meta()).unwrap_err();
    assert!(matches!(err, SnapshotError::InsecureDir { .. }), "{err}");
    assert!(err.to_string().contains("chmod 0700"), "{err}");
}

/// Unmounts the tmpfs even when the test panics.
struct Mount(PathBuf);
impl Mount {
    /// Mounts a tmpfs with `options` (e.g. `size=5m`) at the existing directory `dir`.
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "this test needs root to mount a tmpfs");
        Mount(dir.to_owned())
    }
}
impl Mount {
    /// Mounts a fresh XFS with reflinks (a loop-mounted image in `img_dir`) at `dir`. Needs
    /// root and xfsprogs (scripts/setup installs it).
    fn xfs(img_dir: &Path, dir: &Path) -> Mount {
        let img = img_dir.join("xfs.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(512 << 20).unwrap();
        drop(f);
        let mkfs = std::process::Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .status();
        assert!(
            matches!(mkfs, Ok(s) if s.success()),
            "mkfs.xfs failed or is missing: .ci/run must `apt-get install -y xfsprogs`"
        );
        let st = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "this test needs root and a loop device to mount {}",
            img.display()
        );
        Mount(dir.to_owned())
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn enospc_removes_the_partial_snapshot() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    // 3 MiB of mutable files (copied even on the same fs) and more immutable ones (copied too:
    // the tmpfs is another file system).
    write(&data.join("000004.log"), &vec![1u8; 3 << 20]);
    let root_mnt = fx.path("small");
    std::fs::create_dir(&root_mnt).unwrap();
    let _guard = Mount::tmpfs(&root_mnt, "size=2m,mode=0700");
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = Snapshots::new(&root_mnt.join("snapshots"));
    let plan = snaps.plan(&cfg).unwrap();
    assert!(!plan.fits(), "{plan:?}");
    assert!(snaps.space_advice(&plan, &[]).contains("missing"));
    let before = inventory(&data);
    let err = snaps.create(&cfg, &meta()).unwrap_err();
    assert!(matches!(err, SnapshotError::NoSpace { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("full") && msg.contains("nothing was changed"),
        "{msg}"
    );
    let left: Vec<_> = std::fs::read_dir(&snaps.root).unwrap().collect();
    assert!(left.is_empty(), "partial snapshot left behind: {left:?}");
    assert_eq!(inventory(&data), before);
}

#[test]
fn other_stores_use_the_server_export() {
    let fx = Fixture::new();
    // A fake server binary: --export writes a subspace file, --import records what it got.
    let bin = fx.path("stalwart");
    let log = fx.path("import.log");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\n[ -n \"$CONFIG_PATH\" ] && exit 3\ncase \"$2\" in\n--export) mkdir -p \"$3\" && printf 'x' > \"$3/subspace_d\" && echo \"$EXPORT_TYPES\" > \"$3/types\";;\n--import) cat \"$3/subspace_d\" > {};;\n*) exit 1;;\nesac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = toml_cfg(
        fx.tmp.path(),
        "[storage]\ndata = \"fdb\"\nblob = \"s3\"\n[store.fdb]\ntype = \"foundationdb\"\n[store.s3]\ntype = \"s3\"\n",
    );
    let snaps = fx.snaps();
    let plan = snaps.plan(&cfg).unwrap();
    assert_eq!(plan.stores[0].method, StoreMethod::LogicalExport);
    assert_eq!(plan.stores[1].method, StoreMethod::Covered);
    assert_eq!(plan.unknown, vec!["fdb".to_string()]);
    let mut meta = meta();
    meta.server_binary = bin;
    std::env::set_var("CONFIG_PATH", "/must/be/removed");
    let m = snaps.create(&cfg, &meta).unwrap();
    std::env::remove_var("CONFIG_PATH");
    assert!(m.has_logical_export() && m.stores[0].logical_export);
    assert!(m.stores[0].files.iter().any(|f| f.path == "subspace_d"));
    snaps.hash(&m.id).unwrap();
    assert!(snaps.verify(&m.id).unwrap().ok());
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "x");
}

#[test]
fn failed_restore_leaves_the_live_data_untouched() {
    let fx = Fixture::new();
    // The data lives on a small tmpfs; the snapshot (a full copy, other file system) does not.
    let mnt = fx.path("small");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Mount::tmpfs(&mnt, "size=5m");
    let data = mnt.join("data");
    make_rocksdb(&data);
    write(&data.join("000004.log"), &vec![1u8; 3 << 20]);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let m = snaps.create(&cfg, &meta()).unwrap();
    assert!(m.stores[0]
        .files
        .iter()
        .all(|f| f.how != Some(How::HardLink)));
    write(&data.join("000099.sst"), b"written by the new version");
    let before = inventory(&data);
    // Building a second 3.4 MB copy next to the live data does not fit in 5 MiB.
    let err = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap_err();
    assert!(matches!(err, SnapshotError::RestoreNoSpace { .. }), "{err}");
    assert!(err.to_string().contains("NOT changed"), "{err}");
    assert_eq!(
        inventory(&data),
        before,
        "a failed restore changed the live data"
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["data".to_string()], "staging dir left behind");
}

#[test]
fn snapshot_root_inside_the_data_dir_is_refused() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = Snapshots::new(&data.join("snapshots"));
    let err = snaps.plan(&cfg).unwrap_err();
    assert!(matches!(err, SnapshotError::BadStorePath { .. }), "{err}");
    let err = snaps.create(&cfg, &meta()).unwrap_err();
    assert!(err.to_string().contains("inside one another"), "{err}");
    assert!(!data.join("snapshots").exists());
}

#[test]
fn export_and_import_run_as_the_owner_of_the_config() {
    let fx = Fixture::new();
    // World-traversable place for the fake server and its log (the child runs as uid 4242).
    let pub_dir = fx.path("pub");
    std::fs::create_dir(&pub_dir).unwrap();
    std::fs::set_permissions(fx.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&pub_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = pub_dir.join("stalwart");
    let log = pub_dir.join("import.log");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\n[ \"$(id -u)\" = 4242 ] || {{ echo \"running as $(id -u)\" >&2; exit 1; }}\n\
             case \"$2\" in\n--export) printf 'y' > \"$3/subspace_d\";;\n\
             --import) cat \"$3/subspace_d\" > {};;\n*) exit 1;;\nesac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg_path = pub_dir.join("config.toml");
    std::fs::write(
        &cfg_path,
        "storage.data = \"fdb\"\nstore.fdb.type = \"foundationdb\"\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&cfg_path, Some(4242), Some(4242)).unwrap();
    let cfg = ServerConfig::load(&cfg_path).unwrap();
    let snaps = fx.snaps();
    let mut meta = meta();
    meta.server_binary = bin;
    let m = snaps.create(&cfg, &meta).unwrap();
    let f = m.stores[0]
        .files
        .iter()
        .find(|f| f.path == "subspace_d")
        .unwrap();
    assert_eq!(
        (f.uid, f.size),
        (0, 1),
        "export not moved into the snapshot as root's"
    );
    let store_dir = snaps.root.join(&m.id).join("fdb");
    assert_eq!(std::fs::metadata(&store_dir).unwrap().mode() & 0o777, 0o700);
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "y");
}

#[test]
fn restore_into_a_data_dir_that_is_a_mount_point() {
    let fx = Fixture::new();
    let data = fx.path("data");
    std::fs::create_dir(&data).unwrap();
    let _guard = Mount::tmpfs(&data, "size=20m");
    make_rocksdb(&data);
    let original = inventory(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    let plan = snaps.plan(&cfg).unwrap();
    assert!(
        plan.stores[0].note.contains("another file system"),
        "{plan:?}"
    );
    let m = snaps.create(&cfg, &meta()).unwrap();
    std::fs::remove_file(data.join("000010.sst")).unwrap();
    write(&data.join("000099.sst"), b"new");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(inventory(&data), original);
    let dm = std::fs::metadata(&data).unwrap();
    assert_eq!((dm.mode() & 0o7777, dm.uid()), (0o750, 4242));
    // Still the mount point (the tmpfs), not a directory renamed over it.
    assert_ne!(dm.dev(), std::fs::metadata(fx.tmp.path()).unwrap().dev());
}

/// A hard-linked file shares its inode with the live data, which the service user owns: its
/// hash is taken when it is linked (from a pre-hash of the unchanged inode, or now), so a change
/// made through the live name afterwards shows up in `verify` instead of being blessed by `hash`.
#[test]
fn linked_files_are_hashed_as_linked_not_after() {
    let fx = Fixture::new();
    let data = fx.path("data");
    make_rocksdb(&data);
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"r\"\nstore.r.type = \"rocksdb\"\nstore.r.path = \"{}\"\n",
            data.display()
        ),
    );
    let snaps = fx.snaps();
    // Server running: the immutable files are pre-hashed.
    let known = snaps.prehash(&cfg, &snaps.plan(&cfg).unwrap());
    assert_eq!(known.len(), 3, "000010.sst, 000011.sst, blobs/000012.blob");
    // A table the "server" rewrote since the pre-hash (its ctime moved): hashed at link time.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(data.join("000011.sst"), b"rewritten before the stop").unwrap();
    let m = snaps.create_with(&cfg, &meta(), &known).unwrap();
    let linked: Vec<_> = m.stores[0]
        .files
        .iter()
        .filter(|f| f.how == Some(stalwart_upgrade::store::snapshot::How::HardLink))
        .collect();
    assert_eq!(linked.len(), 3);
    assert!(linked.iter().all(|f| f.sha256.is_some()), "{linked:?}");
    // After the restart, the live name changes the shared inode in place.
    let live = data.join("000010.sst");
    let mut f = std::fs::OpenOptions::new().write(true).open(&live).unwrap();
    std::io::Write::write_all(&mut f, b"tampered through the live name").unwrap();
    drop(f);
    snaps.hash(&m.id).unwrap();
    let r = snaps.verify(&m.id).unwrap();
    assert_eq!(r.mismatched, vec!["r/000010.sst".to_string()], "{r:?}");
    assert!(r.missing.is_empty() && r.unhashed.is_empty(), "{r:?}");
}

/// Where the snapshots share extents with the data (XFS with reflinks here; btrfs alike), a
/// SQLite database is not copied before the stop: the snapshot is a reflink made at the stop,
/// exact (what was written after the pre-stop pass is in it) at a cost that does not grow with
/// the file. Its restore is a reflink too.
#[test]
fn sqlite_on_a_reflink_file_system_is_cloned_at_the_stop_not_copied_before() {
    let fx = Fixture::new();
    let fsroot = fx.path("xfs");
    std::fs::create_dir(&fsroot).unwrap();
    let _guard = Mount::xfs(fx.tmp.path(), &fsroot);
    let db = fsroot.join("data/stalwart.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let mut body = vec![0u8; 8 << 20];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    write(&db, &body);
    std::os::unix::fs::chown(&db, Some(4242), Some(4242)).unwrap();
    let cfg = toml_cfg(
        fx.tmp.path(),
        &format!(
            "storage.data = \"sq\"\nstore.sq.type = \"sqlite\"\nstore.sq.path = \"{}\"\n",
            db.display()
        ),
    );
    let snaps = Snapshots::new(&fsroot.join("snapshots"));
    // Server running: nothing is copied.
    let known = snaps.prehash(&cfg, &snaps.plan(&cfg).unwrap());
    let copies: Vec<_> = walk_files(&snaps.root);
    assert!(
        copies.is_empty(),
        "a copy was made before the stop: {copies:?}"
    );
    // Mail delivered after that pass, before the stop.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.write_all_at(b"delivered after the pre-stop pass", 5 << 20)
            .unwrap();
    }
    let at_stop = sha(&db);
    let m = snaps.create_with(&cfg, &meta(), &known).unwrap();
    let f = &m.stores[0].files[0];
    assert_eq!(
        f.how,
        Some(stalwart_upgrade::store::snapshot::How::Reflink),
        "{f:?}"
    );
    let copy = snaps.root.join(&m.id).join("sq/stalwart.db");
    assert_eq!(sha(&copy), at_stop, "the snapshot is the file at the stop");
    snaps.hash(&m.id).unwrap();
    write(&db, b"newer schema");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(sha(&db), at_stop);
    assert!(snaps.verify(&m.id).unwrap().ok());
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
