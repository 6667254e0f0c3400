//! HTTP behaviour of the stand-in: health, web-admin refresh (0.15 REST, 0.16 JMAP), faults,
//! signals.
mod common;

use common::*;
use stalwart_standin::Fault;
use std::time::Duration;

fn update_apps(port: u16, auth: Option<&str>) -> Resp {
    update_apps_using(
        port,
        auth,
        &["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
    )
}

fn update_apps_using(port: u16, auth: Option<&str>, using: &[&str]) -> Resp {
    let body = serde_json::json!({
        "using": using,
        "methodCalls": [["x:Action/set", {"create": {"u1": {"@type": "UpdateApps"}}}, "c0"]]
    })
    .to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http(port, "POST", "/jmap", &headers, &body)
}

fn webadmin(port: u16, auth: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http(port, "GET", "/api/update/webadmin", &headers, "")
}

fn assert_problem(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        r.header_values("Content-Type"),
        vec!["application/problem+json".to_string()]
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["status"], status);
    for k in ["type", "title", "detail"] {
        assert!(v[k].is_string(), "{k} in {v}");
    }
}

#[test]
fn nothing_listens_during_a_slow_migration_then_ready() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let mut s = env.start(&rel("0.14.3"), &cfg, &[]);
    s.wait_ready();
    s.stop();
    // Upstream listens only once the migration is done: connection refused meanwhile.
    let mut s = env.start(&release("0.15.5", Fault::None, 3000), &cfg, &[]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        try_http(s.port, "GET", "/healthz/live", &[], "").is_none(),
        "something answers during the migration"
    );
    s.wait_ready();
    assert_eq!(s.deliver(1).status, 200);
    let log = s.stop();
    assert!(
        log.contains("Migrating database from schema 4 to 5"),
        "{log}"
    );
    assert!(log.contains("Migration completed"), "{log}");
}

#[test]
fn webadmin_update_on_015_checks_credentials() {
    let env = Env::new();
    let mut s = env.start(&rel("0.15.5"), &env.toml(Kind::Rocks), &[]);
    s.wait_ready();
    for auth in [
        None,
        Some(basic("admin", "wrong")),
        Some(basic("eve", "secret")),
    ] {
        let r = webadmin(s.port, auth.as_deref());
        assert_problem(&r, 401);
        // Like the real 0.15.5: /api names no authentication scheme (only /jmap does).
        let wa = r.header_values("WWW-Authenticate");
        assert!(wa.is_empty(), "{wa:?}");
    }
    assert_problem(&webadmin(s.port, Some(&basic("bob", "bobpass"))), 403);
    let r = webadmin(s.port, Some(&basic("admin", "secret")));
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
        serde_json::json!({"data": null})
    );
    // Bearer api_<base64(user:secret)> works too under /api.
    let token = basic("admin", "secret").replace("Basic ", "Bearer api_");
    assert_eq!(webadmin(s.port, Some(&token)).status, 200);
    // 0.15 has no x:Action JMAP.
    assert_eq!(
        update_apps(s.port, Some(&basic("admin", "secret"))).status,
        404
    );
    s.stop();
}

#[test]
fn jmap_update_apps_on_016() {
    let env = Env::new();
    let mut s = env.start(
        &rel("0.16.18"),
        &env.json(Kind::Rocks),
        &[
            ("STALWART_ADMIN_SECRET", "topsecret"),
            ("STANDIN_UNPRIVILEGED_USERS", "bob:bobpass"),
        ],
    );
    s.wait_ready();
    assert_problem(&update_apps(s.port, None), 401);
    assert_problem(&update_apps(s.port, Some(&basic("admin", "admin"))), 401);
    let r = update_apps(s.port, Some(&basic("admin", "topsecret")));
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let resp = &v["methodResponses"][0];
    assert_eq!(resp[0], "x:Action/set");
    assert!(resp[1]["created"]["u1"]["id"].is_string(), "{v}");
    assert_eq!(resp[2], "c0");
    assert!(v["sessionState"].is_string());
    let r = update_apps(s.port, Some(&basic("bob", "bobpass")));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v["methodResponses"][0][1]["notCreated"]["u1"]["type"],
        "forbidden"
    );
    // 0.16 has no REST web-admin update.
    assert_eq!(
        webadmin(s.port, Some(&basic("admin", "topsecret"))).status,
        404
    );
    // Like the real 0.16.18: x: methods only under upstream's own capability.
    let r = update_apps_using(
        s.port,
        Some(&basic("admin", "topsecret")),
        &["urn:ietf:params:jmap:core"],
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["methodResponses"][0][1]["type"], "unknownMethod", "{v}");
    s.stop();
}

fn api_url(port: u16) -> String {
    let r = http(port, "GET", "/jmap/session", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["apiUrl"].as_str().unwrap_or_default().to_string()
}

#[test]
fn modes_of_016_show_in_the_anonymous_session_like_upstream() {
    let env = Env::new();
    let cfg = env.json(Kind::Rocks);
    let admin = [("STALWART_RECOVERY_ADMIN", "root: s3cret ")];
    let mut s = env.start(&rel("0.16.18"), &cfg, &admin);
    s.wait_ready();
    assert!(api_url(s.port).starts_with("https://"), "normal mode");
    // STALWART_RECOVERY_ADMIN is an administrator in every mode (trimmed).
    assert_eq!(
        update_apps(s.port, Some(&basic("root", "s3cret"))).status,
        200
    );
    s.stop();
    let mut s = env.start(
        &rel("0.16.18"),
        &cfg,
        &[("STALWART_RECOVERY_MODE", "1"), admin[0]],
    );
    s.wait_ready();
    assert_eq!(api_url(s.port), "/jmap/", "recovery mode");
    s.stop();
    // No config.json: bootstrap mode, ready on an in-memory store, a temporary administrator
    // on stderr, and nothing but the Bootstrap object reachable.
    let mut s = env.start(&rel("0.16.18"), &env.path("missing.json"), &[]);
    s.wait_ready();
    assert_eq!(api_url(s.port), "/jmap/", "bootstrap mode");
    let log = s.log();
    let pw = log
        .lines()
        .find_map(|l| l.strip_prefix("   password: "))
        .unwrap_or_else(|| panic!("no temporary password in {log}"))
        .to_string();
    let r = update_apps(s.port, Some(&basic("admin", &pw)));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["methodResponses"][0][1]["type"], "forbidden", "{v}");
    s.stop();
}

#[test]
fn a_015_without_its_config_file_exits_0_silently_like_upstream() {
    let env = Env::new();
    let out = env.run(
        &rel("0.15.5"),
        &["--config", env.path("nowhere.toml").to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{out:?}");
}

#[test]
fn webadmin_fails_answers_500_on_015_and_drops_the_bundle_on_016() {
    let env = Env::new();
    let mut s = env.start(
        &release("0.15.5", Fault::WebadminFails, 300),
        &env.toml(Kind::Rocks),
        &[],
    );
    s.wait_ready();
    assert_problem(&webadmin(s.port, Some(&basic("admin", "secret"))), 500);
    s.stop();
    let env = Env::new();
    let mut s = env.start(
        &release("0.16.18", Fault::WebadminFails, 300),
        &env.json(Kind::Rocks),
        &[],
    );
    s.wait_ready();
    assert_eq!(s.get("/admin/").status, 200, "a bundle is cached at start");
    // The real 0.16.18: UpdateApps counts as created, but the bundle is gone.
    let r = update_apps(s.port, Some(&basic("admin", "admin")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"created\""), "{}", r.body);
    assert_eq!(s.get("/admin/").status, 404);
    s.stop();
}

#[test]
fn webadmin_slow_does_not_answer_but_health_does() {
    let env = Env::new();
    let mut s = env.start(
        &release("0.15.5", Fault::WebadminSlow, 300),
        &env.toml(Kind::Rocks),
        &[],
    );
    s.wait_ready();
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(
        c,
        "GET /api/update/webadmin HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic("admin", "secret")
    )
    .unwrap();
    let mut buf = [0u8; 16];
    let e = c.read(&mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    assert_eq!(s.get("/healthz/ready").status, 200);
    s.stop();
}

#[test]
fn never_ready_is_live_but_never_ready() {
    let env = Env::new();
    let mut s = env.start(
        &release("0.15.5", Fault::NeverReady, 300),
        &env.toml(Kind::Rocks),
        &[],
    );
    s.wait_live();
    for _ in 0..10 {
        assert_eq!(s.get("/healthz/live").status, 200);
        assert_eq!(s.get("/healthz/ready").status, 503);
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop();
}

#[test]
fn ignore_stop_survives_sigint_and_sigterm() {
    let env = Env::new();
    let mut s = env.start(
        &release("0.15.5", Fault::IgnoreStop, 300),
        &env.toml(Kind::Rocks),
        &[],
    );
    s.wait_ready();
    s.signal(libc::SIGINT);
    s.signal(libc::SIGTERM);
    assert!(
        s.wait_exit(Duration::from_secs(1)).is_none(),
        "must ignore SIGINT/SIGTERM"
    );
    assert_eq!(s.get("/healthz/live").status, 200);
    s.signal(libc::SIGKILL);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("SIGKILL ends it");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
}

#[test]
fn sigterm_stops_cleanly_and_logs() {
    let env = Env::new();
    let mut s = env.start(&rel("0.16.18"), &env.json(Kind::Sqlite), &[]);
    s.wait_ready();
    s.signal(libc::SIGTERM);
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    assert_eq!(st.code(), Some(0));
    let log = s.log();
    assert!(log.contains("Stalwart Server v0.16.18 starting"), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn init_config_with_sha512_crypt_admin_secret_authenticates() {
    let env = Env::new();
    let base = env.path("opt");
    let out = run(&rel("0.15.5"), &["--init", base.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0));
    // Both lines on stderr, as the real 0.15.5 prints them.
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("🔑 Your administrator account is 'admin' with password '"),
        "{stderr}"
    );
    let password = stderr
        .split("password '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap()
        .to_string();
    let cfg = base.join("etc/config.toml");
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .contains("secret = \"$6$"));
    let mut s = env.start(&rel("0.15.5"), &cfg, &[]);
    s.wait_ready();
    assert_eq!(
        webadmin(s.port, Some(&basic("admin", &password))).status,
        200
    );
    assert_eq!(webadmin(s.port, Some(&basic("admin", "nope"))).status, 401);
    s.stop();
    assert!(base.join("data/CURRENT").exists());
}
