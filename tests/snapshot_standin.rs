//! The snapshot against the stand-in server (tests/standin): data written by 0.14.3, snapshot
//! while stopped, 0.15.5 migrates the schema (4 -> 5), 0.14.3 then refuses to start (it panics
//! on the newer schema, like upstream), restore, and 0.14.3 serves exactly the old data again.
//!
//! Needs the stand-in binary: `cargo build -p stalwart-standin` (as .ci/run does).

use stalwart_upgrade::server::serverconfig::{ServerConfig, StoreKind};
use stalwart_upgrade::store::snapshot::{How, SnapshotMeta, Snapshots, StoreMethod};

/// What a restore does with the data it replaces: kept as a snapshot (the helper's default).
fn keep() -> stalwart_upgrade::store::snapshot::Displaced {
    stalwart_upgrade::store::snapshot::Displaced::Keep {
        origin: "replaced by a test restore".into(),
        version: "0.15.6".parse().unwrap(),
    }
}
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed::{standin_release, Fault};

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(bin: &Path, cfg: &Path, port: u16, log: &Path) -> Server {
        let child = Command::new(bin)
            .arg(format!("--config={}", cfg.display()))
            .env_remove("CONFIG_PATH")
            .env("STANDIN_HTTP_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Server { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Ready within the timeout, or None if the process exited first.
    fn wait_ready(&mut self, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            if let Ok(r) = ureq::get(&self.url("/healthz/ready")).call() {
                if r.status() == 200 {
                    return Some(t0.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server not ready within {timeout:?}");
    }

    fn deliver(&self, n: u32) {
        let r = ureq::post(&self.url(&format!("/standin/deliver?n={n}")))
            .call()
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    fn digest(&self) -> serde_json::Value {
        let r = ureq::get(&self.url("/standin/digest")).call().unwrap();
        serde_json::from_str(&r.into_string().unwrap()).unwrap()
    }

    /// SIGINT, like the unit's KillSignal=SIGINT (facts).
    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not stop on SIGINT");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scenario(data_type: &str) {
    let old = standin_release("0.14.3", Fault::None, 0);
    let new = standin_release("0.15.5", Fault::None, 0);
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let data_path: PathBuf = if data_type == "rocksdb" {
        tmp.path().join("data")
    } else {
        tmp.path().join("db/stalwart.sqlite")
    };
    let cfg_path = tmp.path().join("config.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[server.listener.http]\nbind = [\"[::]:{port}\"]\nprotocol = \"http\"\n\n\
             [storage]\ndata = \"db\"\nblob = \"blobs\"\n\n\
             [store.db]\ntype = \"{data_type}\"\npath = \"{}\"\n\n\
             [store.blobs]\ntype = \"fs\"\npath = \"{}\"\n\n\
             [authentication.fallback-admin]\nuser = \"admin\"\nsecret = \"secret\"\n",
            data_path.display(),
            tmp.path().join("blobs").display()
        ),
    )
    .unwrap();
    let log = |n: &str| tmp.path().join(format!("{n}.log"));

    let mut s = Server::start(&old, &cfg_path, port, &log("old1"));
    s.wait_ready(Duration::from_secs(30))
        .expect("0.14.3 did not start");
    s.deliver(7);
    let before = s.digest();
    s.stop();
    assert_eq!(before["schema"], 4);

    let cfg = ServerConfig::load(&cfg_path).unwrap();
    assert_eq!(cfg.http, Some(format!("127.0.0.1:{port}").parse().unwrap()));
    assert_eq!(cfg.stores.len(), 2);
    assert!(matches!(cfg.stores[1].kind, StoreKind::Fs { .. }));
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let meta = SnapshotMeta {
        server_version: "0.14.3".parse().unwrap(),
        target_version: Some("0.15.5".parse().unwrap()),
        class: None,
        server_binary: old.clone(),
    };
    let m = snaps.create(&cfg, &meta).unwrap();
    let blobs = m.stores.iter().find(|s| s.id == "blobs").unwrap();
    assert_eq!(blobs.method, StoreMethod::FsFiles);
    assert!(blobs.files.iter().any(|f| f.how == Some(How::HardLink)));
    if data_type == "rocksdb" {
        let db = &m.stores[0];
        assert!(db
            .files
            .iter()
            .any(|f| f.path.ends_with(".sst") && f.how == Some(How::HardLink)));
    }

    // The new version migrates and takes more mail (server running while we hash).
    let mut s = Server::start(&new, &cfg_path, port, &log("new"));
    s.wait_ready(Duration::from_secs(30))
        .expect("0.15.5 did not start");
    snaps.hash(&m.id).unwrap();
    s.deliver(3);
    let after = s.digest();
    s.stop();
    assert_eq!(after["schema"], 5);
    assert!(
        snaps.verify(&m.id).unwrap().ok(),
        "the running server changed the snapshot"
    );

    // The old binary cannot run on the newer schema.
    let mut s = Server::start(&old, &cfg_path, port, &log("old2"));
    assert!(
        s.wait_ready(Duration::from_secs(30)).is_none(),
        "0.14.3 started on schema 5"
    );
    let stderr = std::fs::read_to_string(log("old2")).unwrap();
    assert!(
        stderr.contains("Unknown database schema version"),
        "{stderr}"
    );
    drop(s);

    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    let mut s = Server::start(&old, &cfg_path, port, &log("old3"));
    s.wait_ready(Duration::from_secs(30))
        .expect("0.14.3 did not start after the restore");
    let restored = s.digest();
    s.stop();
    for k in ["schema", "records", "sha256", "blobs"] {
        assert_eq!(restored[k], before[k], "{k}: {restored} vs {before}");
    }
}

#[test]
fn rocksdb_and_fs_blobs_roll_back_with_the_standin() {
    scenario("rocksdb");
}

#[test]
fn sqlite_and_fs_blobs_roll_back_with_the_standin() {
    scenario("sqlite");
}
