//! The web admin refresh against running stand-in servers of both generations (0.15 REST,
//! 0.16 JMAP): success, wrong credentials, no permission, a server-side failure and a timeout
//! each give a clear, typed error; the password never appears in an error message.

use stalwart_upgrade::config::Settings;
use stalwart_upgrade::server::serverconfig::ConfigFormat;
use stalwart_upgrade::server::webadmin::{refresh, WebadminError};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use testbed::Fault;

const SECRET: &str = "s3cret-Pa55";
static PORT: AtomicU16 = AtomicU16::new(18380);

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(version: &str, fault: Fault) -> Server {
    let bin = testbed::standin_release(version, fault, 0);
    let dir = tempfile::tempdir().unwrap();
    let port = PORT.fetch_add(1, Ordering::SeqCst);
    let json = version.starts_with("0.16");
    let cfg = if json {
        let p = dir.path().join("config.json");
        let data = dir.path().join("data");
        std::fs::write(
            &p,
            format!(r#"{{"@type":"RocksDb","path":"{}"}}"#, data.display()),
        )
        .unwrap();
        p
    } else {
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            format!(
                "[server.listener.http]\nbind = [\"127.0.0.1:{port}\"]\nprotocol = \"http\"\n\
                 [storage]\ndata = \"rocksdb\"\n[store.rocksdb]\ntype = \"rocksdb\"\npath = \"{}\"\n\
                 [authentication.fallback-admin]\nuser = \"admin\"\nsecret = \"{SECRET}\"\n\
                 [standin.unprivileged-users]\nbob = \"pass\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        p
    };
    let child = Command::new(&bin)
        .arg(format!("--config={}", cfg.display()))
        .env("STANDIN_HTTP_PORT", port.to_string())
        .env("STALWART_ADMIN_USER", "admin")
        .env("STALWART_ADMIN_SECRET", SECRET)
        .env("STANDIN_UNPRIVILEGED_USERS", "bob:pass")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while stalwart_upgrade::server::health::probe_ready(&base) != Ok(200) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "stand-in {version} not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        base,
        _dir: dir,
    }
}

impl Server {
    /// The stand-in's listener, trusted because this process (the "unit") holds its socket.
    fn endpoint(&self) -> stalwart_upgrade::server::webadmin::Endpoint {
        stalwart_upgrade::server::webadmin::Endpoint::Server {
            base: self.base.clone(),
            unit: "stalwart.service".into(),
            pids: vec![self.child.id()],
        }
    }
}

fn settings(cred: &str, timeout: u64) -> (Settings, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cred");
    std::fs::write(&p, cred).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut s = Settings::default();
    s.webadmin.credentials_file = Some(p);
    s.webadmin.timeout_secs = timeout;
    (s, d)
}

fn generation(v: &str) -> ConfigFormat {
    if v.starts_with("0.16") {
        ConfigFormat::Json
    } else {
        ConfigFormat::Toml
    }
}

fn check_all(version: &str) {
    let srv = start(version, Fault::None);
    let g = generation(version);
    let (ok, _d1) = settings(&format!("admin:{SECRET}"), 10);
    refresh(&ok, g, &srv.endpoint(), None).unwrap_or_else(|e| panic!("{version}: {e}"));
    // An API key in the credentials file is sent as `Bearer api_...` (facts: "auth").
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(format!("admin:{SECRET}"));
    let (api, _d5) = settings(&format!("api_{key}"), 10);
    refresh(&api, g, &srv.endpoint(), None)
        .unwrap_or_else(|e| panic!("{version} with an API key: {e}"));
    let wrong_key = base64::engine::general_purpose::STANDARD.encode("admin:nope");
    let (bad_api, _d6) = settings(&format!("api_{wrong_key}"), 10);
    assert!(matches!(
        refresh(&bad_api, g, &srv.endpoint(), None),
        Err(WebadminError::Unauthorized { .. })
    ));

    let (wrong, _d2) = settings("admin:nope", 10);
    let e = refresh(&wrong, g, &srv.endpoint(), None).unwrap_err();
    assert!(
        matches!(e, WebadminError::Unauthorized { .. }),
        "{version}: {e}"
    );
    assert!(!e.to_string().contains("nope"));

    let (bob, _d3) = settings("bob:pass", 10);
    let e = refresh(&bob, g, &srv.endpoint(), None).unwrap_err();
    assert!(
        matches!(e, WebadminError::Forbidden { .. }),
        "{version}: {e}"
    );
    assert!(e.to_string().contains("permission"), "{version}: {e}");

    // 0.15 answers 500; 0.16 answers success and serves nothing (measured): both are failures.
    let failing = start(version, Fault::WebadminFails);
    let e = refresh(&ok, g, &failing.endpoint(), None).unwrap_err();
    match g {
        ConfigFormat::Toml => assert!(
            matches!(e, WebadminError::Server { status: 500, .. }),
            "{version}: {e}"
        ),
        ConfigFormat::Json => assert!(
            matches!(e, WebadminError::NotServed { status: 404, .. }),
            "{version}: {e}"
        ),
    }
    assert!(e.to_string().contains("webadmin refresh"), "{version}: {e}");

    let slow = start(version, Fault::WebadminSlow);
    let (quick, _d4) = settings(&format!("admin:{SECRET}"), 2);
    let t = Instant::now();
    let e = refresh(&quick, g, &slow.endpoint(), None).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "timeout not bounded");
    assert!(
        matches!(e, WebadminError::Transport { .. }),
        "{version}: {e}"
    );
    assert!(!e.to_string().contains(SECRET));
    // The servers keep serving after every failed refresh.
    for s in [&srv, &failing, &slow] {
        assert_eq!(
            stalwart_upgrade::server::health::probe_ready(&s.base),
            Ok(200)
        );
    }
}

#[test]
fn refresh_on_0_15_rest() {
    check_all("0.15.5");
}

#[test]
fn refresh_on_0_16_jmap() {
    check_all("0.16.18");
}
