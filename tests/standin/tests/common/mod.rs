//! Helpers shared by the stand-in's integration tests: stamped releases, configs, a tiny HTTP
//! client, process control.
#![allow(dead_code)]

use stalwart_standin::{Fault, Release};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stalwart-standin");

static RELEASE_DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
static STAMP_LOCK: Mutex<()> = Mutex::new(());

/// A stamped release of the stand-in (cached per test process).
pub fn release(version: &str, fault: Fault, migrate_ms: u64) -> PathBuf {
    let dir = RELEASE_DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir
        .path()
        .join(format!("stalwart-{version}-{fault}-{migrate_ms}"));
    let _g = STAMP_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !path.exists() {
        let r = Release {
            version: version.into(),
            fault,
            migrate_ms,
        };
        stalwart_standin::stamp(Path::new(BIN), &path, &r).unwrap();
    }
    path
}

pub fn rel(version: &str) -> PathBuf {
    release(version, Fault::None, 300)
}

/// Spawns, retrying on ETXTBSY (another test thread may have forked while a release file was
/// open for writing).
fn spawn_retry(cmd: &mut Command) -> Child {
    for _ in 0..50 {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("spawn: {e}"),
        }
    }
    panic!("spawn: text file busy");
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_retry(cmd).wait_with_output().unwrap()
}

/// Runs a release to completion with the given args and env.
pub fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("CONFIG_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test environment: a temp dir with a config and a data store.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

pub enum Kind {
    Rocks,
    Sqlite,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// Writes a 0.15-style config.toml (listener on `self.port`) and returns its path.
    pub fn toml(&self, kind: Kind) -> PathBuf {
        let (ty, path) = match kind {
            Kind::Rocks => ("rocksdb", self.data()),
            Kind::Sqlite => ("sqlite", self.path("db.sqlite")),
        };
        let cfg = format!(
            r#"[server.listener.http]
bind = ["[::]:{port}"]
protocol = "http"

[server.listener.smtp]
bind = ["[::]:2525"]
protocol = "smtp"

[storage]
data = "db"
blob = "blobs"

[store.db]
type = "{ty}"
path = "{path}"

[store.blobs]
type = "fs"
path = "{blobs}"

[authentication.fallback-admin]
user = "admin"
secret = "%{{env:STANDIN_TEST_SECRET}}%"

[standin]
unprivileged-users = {{ "bob" = "bobpass" }}
"#,
            port = self.port,
            path = path.display(),
            blobs = self.path("blobs").display()
        );
        let p = self.path("config.toml");
        std::fs::write(&p, cfg).unwrap();
        p
    }

    /// Writes a 0.16-style config.json and returns its path.
    pub fn json(&self, kind: Kind) -> PathBuf {
        let cfg = match kind {
            Kind::Rocks => serde_json::json!({"@type": "RocksDb", "path": self.data()}),
            Kind::Sqlite => serde_json::json!({"@type": "Sqlite", "path": self.path("db.sqlite")}),
        };
        let p = self.path("config.json");
        std::fs::write(&p, cfg.to_string()).unwrap();
        p
    }

    /// Starts a server; stderr goes to a log file in the temp dir.
    pub fn start(&self, bin: &Path, config: &Path, env: &[(&str, &str)]) -> Server {
        let log = self.path(&format!(
            "stderr-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config={}", config.display()))
            .env_remove("CONFIG_PATH")
            .env("STANDIN_HTTP_PORT", self.port.to_string())
            .env("STANDIN_TEST_SECRET", "secret")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server {
            child: spawn_retry(&mut cmd),
            port: self.port,
            log,
        }
    }

    /// Runs a server binary to completion (for --export/--import and start-up failures).
    pub fn run(&self, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("CONFIG_PATH")
            .env("STANDIN_HTTP_PORT", self.port.to_string())
            .env("STANDIN_TEST_SECRET", "secret");
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(&mut cmd)
    }
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, &[], "")
    }

    /// Waits until /healthz/live answers (panics after 15 s or if the process exits).
    pub fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("server exited early ({st}):\n{}", self.log());
            }
            if try_http(self.port, "GET", "/healthz/live", &[], "").is_some_and(|r| r.status == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not live:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&mut self) {
        self.wait_live();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.get("/healthz/ready").status != 200 {
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT and wait for a clean exit 0.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGINT);
        let st = self
            .wait_exit(Duration::from_secs(15))
            .expect("server did not stop");
        assert_eq!(st.code(), Some(0), "stop exit status; log:\n{}", self.log());
        self.log()
    }

    pub fn digest(&self) -> serde_json::Value {
        let r = self.get("/standin/digest");
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    pub fn deliver(&self, n: u32) -> Resp {
        http(
            self.port,
            "POST",
            &format!("/standin/deliver?n={n}"),
            &[],
            "",
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    try_http(port, method, path, headers, body).expect("HTTP request failed")
}

pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Every file of a directory tree with its bytes (LOCK included).
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for (k, v) in files(&e.path()) {
                out.insert(format!("{name}/{k}"), v);
            }
        } else {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// Schema number written in the RocksDB-like store's live MANIFEST.
pub fn rocks_schema(dir: &Path) -> u64 {
    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(current.trim())).unwrap()).unwrap();
    m["schema"].as_u64().unwrap()
}
