//! The upgrade transaction end to end, in booted systemd containers with the stand-in server:
//! patch and minor upgrades, each broken release rolled back, rollback after a minor upgrade,
//! and two helpers at once.

mod common;
use common::*;
use testbed::Fault;

#[test]
fn patch_upgrade_commits_and_keeps_the_old_release() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("committed"), "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.15.6");
    let after = s.digest();
    assert_eq!(after["version"], "0.15.6");
    assert_eq!(
        data_of(&after),
        data_of(&before),
        "a patch upgrade keeps the data"
    );
    assert!(s
        .ct
        .path("/var/lib/stalwart-upgrade/releases/0.15.5/stalwart")
        .is_file());
    let (last, steps) = s.last_steps();
    assert_eq!(last["ending"], "committed", "{last}");
    for want in [
        "stage", "stop", "snapshot", "swap", "start", "health", "webadmin",
    ] {
        assert!(
            steps.iter().any(|x| x == want),
            "step {want} missing in {steps:?}"
        );
    }
    assert_eq!(s.status_code(), 0);
    assert!(!s.ct.path("/opt/stalwart/bin.new").exists());
}

#[test]
fn minor_upgrade_migrates_the_schema() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    let before = s.digest();
    assert_eq!(before["schema"], 4);
    let refused = s.upgrade(&release("0.15.5", Fault::None, 1500), &[]);
    assert_eq!(
        code(&refused),
        3,
        "minor needs approval: {}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("stalwart-upgrade allow 0.15"),
        "{}",
        text(&refused)
    );
    s.allow("0.15");
    let out = s.upgrade(&release("0.15.5", Fault::None, 1500), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let after = s.digest();
    assert_eq!(after["schema"], 5);
    assert_eq!(after["records"], before["records"]);
    assert_eq!(s.binary_version(), "0.15.5");
}

/// Upgrades to a broken release and checks the old version runs again on its original data.
fn broken(from: (&str, Fault), to: (&str, Fault, u64), helper_config: &str, expect: &str) {
    let s = Scenario::with(
        &release(from.0, from.1, 0),
        testbed::stalwart::ServerLayout::rocksdb(),
        helper_config,
    );
    let before = s.digest();
    if from.0[..4] != to.0[..4] {
        s.allow(&to.0[..4]);
    }
    let out = s.upgrade(&release(to.0, to.1, to.2), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "expected ROLLED_BACK: {t}");
    assert!(t.contains("Rolled back"), "{t}");
    assert!(
        t.to_lowercase().contains(&expect.to_lowercase()),
        "message should name {expect:?}: {t}"
    );
    s.ready();
    assert_eq!(s.binary_version(), from.0);
    let after = s.digest();
    assert_eq!(after["version"], from.0);
    assert_eq!(data_of(&after), data_of(&before), "original data back");
    let st = s.helper(&["status"], &[]);
    assert_eq!(
        code(&st),
        8,
        "status must flag the failed upgrade: {}",
        text(&st)
    );
    assert!(
        text(&st).contains("will not be retried") || text(&st).contains("not be retried"),
        "{}",
        text(&st)
    );
    // Not retried by a second run (as dpkg --configure -a would do): refused, no new outage.
    let again = s.upgrade(&release(to.0, to.1, to.2), &[]);
    assert_eq!(code(&again), 3, "{}", text(&again));
    assert!(text(&again).contains("--retry"), "{}", text(&again));
}

#[test]
fn release_failing_its_migration_with_exit_0_is_rolled_back() {
    broken(
        ("0.14.3", Fault::None),
        ("0.15.5", Fault::MigrationFails, 0),
        DEFAULT_HELPER_CONFIG,
        "failed to migrate",
    );
}

#[test]
fn release_crashing_at_start_is_rolled_back() {
    broken(
        ("0.15.5", Fault::None),
        ("0.15.6", Fault::CrashAtStart, 0),
        DEFAULT_HELPER_CONFIG,
        "stopped during start",
    );
}

#[test]
fn release_never_ready_is_rolled_back() {
    broken(
        ("0.15.5", Fault::None),
        ("0.15.6", Fault::NeverReady, 0),
        &DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 4"),
        "did not answer 200",
    );
}

#[test]
fn minor_release_that_migrates_then_never_gets_ready_gets_the_old_data_back() {
    // The new version migrated schema 4 -> 5 before failing: without the snapshot, 0.14.3 would
    // panic on the newer schema. The rollback must restore the data.
    broken(
        ("0.14.3", Fault::None),
        ("0.15.5", Fault::NeverReady, 0),
        &DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 4"),
        "data restored from snapshot",
    );
}

#[test]
fn server_that_ignores_stop_keeps_running_the_old_version() {
    // The running release ignores SIGINT/SIGTERM: the stop job times out, nothing was swapped,
    // and the old version is brought back (systemd kills it after TimeoutStopSec and restarts it).
    let s = Scenario::with(
        &release("0.15.5", Fault::IgnoreStop, 0),
        testbed::stalwart::ServerLayout::rocksdb(),
        &DEFAULT_HELPER_CONFIG.replace("stop_secs = 20", "stop_secs = 3"),
    );
    s.ct.write_file(
        "/etc/systemd/system/stalwart.service.d/stop.conf",
        "[Service]\nTimeoutStopSec=6\n",
    )
    .unwrap();
    s.ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
    let before = s.digest();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(t.contains("stop") && t.contains("within 3 s"), "{t}");
    s.serves("0.15.5", &before);
}

#[test]
fn rollback_after_a_minor_upgrade_restores_binary_and_data() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    let before = s.digest();
    s.allow("0.15");
    let out = s.upgrade(&release("0.15.5", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.deliver(5);

    // Binary only is refused: the old binary cannot read the migrated schema...
    let bo = s.helper(&["rollback", "--binary-only", "--yes"], &[]);
    assert_eq!(code(&bo), 3, "{}", text(&bo));
    assert!(text(&bo).contains("schema"), "{}", text(&bo));
    // ...which is true: run 0.14.3 by hand against the migrated data and it panics.
    s.ct.exec_ok(&["systemctl", "stop", "stalwart.service"])
        .unwrap();
    // (The kept release lives in the root-only state dir; copy it where the user can run it.)
    s.ct.exec_ok(&[
        "install",
        "-m",
        "0755",
        "/var/lib/stalwart-upgrade/releases/0.14.3/stalwart",
        "/usr/local/bin/old-stalwart",
    ])
    .unwrap();
    let old = "/usr/local/bin/old-stalwart";
    let panic = s.ct.exec(&[
        "runuser",
        "-u",
        "stalwart",
        "--",
        old,
        "--config=/opt/stalwart/etc/config.toml",
    ]);
    assert_eq!(code(&panic), 101, "{}", text(&panic));
    assert!(
        text(&panic).contains("Unknown database schema version"),
        "{}",
        text(&panic)
    );
    s.ct.exec_ok(&["systemctl", "start", "stalwart.service"])
        .unwrap();
    s.ready();

    let rb = s.helper(&["rollback", "--yes"], &[]);
    assert_eq!(code(&rb), 0, "{}", text(&rb));
    s.ready();
    assert_eq!(s.binary_version(), "0.14.3");
    let after = s.digest();
    assert_eq!(after["schema"], 4);
    assert_eq!(
        data_of(&after),
        data_of(&before),
        "pre-upgrade data is back"
    );
}

#[test]
fn second_upgrade_waits_then_refuses_naming_the_first() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    s.allow("0.15");
    let target = s.inside(&release("0.15.5", Fault::None, 8000));
    let mut first =
        s.ct.cmd(&[&s.helper, "upgrade", "--to", &target, "--yes"])
            .spawn()
            .unwrap();
    // Wait until the first one has begun its transaction.
    let journal = s.ct.path("/var/lib/stalwart-upgrade/journal.jsonl");
    let t0 = std::time::Instant::now();
    while !journal.exists() && t0.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(journal.exists(), "first upgrade never began");
    let second = s.upgrade(&release("0.15.5", Fault::None, 8000), &[]);
    let t = text(&second);
    assert_eq!(code(&second), 7, "{t}");
    assert!(t.contains("another stalwart-upgrade (pid"), "{t}");
    let status = first.wait().unwrap();
    assert!(status.success(), "first upgrade failed: {status}");
    assert_eq!(s.binary_version(), "0.15.5");
}

#[test]
fn swap_falls_back_to_renames_where_exchange_is_refused() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let out = s.upgrade(
        &release("0.15.6", Fault::None, 0),
        &[("STALWART_UPGRADE_NO_EXCHANGE", "1")],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("three-rename fallback"),
        "{}",
        text(&out)
    );
    assert_eq!(s.binary_version(), "0.15.6");
    assert!(!s.ct.path("/opt/stalwart/bin.old").exists());
}

/// A server whose only HTTP listener has implicit TLS (self-signed, for the mail domain): the
/// health gate and the web-admin refresh reach it on https://127.0.0.1 (see src/os/tls.rs).
#[test]
fn an_https_only_server_is_upgraded_over_tls_on_loopback() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.ct.sh_ok(
        "cd /opt/stalwart/etc && \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
           -subj /CN=mail.example.org -keyout key.pem -out cert.pem 2>/dev/null && \
         sed -i 's/^\\[server.listener.http\\]$/[server.listener.https]/; \
                 s/^bind = \\[\"127.0.0.1:8080\"\\]$/bind = [\"127.0.0.1:8443\"]\\ntls.implicit = true/' config.toml && \
         printf '\\n[certificate.default]\\ncert = \"%%{file:/opt/stalwart/etc/cert.pem}%%\"\\nprivate-key = \"%%{file:/opt/stalwart/etc/key.pem}%%\"\\n' >> config.toml && \
         chown stalwart:stalwart key.pem cert.pem && chmod 0600 key.pem && \
         systemctl restart stalwart",
    )
    .unwrap();
    let https = |path: &str| {
        s.ct.sh_ok(&format!(
            "for i in $(seq 1 100); do curl -sfk https://127.0.0.1:8443{path} && exit 0; sleep 0.1; done; exit 1"
        ))
        .unwrap()
    };
    https("/healthz/ready");
    let plain = s.ct.sh("curl -sf http://127.0.0.1:8080/healthz/ready");
    assert!(!plain.status.success(), "no plain-HTTP listener is left");
    let before: serde_json::Value = serde_json::from_str(&https("/standin/digest")).unwrap();

    let target = release("0.15.6", Fault::None, 0);
    let plan = s.helper(&["plan", "--to", &s.inside(&target)], &[]);
    assert!(
        text(&plan).contains("health:        https://127.0.0.1:8443/healthz/ready"),
        "{}",
        text(&plan)
    );
    let out = s.upgrade(&target, &[]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(!t.contains("web admin refresh failed"), "{t}");
    let after: serde_json::Value = serde_json::from_str(&https("/standin/digest")).unwrap();
    assert_eq!(after["version"], "0.15.6");
    assert_eq!(data_of(&after), data_of(&before));
    let (_, steps) = s.last_steps();
    assert!(
        steps.iter().any(|x| x == "webadmin"),
        "web admin refreshed: {steps:?}"
    );
}
