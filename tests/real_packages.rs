//! The real-server tier through the packages: a first `apt-get install stalwart` of a package
//! around upstream's real binary, as a new user would do it.

mod packages_common;
use packages_common::*;
use std::time::Duration;
use testbed::real_server::{alice, RealServer, HTTP};

/// The admin gets a working password: upstream's `--init` prints it on stderr (measured with the
/// real 0.15.5; the helper kept only stdout and lost it), the hook shows it, and it logs in.
#[test]
fn a_first_install_of_a_real_0_15_package_shows_a_working_admin_password() {
    let test = "a_first_install_of_a_real_0_15_package_shows_a_working_admin_password";
    let Some(rel) = testbed::real::newest("0.15") else {
        testbed::real::skip(test, "no 0.15 release in the real-server tier");
        return;
    };
    let m = Machine::apt();
    let helper = helper_packages();
    let server = real_server_packages(rel);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    let password = out
        .split("with password '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("apt shows no administrator password: {out}"))
        .to_string();
    assert!(password.len() >= 8, "{out}");
    if !rel.rocksdb {
        // The config `--init` writes uses RocksDB, which this build of upstream's source lacks
        // (official release builds have it): upstream exits 0 at once, nothing listens, and
        // the hook says the server did not come up. An admin of such a build switches the store
        // to SQLite; then the same password works.
        assert!(out.contains("did not come up healthy"), "{out}");
        m.sh_ok(
            "sed -i 's/^type = \"rocksdb\"/type = \"sqlite\"/; s#^path = \"/opt/stalwart/data\"$#path = \"/opt/stalwart/data/index.sqlite3\"#' /opt/stalwart/etc/config.toml && \
             systemctl restart stalwart.service",
        );
    }
    m.ct.in_netns(|| testbed::mail::wait_ready("http://127.0.0.1:8080", Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", m.ct.journal("stalwart.service")));
    let api = testbed::mail::Rest015::new("http://127.0.0.1:8080", "admin", &password);
    let count = m
        .ct
        .in_netns(|| api.get("/api/principal?count=true"))
        .unwrap_or_else(|e| panic!("the admin cannot log in with the password apt showed: {e:#}"));
    assert!(count["total"].is_number(), "{count}");
    let wrong = testbed::mail::Rest015::new("http://127.0.0.1:8080", "admin", "not-the-password");
    assert!(m
        .ct
        .in_netns(|| wrong.get("/api/principal?count=true"))
        .is_err());
}

/// The helper's settings for the real 0.16 package test: the web-admin refresh on (with the
/// administrator the package pinned in stalwart.env), timeouts for a real server.
const HELPER_CONFIG_016: &str = r#"
[timeouts]
stop_secs = 30
start_secs = 30
ready_secs = 60
settle_secs = 1
lock_wait_secs = 10
"#;

/// A new user's 0.16: `apt-get install stalwart` starts a server in normal mode (not upstream's
/// bootstrap wizard) with the administrator the package generated in stalwart.env; accounts
/// made through the real API and mail over SMTP survive `apt-get install` of the next release
/// (the helper's transaction, web-admin refresh with that administrator) and a rollback.
#[test]
fn a_real_0_16_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_apt() {
    let test = "a_real_0_16_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_apt";
    let Some(rels) = testbed::real::require(test, &["0.16.17", "0.16.18"]) else {
        return;
    };
    let (old, new) = (rels[0], rels[1]);
    let m = Machine::apt();
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG_016)
        .unwrap();
    let helper = helper_packages();
    let first = real_server_packages(old);
    m.publish_debs(&[&helper.deb, &first.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    assert!(out.contains("STALWART_RECOVERY_ADMIN"), "{out}");
    // The credential: root:stalwart 0640, readable by the server only through systemd.
    let env = m.sh_ok("stat -c '%U:%G %a' /opt/stalwart/etc/stalwart.env");
    assert_eq!(env.trim(), "root:stalwart 640");
    let password = m
        .sh_ok("sed -n 's/^STALWART_RECOVERY_ADMIN=admin://p' /opt/stalwart/etc/stalwart.env")
        .trim()
        .to_string();
    assert!(password.len() >= 16, "no generated password: {password:?}");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(90)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", m.ct.journal("stalwart.service")));
    // Normal mode: the anonymous session names an absolute API URL (recovery and bootstrap
    // mode a relative one; measured), and the mail listeners are up.
    let (code_, session) =
        m.ct.in_netns(|| {
            Ok::<_, anyhow::Error>(testbed::mail::http_get(
                &format!("{HTTP}/jmap/session"),
                None,
            ))
        })
        .unwrap();
    assert_eq!(code_, 200, "{session}");
    let session: serde_json::Value = serde_json::from_str(&session).unwrap();
    assert!(
        session["apiUrl"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http"),
        "not in normal mode: {session}"
    );
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));

    let admin = testbed::mail::Jmap016::new(HTTP, "admin", &password);
    m.ct.in_netns(|| admin.disable_pyzor()).unwrap();
    RealServer::populate_as(&m.ct, true, "admin", &password).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), "before-the-upgrade").expect("mail");

    // The next release through apt: the helper's transaction runs in the maintainer scripts.
    let next = real_server_packages(new);
    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    assert!(out.contains("committed"), "{out}");
    assert_eq!(m.dpkg_audit(), "");
    assert!(m
        .dpkg_status("stalwart")
        .starts_with("install ok installed 0.16.18"));
    let runs = |r: &testbed::real::RealRelease| {
        m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            RealServer::running_sha256(&m.ct).unwrap(),
            r.sha256,
            "not running the bytes of {}",
            r.version
        );
    };
    runs(new);
    RealServer::sees(&m.ct, true, &alice(), &["before-the-upgrade"]).unwrap();
    RealServer::deliver(&m.ct, true, &alice(), "under-0.16.18").unwrap();
    let last = m.history().pop().expect("a transaction");
    assert_eq!(last["ending"], "committed", "{last}");
    // The refresh authenticated with the package's administrator (offline, the server then
    // loses its bundle: that is a warning, never a rollback).
    for refused in [
        "no credentials for the web admin",
        "refused the credentials",
    ] {
        assert!(!out.contains(refused), "{out}");
    }

    let out = m.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    runs(old);
    RealServer::sees(
        &m.ct,
        true,
        &alice(),
        &["before-the-upgrade", "under-0.16.18"],
    )
    .unwrap();
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));
}
