//! Across upstream's 0.16 line, in booted containers: 0.15 -> 0.16 with approval (config.json
//! written from config.toml's data store, the unit pointed at it, one recovery-mode start that
//! migrates schema 5 -> 6 and wipes settings), and a broken 0.16 release rolled back completely:
//! binary, config.toml, unit and data as before; and `rollback` from 0.16 back below the line.

mod common;
use common::*;
use testbed::Fault;

const DROPIN: &str = "/etc/systemd/system/stalwart.service.d/50-stalwart-upgrade-0.16.conf";
const JSON: &str = "/opt/stalwart/etc/config.json";
const TOML: &str = "/opt/stalwart/etc/config.toml";

fn sha(s: &Scenario, path: &str) -> String {
    s.ct.exec_ok(&["sha256sum", path]).unwrap()
}

#[test]
fn upgrade_from_0_15_to_0_16_with_approval() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let toml = sha(&s, TOML);
    let target = release("0.16.18", Fault::None, 500);
    let refused = s.upgrade(&target, &[]);
    assert_eq!(code(&refused), 3, "needs approval: {}", text(&refused));
    s.allow("0.16");
    let plan = s.helper(&["plan", "--to", &s.inside(&target)], &[]);
    assert!(
        text(&plan).contains("once in recovery mode") && text(&plan).contains("wipes settings"),
        "{}",
        text(&plan)
    );

    assert!(
        text(&plan).contains("carried over:") && text(&plan).contains("NetworkListener"),
        "{}",
        text(&plan)
    );
    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The 0.15 fallback admin is carried over as 0.16's STALWART_RECOVERY_ADMIN: the web-admin
    // refresh with the old credentials works on 0.16.
    assert!(
        !text(&out).contains("web admin refresh failed"),
        "{}",
        text(&out)
    );
    let env =
        s.ct.exec_ok(&["cat", "/etc/stalwart-upgrade/stalwart.env"])
            .unwrap();
    assert!(env.contains("STALWART_RECOVERY_ADMIN='admin:"), "{env}");
    let mode =
        s.ct.exec_ok(&[
            "stat",
            "-c",
            "%U:%G %a",
            "/etc/stalwart-upgrade/stalwart.env",
        ])
        .unwrap();
    assert_eq!(mode.trim(), "root:stalwart 640");
    assert!(
        s.ct.exec_ok(&[
            "sh",
            "-c",
            "ls /var/lib/stalwart-upgrade/carry/*/objects.json"
        ])
        .is_ok(),
        "the dump and the objects are kept"
    );
    s.ready();
    assert_eq!(s.binary_version(), "0.16.18");
    let after = s.digest();
    assert_eq!(after["schema"], 6, "{after}");
    let (b, a) = (
        before["records"].as_u64().unwrap(),
        after["records"].as_u64().unwrap(),
    );
    assert!(
        a < b && a > 0,
        "mail kept, settings wiped: {before} -> {after}"
    );
    let json = s.ct.exec_ok(&["cat", JSON]).unwrap();
    assert!(
        json.contains("\"RocksDb\"") && json.contains("/opt/stalwart/data"),
        "{json}"
    );
    assert_eq!(sha(&s, TOML), toml, "config.toml untouched");
    let exec =
        s.ct.exec_ok(&["systemctl", "show", "-P", "ExecStart", "stalwart.service"])
            .unwrap();
    assert!(exec.contains("config.json"), "{exec}");
    let env =
        s.ct.exec_ok(&["systemctl", "show", "-P", "Environment", "stalwart.service"])
            .unwrap();
    assert!(
        !env.contains("RECOVERY"),
        "recovery mode must be off after the migration: {env}"
    );
    let (_, steps) = s.last_steps();
    assert!(
        steps.iter().any(|x| x == "generation") && steps.iter().any(|x| x == "migrate"),
        "{steps:?}"
    );
}

#[test]
fn broken_0_16_release_is_rolled_back_to_0_15_completely() {
    let s = Scenario::with(
        &release("0.15.5", Fault::None, 0),
        testbed::stalwart::ServerLayout::rocksdb(),
        &DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 4"),
    );
    let before = s.digest();
    let toml = sha(&s, TOML);
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.18", Fault::NeverReady, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(
        t.contains("config.json, stalwart.env's carried admin and the unit drop-in"),
        "{t}"
    );
    assert!(t.contains("data restored from snapshot"), "{t}");
    s.ready();
    assert_eq!(s.binary_version(), "0.15.5");
    assert!(
        !s.ct.path("/etc/stalwart-upgrade/stalwart.env").exists(),
        "the env file the crossing created is gone"
    );
    assert_eq!(data_of(&s.digest()), data_of(&before), "schema-5 data back");
    assert_eq!(sha(&s, TOML), toml);
    assert!(!s.ct.path(JSON).exists(), "config.json removed");
    assert!(!s.ct.path(DROPIN).exists(), "drop-in removed");
    let exec =
        s.ct.exec_ok(&["systemctl", "show", "-P", "ExecStart", "stalwart.service"])
            .unwrap();
    assert!(exec.contains("config.toml"), "{exec}");
}

#[test]
fn rollback_from_0_16_returns_to_config_toml_and_the_schema_5_data() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let toml = sha(&s, TOML);
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    s.deliver(4);
    let json = s.ct.exec_ok(&["cat", JSON]).unwrap();

    let rb = s.helper(&["rollback", "--yes"], &[]);
    let t = text(&rb);
    assert_eq!(code(&rb), 0, "{t}");
    // Told before: which data comes back, that the newer data is kept, the config switch.
    assert!(
        t.contains("rollback:      stalwart.service from 0.16.18 to the kept release 0.15.5")
            && t.contains("is put back")
            && t.contains("kept in a new snapshot")
            && t.contains("config.json and the unit drop-in are set aside"),
        "{t}"
    );
    s.ready();
    assert_eq!(s.binary_version(), "0.15.5");
    let after = s.digest();
    assert_eq!(after["schema"], 5, "{after}");
    assert_eq!(
        data_of(&after),
        data_of(&before),
        "the data from before the upgrade"
    );
    assert_eq!(sha(&s, TOML), toml, "config.toml untouched");
    assert!(!s.ct.path(JSON).exists(), "config.json set aside");
    assert!(!s.ct.path(DROPIN).exists(), "drop-in set aside");
    let exec =
        s.ct.exec_ok(&["systemctl", "show", "-P", "ExecStart", "stalwart.service"])
            .unwrap();
    assert!(exec.contains("config.toml"), "{exec}");
    assert!(
        !s.ct.path("/var/lib/stalwart-upgrade/aside").exists()
            || s.ct
                .sh_ok("ls -A /var/lib/stalwart-upgrade/aside")
                .unwrap()
                .trim()
                .is_empty(),
        "the aside copy is cleared on commit"
    );

    // The 0.16 data is kept: the commit names the snapshot, which holds config.json and the
    // schema-6 store as they were.
    let kept = t
        .split("is kept in snapshot ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kept snapshot named: {t}"));
    let list = s.helper(&["snapshot", "list", "--json"], &[]);
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let snap = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == kept)
        .unwrap_or_else(|| panic!("{kept} not in {snaps:#}"));
    assert_eq!(snap["server_version"], "0.16.18");
    let copy = snap["config_copy"].as_str().expect("config copy");
    let copied =
        s.ct.exec_ok(&[
            "cat",
            &format!("/var/lib/stalwart-upgrade/snapshots/{kept}/{copy}"),
        ])
        .unwrap();
    assert_eq!(copied, json);

    // Up again: the same upgrade works from here (config.json written anew).
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    assert_eq!(
        code(&out),
        3,
        "a used approval must be given again: {}",
        text(&out)
    );
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.16.18");
}

/// A 0.16 installation: 0.15.5 crossed to 0.16.17 with approval.
fn on_0_16_17() -> Scenario {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.17", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    s
}

/// 0.16 without its config.json starts upstream's bootstrap wizard: ready, but on an empty
/// in-memory store with no mail listeners. The gate must call that a failure, and the rollback
/// must put config.json back before it starts the old release, or that one comes up in
/// bootstrap mode too.
#[test]
fn a_0_16_that_comes_up_in_bootstrap_mode_is_rolled_back_with_its_config_put_back() {
    let s = on_0_16_17();
    let before = s.digest();
    let json = sha(&s, JSON);
    let stat = |s: &Scenario| s.ct.exec_ok(&["stat", "-c", "%U:%G %a", JSON]).unwrap();
    let owner = stat(&s);
    let out = s.upgrade_pausing(
        &release("0.16.18", Fault::None, 0),
        "swap:done",
        &format!("rm {JSON}"),
    );
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(
        t.contains("bootstrap mode") || t.contains("recovery"),
        "{t}"
    );
    assert!(t.contains("was missing: put back from snapshot"), "{t}");
    assert_eq!(sha(&s, JSON), json, "config.json back, byte for byte");
    assert_eq!(stat(&s), owner, "owner and mode of before");
    s.serves("0.16.17", &before);
    // Healthy again, and `status` still tells monitoring that an upgrade failed.
    assert_eq!(s.status_code(), 8);
}

/// `STALWART_RECOVERY_MODE` in stalwart.env keeps any 0.16 in recovery mode (no mail): refused
/// before anything is stopped, with the file and what to do. So is a 1.x target.
#[test]
fn recovery_mode_in_the_env_file_and_a_1_x_target_are_refused_before_any_downtime() {
    let s = on_0_16_17();
    let pid = s.main_pid();
    // And a 1.x release: never in place (upstream's way is stalwart-migrate's copy, from 0.16.27).
    let out = s.upgrade(&release("1.0.0", Fault::None, 0), &[]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("no upgrade path"), "{}", text(&out));
    assert!(
        text(&out).contains("stalwart-migrate") && text(&out).contains("0.16.27"),
        "{}",
        text(&out)
    );
    s.ct.write_file(
        "/etc/stalwart-upgrade/stalwart.env",
        "STALWART_RECOVERY_MODE=true\n",
    )
    .unwrap();
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 3, "{t}");
    assert!(
        t.contains("STALWART_RECOVERY_MODE") && t.contains("/etc/stalwart-upgrade/stalwart.env"),
        "{t}"
    );
    assert!(t.contains("nothing was changed"), "{t}");
    assert_eq!(s.main_pid(), pid, "not stopped");
    assert_eq!(s.binary_version(), "0.16.17");
}

/// `STALWART_RECOVERY_MODE=1` written into stalwart.env after the preflight (the helper paused
/// at swap:done): the new version comes up in recovery mode and the gate fails it; the rollback
/// puts the old binary back, but its start meets the same environment, so the helper stops there
/// (exit 6) naming the file; `status` exits 8; the fix it names brings 0.16.17 back on its data.
#[test]
fn recovery_mode_set_during_the_upgrade_fails_the_gate_and_names_the_file() {
    let s = on_0_16_17();
    let before = s.digest();
    let out = s.upgrade_pausing(
        &release("0.16.18", Fault::None, 0),
        "swap:done",
        "echo STALWART_RECOVERY_MODE=1 > /etc/stalwart-upgrade/stalwart.env",
    );
    let t = text(&out);
    assert!(t.contains("in recovery or bootstrap mode"), "{t}");
    assert!(
        t.contains("STALWART_RECOVERY_MODE is set in /etc/stalwart-upgrade/stalwart.env"),
        "{t}"
    );
    assert_eq!(code(&out), 6, "{t}");
    assert_eq!(s.binary_version(), "0.16.17", "old binary back");
    assert_eq!(s.status_code(), 8);
    s.ct.exec_ok(&["rm", "/etc/stalwart-upgrade/stalwart.env"])
        .unwrap();
    s.ct.exec_ok(&["systemctl", "restart", "stalwart.service"])
        .unwrap();
    s.serves("0.16.17", &before);
}

/// `status` is a monitoring check on both generations: exit 8 while the unit is not active, and
/// while a 0.16 answers in recovery mode (ready, but no mail).
#[test]
fn status_exits_8_when_the_server_is_down_or_0_16_is_not_in_normal_mode() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let status = |s: &Scenario| {
        let o = s.helper(&["status"], &[]);
        (code(&o), text(&o))
    };
    assert_eq!(status(&s).0, 0, "{}", status(&s).1);
    let cycle = |s: &Scenario| {
        s.ct.exec_ok(&["systemctl", "stop", "stalwart.service"])
            .unwrap();
        let (c, t) = status(s);
        assert_eq!(c, 8, "{t}");
        assert!(t.contains("the mail server is not running"), "{t}");
        s.ct.exec_ok(&["systemctl", "start", "stalwart.service"])
            .unwrap();
        s.ready();
    };
    cycle(&s);
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.17", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(status(&s).0, 0, "{}", status(&s).1);
    cycle(&s);
    s.ct.write_file(
        "/etc/stalwart-upgrade/stalwart.env",
        "STALWART_RECOVERY_MODE=1\n",
    )
    .unwrap();
    s.ct.exec_ok(&["systemctl", "restart", "stalwart.service"])
        .unwrap();
    s.ready();
    let (c, t) = status(&s);
    assert_eq!(c, 8, "{t}");
    assert!(t.contains("bootstrap or recovery mode"), "{t}");
}

/// 0.16 refusing an object of the carry step (as the real one refuses what it cannot accept)
/// fails the crossing: back on 0.15.5 with its data, config.toml, unit and no 0.16 files.
#[test]
fn a_registry_refusal_during_the_carry_rolls_the_crossing_back() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.18", Fault::RegistryRefuses, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(t.contains("0.16 refused NetworkListener"), "{t}");
    s.serves("0.15.5", &before);
    for gone in [JSON, DROPIN, "/etc/stalwart-upgrade/stalwart.env"] {
        assert!(!s.ct.path(gone).exists(), "{gone} left behind: {t}");
    }
}

/// A failure after the carry step pinned the admin in stalwart.env (the normal start of 0.16
/// fails): the undo takes the env file away again with config.json.
#[test]
fn a_failure_after_the_carry_takes_the_pinned_admin_away_again() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    s.allow("0.16");
    let out = s.upgrade_pausing(
        &release("0.16.18", Fault::None, 0),
        "carry:done",
        &format!(
            "grep -q \"STALWART_RECOVERY_ADMIN='admin:\" /etc/stalwart-upgrade/stalwart.env && echo not-json > {JSON}"
        ),
    );
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    s.serves("0.15.5", &before);
    assert!(
        !s.ct.path("/etc/stalwart-upgrade/stalwart.env").exists(),
        "{t}"
    );
}

/// Issue 26: the crossing's dump is taken last, right before the stop. A password changed after
/// the plan read 0.15's directory (here: while the upgrade is paused after staging, i.e. after
/// the pre-hash and the staging that take minutes on a large install) is the one carried.
#[test]
fn a_password_changed_after_the_plan_and_before_the_stop_is_carried() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let api = |method: &str, path: &str, body: &str| {
        s.ct.exec_ok(&[
            "curl",
            "-sf",
            "-u",
            &format!("admin:{}", testbed::stalwart::DEFAULT_ADMIN_SECRET),
            "-X",
            method,
            "-d",
            body,
            &format!("{}{path}", testbed::stalwart::HTTP),
        ])
        .unwrap()
    };
    api(
        "POST",
        "/api/principal",
        r#"{"type":"domain","name":"example.org"}"#,
    );
    api(
        "POST",
        "/api/principal",
        r#"{"type":"individual","name":"alice","secrets":["old-password-1"],"emails":["alice@example.org"],"roles":["user"]}"#,
    );
    s.allow("0.16");
    let target = release("0.16.18", Fault::None, 0);
    let plan = s.helper(&["plan", "--to", &s.inside(&target)], &[]);
    assert!(text(&plan).contains("1 Account/User"), "{}", text(&plan));
    let change = format!(
        "curl -sf -u admin:{} -X PATCH -d '[{{\"action\":\"set\",\"field\":\"secrets\",\"value\":[\"new-password-2\"]}}]' {}/api/principal/alice",
        testbed::stalwart::DEFAULT_ADMIN_SECRET,
        testbed::stalwart::HTTP
    );
    let out = s.upgrade_pausing(&target, "stage:done", &change);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains("0.15's directory changed since the plan (1 principals, 0 settings)"),
        "{t}"
    );
    // What the carry step created in 0.16 (kept in the crossing's dir until the next commit).
    let objects: serde_json::Value = serde_json::from_str(
        &s.ct
            .sh_ok("cat /var/lib/stalwart-upgrade/carry/*/objects.json")
            .unwrap(),
    )
    .unwrap();
    let secret = objects["ops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["object"] == "Account")
        .flat_map(|op| op["items"].as_array().unwrap().iter())
        .find(|item| item[1]["name"] == "alice")
        .map(|item| {
            item[1]["credentials"]["0"]["secret"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap_or_else(|| panic!("alice is not carried: {objects}"));
    assert!(
        sha_crypt::sha512_check("new-password-2", &secret).is_ok(),
        "the carried password is not the one set before the stop: {secret}"
    );
    assert!(sha_crypt::sha512_check("old-password-1", &secret).is_err());
}

/// Issue 26: an unapproved crossing on a machine without web-admin credentials is refused with
/// both obstacles at once, the policy and its `allow` command first, then the credentials (the
/// admin used to learn the second only after fixing the first); nothing was stopped.
#[test]
fn an_unapproved_crossing_without_credentials_names_both_the_policy_first() {
    let s = Scenario::with(
        &release("0.15.5", Fault::None, 0),
        testbed::stalwart::ServerLayout::default(),
        &DEFAULT_HELPER_CONFIG.replace(
            "credentials_file = \"/etc/stalwart-upgrade/webadmin.cred\"",
            "credentials_file = \"/etc/stalwart-upgrade/nothing-here.cred\"",
        ),
    );
    let pid = s.main_pid();
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 3, "the policy's exit code: {t}");
    let policy = t
        .find("stalwart-upgrade allow 0.16")
        .unwrap_or_else(|| panic!("no allow command: {t}"));
    let credentials = t
        .find("nothing-here.cred")
        .unwrap_or_else(|| panic!("no credentials blocker: {t}"));
    assert!(policy < credentials, "the policy first: {t}");
    assert!(t.contains("2 things stop this upgrade"), "{t}");
    assert_eq!(s.main_pid(), pid, "nothing was stopped");
    assert_eq!(s.binary_version(), "0.15.5");
}
