//! Data behaviour of the stand-in: store files, durability, schema migrations, the panic on a
//! newer schema, export/import, locking, 0.16 recovery mode.
mod common;

use common::*;
use stalwart_standin::Fault;
use std::io::Read;
use std::time::Duration;

/// Creates a rocksdb-like store with `version` (seed), delivering `n` messages.
fn init_store(env: &Env, version: &str, cfg: &std::path::Path, n: u32) -> serde_json::Value {
    let mut s = env.start(&rel(version), cfg, &[]);
    s.wait_ready();
    if n > 0 {
        assert_eq!(s.deliver(n).status, 200);
    }
    let d = s.digest();
    s.stop();
    d
}

fn same_data(a: &serde_json::Value, b: &serde_json::Value) {
    assert_eq!(a["records"], b["records"], "{a} vs {b}");
    assert_eq!(a["sha256"], b["sha256"], "{a} vs {b}");
}

#[test]
fn fresh_store_is_seeded_with_the_binary_schema() {
    let env = Env::new();
    let d = init_store(&env, "0.14.3", &env.toml(Kind::Rocks), 0);
    assert_eq!(d["schema"], 4);
    assert_eq!(d["records"], 50);
    assert_eq!(d["version"], "0.14.3");
    assert_eq!(rocks_schema(&env.data()), 4);
    let names: Vec<String> = files(&env.data()).into_keys().collect();
    for expected in ["CURRENT", "IDENTITY", "LOCK"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("MANIFEST-")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("OPTIONS-")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".sst")), "{names:?}");
    // Same seed for everyone: digests of two fresh stores are equal.
    let env2 = Env::new();
    same_data(&d, &init_store(&env2, "0.15.5", &env2.toml(Kind::Rocks), 0));
}

#[test]
fn start_stop_without_writes_leaves_files_byte_identical() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    init_store(&env, "0.15.5", &cfg, 3);
    let before = files(env.dir.path().join("data").as_path());
    let blobs_before = files(&env.path("blobs"));
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    s.digest();
    s.stop();
    assert_eq!(before, files(&env.data()));
    assert_eq!(blobs_before, files(&env.path("blobs")));
}

#[test]
fn delivered_records_survive_sigint_and_restart() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    let before_files = files(&env.data());
    assert_eq!(s.deliver(7).status, 200);
    let d1 = s.digest();
    assert_eq!(d1["records"], 57);
    assert!(
        files(&env.data()).keys().any(|n| n.ends_with(".log")),
        "a WAL exists"
    );
    s.stop();
    let after = files(&env.data());
    assert!(
        !after.keys().any(|n| n.ends_with(".log")),
        "WAL flushed: {:?}",
        after.keys()
    );
    // Immutable tables: every .sst that survived is byte-identical.
    for (name, bytes) in &before_files {
        if name.ends_with(".sst") {
            assert_eq!(after.get(name), Some(bytes), "{name} changed");
        }
    }
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    same_data(&d1, &s.digest());
    // Blobs: one write-once file per message (45 seeded + 7 delivered).
    assert_eq!(s.digest()["blobs"], 52);
    s.stop();
}

#[test]
fn sigkill_after_deliver_is_recovered_from_the_wal() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    assert_eq!(s.deliver(4).status, 200);
    let d1 = s.digest();
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5)).unwrap();
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    same_data(&d1, &s.digest());
    s.stop();
}

#[test]
fn migration_4_to_5_rewrites_files_and_keeps_data() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let d14 = init_store(&env, "0.14.3", &cfg, 5);
    let before = files(&env.data());
    assert_eq!(rocks_schema(&env.data()), 4);
    let mut s = env.start(&release("0.15.5", Fault::None, 100), &cfg, &[]);
    s.wait_ready();
    let d15 = s.digest();
    assert_eq!(d15["schema"], 5);
    same_data(&d14, &d15);
    let log = s.stop();
    assert!(
        log.contains("Migrating database from schema 4 to 5"),
        "{log}"
    );
    assert!(log.contains("Migration completed"), "{log}");
    let after = files(&env.data());
    assert_eq!(rocks_schema(&env.data()), 5);
    for (name, bytes) in &before {
        if name.ends_with(".sst") || name.starts_with("MANIFEST-") {
            assert!(!after.contains_key(name), "old {name} must be gone");
        }
        if name.ends_with(".sst") {
            assert!(after.values().all(|b| b != bytes));
        }
    }
    assert_ne!(before["CURRENT"], after["CURRENT"]);
    assert_eq!(before["IDENTITY"], after["IDENTITY"]);
}

#[test]
fn older_binary_panics_on_newer_schema() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    init_store(&env, "0.15.5", &cfg, 2);
    let before = files(&env.data());
    let out = env.run(&rel("0.14.3"), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(101), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Unknown database schema version, expected 4 or below, found 5"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(before, files(&env.data()));
}

#[test]
fn migration_fails_exits_0_with_log_line_and_data_unchanged() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let d14 = init_store(&env, "0.14.3", &cfg, 2);
    let before = files(&env.data());
    let bin = release("0.15.5", Fault::MigrationFails, 200);
    let out = env.run(&bin, &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("ERROR Failed to migrate database: "), "{err}");
    assert_eq!(before, files(&env.data()));
    // The old release still runs on the untouched data.
    let mut s = env.start(&rel("0.14.3"), &cfg, &[]);
    s.wait_ready();
    same_data(&d14, &s.digest());
    s.stop();
    // Without a needed migration, the faulty release starts normally.
    let env2 = Env::new();
    let mut s = env2.start(&bin, &env2.toml(Kind::Rocks), &[]);
    s.wait_ready();
    s.stop();
}

#[test]
fn sqlite_store_works_and_migrates() {
    let env = Env::new();
    let cfg = env.toml(Kind::Sqlite);
    let d14 = init_store(&env, "0.14.3", &cfg, 6);
    assert_eq!(d14["schema"], 4);
    assert_eq!(d14["records"], 56);
    assert!(env.path("db.sqlite").is_file());
    let mut s = env.start(&release("0.15.5", Fault::None, 100), &cfg, &[]);
    s.wait_ready();
    let d15 = s.digest();
    assert_eq!(d15["schema"], 5);
    same_data(&d14, &d15);
    assert_eq!(s.deliver(1).status, 200);
    let d15b = s.digest();
    s.stop();
    // Second instance refused while running, data kept across restart, panic on older binary.
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    same_data(&d15b, &s.digest());
    let env_other_port = Env::new();
    let out = env_other_port.run(&rel("0.15.5"), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("locked"),
        "{}",
        text(&out.stderr)
    );
    s.stop();
    let out = env.run(&rel("0.14.3"), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(101));
}

#[test]
fn second_instance_on_the_same_data_is_refused() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    let other = Env::new(); // other port, same config
    let out = other.run(&rel("0.15.5"), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("LOCK"), "{}", text(&out.stderr));
    // Export needs the server stopped too.
    let dump = env.path("dump");
    let out = other.run(
        &rel("0.15.5"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--export",
            dump.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("LOCK"), "{}", text(&out.stderr));
    s.stop();
}

fn decompress(path: &std::path::Path) -> Vec<u8> {
    let mut buf = Vec::new();
    lz4_flex::frame::FrameDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut buf)
        .unwrap();
    buf
}

#[test]
fn export_import_round_trip() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let d = init_store(&env, "0.15.5", &cfg, 9);
    let dump = env.path("dump");
    let out = env.run(
        &rel("0.15.5"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--export",
            dump.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = decompress(&dump.join("subspace_m"));
    assert_eq!(&m[..6], &[123, b'm', 5, 0, 0, 0]);
    assert_eq!(decompress(&dump.join("subspace_s"))[1], b's');

    // Import into a different, empty store (sqlite this time, via -i).
    let env2 = Env::new();
    let cfg2 = env2.toml(Kind::Sqlite);
    let out = env2.run(
        &rel("0.15.5"),
        &["-c", cfg2.to_str().unwrap(), "-i", dump.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut s = env2.start(&rel("0.15.5"), &cfg2, &[]);
    s.wait_ready();
    same_data(&d, &s.digest());
    s.stop();

    // Import replaces the content of an existing store.
    let env3 = Env::new();
    let cfg3 = env3.toml(Kind::Rocks);
    init_store(&env3, "0.15.5", &cfg3, 1);
    let out = env3.run(
        &rel("0.15.5"),
        &[
            "--config",
            cfg3.to_str().unwrap(),
            "--import",
            dump.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut s = env3.start(&rel("0.15.5"), &cfg3, &[]);
    s.wait_ready();
    same_data(&d, &s.digest());
    s.stop();
}

#[test]
fn import_of_another_schema_is_refused() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    init_store(&env, "0.14.3", &cfg, 1);
    let dump = env.path("dump");
    let out = env.run(
        &rel("0.14.3"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--export",
            dump.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        &decompress(&dump.join("subspace_m"))[..6],
        &[123, b'm', 4, 0, 0, 0]
    );
    let env2 = Env::new();
    let cfg2 = env2.toml(Kind::Rocks);
    let out = env2.run(
        &rel("0.15.5"),
        &[
            "--config",
            cfg2.to_str().unwrap(),
            "--import",
            dump.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("schema version 4") && err.contains("refused"),
        "{err}"
    );
    assert!(!env2.data().exists(), "nothing imported");
}

#[test]
fn v016_refuses_schema_4_and_needs_recovery_mode_for_5() {
    // Schema 4 (0.14): refused, "upgrade to 0.15 first".
    let env = Env::new();
    init_store(&env, "0.14.3", &env.toml(Kind::Rocks), 0);
    let json = env.json(Kind::Rocks);
    let before = files(&env.data());
    // Upstream's refusals are panics: exit 101, "Migration aborted: ...".
    let out = env.run(&rel("0.16.18"), &["--config", json.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(101));
    assert!(
        text(&out.stderr).contains("Migration aborted")
            && text(&out.stderr).contains("upgrade to 0.15 first"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(before, files(&env.data()));

    // Schema 5 (0.15): refused without recovery mode...
    let env = Env::new();
    let d15 = init_store(&env, "0.15.5", &env.toml(Kind::Rocks), 3);
    assert_eq!(d15["records"], 53);
    let json = env.json(Kind::Rocks);
    let before = files(&env.data());
    let out = env.run(&rel("0.16.18"), &["--config", json.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(101));
    assert!(
        text(&out.stderr)
            .contains("Migration aborted: Upgrading to version 0.16 is a multi-step process"),
        "{}",
        text(&out.stderr)
    );
    // ...after writing into the 0.15 database (measured with the real 0.16.18), so the data
    // is not what it was.
    assert_ne!(before, files(&env.data()));
    let env = Env::new();
    init_store(&env, "0.15.5", &env.toml(Kind::Rocks), 3);
    let json = env.json(Kind::Rocks);

    // ...migrated with it, wiping the 5 settings records and keeping all mail.
    let mut s = env.start(&rel("0.16.18"), &json, &[("STALWART_RECOVERY_MODE", "1")]);
    s.wait_ready();
    let d16 = s.digest();
    assert_eq!(d16["schema"], 6);
    assert_eq!(d16["records"], 48);
    let log = s.stop();
    assert!(
        log.contains("Migrating database from schema 5 to 6"),
        "{log}"
    );
    assert_eq!(rocks_schema(&env.data()), 6);
    let dump = env.path("dump");
    let out = env.run(
        &rel("0.16.18"),
        &[
            "--config",
            json.to_str().unwrap(),
            "--export",
            dump.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dump.join("subspace_m").exists());
    assert!(!dump.join("subspace_s").exists(), "settings wiped");
    // And the 0.15 binary now panics on schema 6.
    let out = env.run(
        &rel("0.15.5"),
        &["--config", env.toml(Kind::Rocks).to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(101));
    assert!(
        text(&out.stderr).contains("Unknown database schema version, expected 5 or below, found 6")
    );
}

#[test]
fn corrupted_table_file_is_detected() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    init_store(&env, "0.15.5", &cfg, 0);
    let sst = std::fs::read_dir(env.data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .unwrap();
    let mut bytes = std::fs::read(&sst).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&sst, bytes).unwrap();
    let out = env.run(&rel("0.15.5"), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Corruption"),
        "{}",
        text(&out.stderr)
    );
}
