//! The real-server tier through the packages: a first `apt-get install stalwart` of a package
//! around upstream's real binary, as a new user would do it.

mod packages_common;
use packages_common::*;
use std::time::Duration;
use testbed::real_server::{alice, RealServer, HTTP};

/// The admin gets a working password: upstream's `--init` prints it on stderr (measured with the
/// real 0.15.5; the helper kept only stdout and lost it), the hook shows it, and it logs in.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
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

/// The package manager a test drives.
#[derive(Clone, Copy)]
enum Pm {
    Apt,
    Dnf,
}

impl Pm {
    /// A machine for the packages in `built` (dnf's rpm database must provide what they need).
    fn machine(self, built: &[&Built]) -> Machine {
        match self {
            Pm::Apt => Machine::apt(),
            Pm::Dnf => Machine::dnf_with(&built.iter().map(|b| b.rpm.clone()).collect::<Vec<_>>()),
        }
    }
    fn publish(self, m: &Machine, b: &Built) {
        match self {
            Pm::Apt => {
                m.publish_debs(&[&b.deb]);
                m.apt_ok("update");
            }
            Pm::Dnf => m.publish_rpms(&[&b.rpm]),
        }
    }
    /// Installs, or upgrades to the newest published, `stalwart`; the output.
    fn install(self, m: &Machine, first: bool) -> String {
        let (o, what) = match (self, first) {
            (Pm::Apt, _) => (m.apt_get("install stalwart"), "apt-get install"),
            (Pm::Dnf, true) => (m.dnf_run("install stalwart"), "dnf install"),
            (Pm::Dnf, false) => (m.dnf_run("upgrade --refresh stalwart"), "dnf upgrade"),
        };
        assert!(o.status.success(), "{what}: {}", text(&o));
        text(&o)
    }
    /// The package is fully installed at `version` (dpkg: and nothing half-configured).
    fn installed(self, m: &Machine, version: &str) {
        match self {
            Pm::Apt => {
                assert_eq!(m.dpkg_audit(), "");
                let st = m.dpkg_status("stalwart");
                assert!(
                    st.starts_with(&format!("install ok installed {version}")),
                    "{st}"
                );
            }
            Pm::Dnf => {
                let q = m.rpm_q("stalwart");
                assert!(q.starts_with(&format!("stalwart-{version}-")), "{q}");
            }
        }
    }
}

/// A new user's 0.16 or 1.x (`versions`: a release and the next patch release of its line):
/// installing the package starts a server in normal mode (not upstream's bootstrap wizard) with
/// the administrator the package generated in stalwart.env; accounts made through the real API
/// and mail over SMTP survive the package upgrade to the next release (the helper's transaction,
/// unattended: a patch; web-admin refresh with that administrator) and a rollback. Each package
/// carries the web UI bundle for its server (issue #28): /admin/ serves exactly that bundle after
/// the install, the upgrade and the rollback, and the server never fetches upstream's latest.
fn fresh_install_upgrade_and_rollback(test: &str, pm: Pm, versions: [&str; 2]) {
    let Some(rels) = testbed::real::require(test, &versions) else {
        return;
    };
    let (old, new) = (rels[0], rels[1]);
    // The packages' version: a pre-release's `-` is `~` (sorts before the release).
    let pkg = |r: &testbed::real::RealRelease| r.version.replace('-', "~");
    let (first, next) = (
        real_server_packages_with_webui(old),
        real_server_packages_with_webui(new),
    );
    let m = pm.machine(&[&first, &next]);
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG_016)
        .unwrap();
    pm.publish(&m, &helper_packages());
    pm.publish(&m, &first);
    let out = pm.install(&m, true);
    assert!(out.contains("STALWART_RECOVERY_ADMIN"), "{out}");
    pm.installed(&m, &pkg(old));
    // The credential: root:stalwart 0640, readable by the server only through systemd.
    let env = m.sh_ok("stat -c '%U:%G %a' /etc/stalwart-upgrade/stalwart.env");
    assert_eq!(env.trim(), "root:stalwart 640");
    let password = m
        .sh_ok("sed -n 's/^STALWART_RECOVERY_ADMIN=admin://p' /etc/stalwart-upgrade/stalwart.env")
        .trim()
        .to_string();
    assert!(password.len() >= 16, "no generated password: {password:?}");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(90)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", m.ct.journal("stalwart.service")));
    testbed::real_server::assert_normal_mode(&m.ct);
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));

    let admin = testbed::mail::Jmap016::new(HTTP, "admin", &password);
    // The web UI the server serves is the package's, for this very release, pinned.
    let serves_webui_of = |r: &testbed::real::RealRelease, said: &str| {
        let (st, body) =
            m.ct.in_netns(|| testbed::mail::http_get(&format!("{HTTP}/admin/app.js"), None));
        assert_eq!(
            (st, body.trim()),
            (200, format!("// webui-for-{}", r.version).as_str()),
            "/admin/ does not serve the bundle of {}: {said}",
            r.version
        );
        let apps =
            m.ct.in_netns(|| admin.applications())
                .expect("applications");
        let web = apps
            .iter()
            .find(|a| a["urlPrefix"].to_string().contains("/admin"))
            .expect("the web admin's Application");
        assert_eq!(
            web["resourceUrl"], "file:///opt/stalwart/bin/webui.zip",
            "{web}"
        );
        assert!(
            web["autoUpdateFrequency"].as_u64().unwrap_or(0) >= 100 * 365 * 24 * 3600 * 1000,
            "upstream's automatic update is still on: {web}"
        );
    };
    serves_webui_of(old, &out);
    m.ct.in_netns(|| admin.disable_pyzor()).unwrap();
    RealServer::populate_as(&m.ct, true, "admin", &password).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), "before-the-upgrade").expect("mail");

    // The next release through the package manager: the helper's transaction runs in the
    // maintainer scripts / scriptlets.
    pm.publish(&m, &next);
    let out = pm.install(&m, false);
    let upgraded = format!("upgraded {} -> {}", old.version, new.version);
    assert!(out.contains(&upgraded), "{out}");
    pm.installed(&m, &pkg(new));
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
    serves_webui_of(new, &out);
    RealServer::sees(&m.ct, true, &alice(), &["before-the-upgrade"]).unwrap();
    RealServer::deliver(&m.ct, true, &alice(), "under-the-new-release").unwrap();
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
    serves_webui_of(old, &text(&out));
    RealServer::sees(
        &m.ct,
        true,
        &alice(),
        &["before-the-upgrade", "under-the-new-release"],
    )
    .unwrap();
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));
}

#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_0_16_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_apt() {
    fresh_install_upgrade_and_rollback(
        "a_real_0_16_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_apt",
        Pm::Apt,
        ["0.16.17", "0.16.18"],
    );
}

#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_0_16_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_dnf() {
    fresh_install_upgrade_and_rollback(
        "a_real_0_16_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_dnf",
        Pm::Dnf,
        ["0.16.17", "0.16.18"],
    );
}

/// What users install now (issue #28): a 1.x package, then the next 1.x patch package, through
/// apt, with the real 1.x server code (upstream's branch v1.0.0 as 1.0.0-pre.1, the same code
/// labelled 1.0.1-pre.1: ../shared/real-stalwart/README.md).
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_1_x_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_apt() {
    fresh_install_upgrade_and_rollback(
        "a_real_1_x_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_apt",
        Pm::Apt,
        ["1.0.0-pre.1", "1.0.1-pre.1"],
    );
}

/// The same with dnf.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_1_x_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_dnf() {
    fresh_install_upgrade_and_rollback(
        "a_real_1_x_package_installs_in_normal_mode_then_upgrades_and_rolls_back_with_dnf",
        Pm::Dnf,
        ["1.0.0-pre.1", "1.0.1-pre.1"],
    );
}

/// A machine with the helper and `first` (a >= 0.16 package) installed through apt, running in
/// normal mode with the package's administrator; the fixture's accounts, and one mail
/// `subject` for alice.
fn apt_installed_with_mail(first: &Built, subject: &str) -> Machine {
    let m = Machine::apt();
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG_016)
        .unwrap();
    m.publish_debs(&[&helper_packages().deb, &first.deb]);
    m.apt_ok("update");
    m.apt_ok("install stalwart");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(90)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", m.ct.journal("stalwart.service")));
    let password = m
        .sh_ok("sed -n 's/^STALWART_RECOVERY_ADMIN=admin://p' /etc/stalwart-upgrade/stalwart.env")
        .trim()
        .to_string();
    let admin = testbed::mail::Jmap016::new(HTTP, "admin", &password);
    m.ct.in_netns(|| admin.disable_pyzor()).unwrap();
    RealServer::populate_as(&m.ct, true, "admin", &password).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), subject).expect("mail");
    m
}

/// A 1.x minor release (issue #28), with the real 1.x server code labelled 1.1.0-pre.1: the hold
/// keeps apt on the 1.0 line until the admin approves 1.1 (`stalwart-upgrade allow 1.1`, which
/// moves the hold); the upgrade is a minor one, with the data snapshotted at the stop; a
/// rollback puts 1.0 back on that snapshot's data (upstream publishes no rule for 1.x -> 1.y, so
/// a minor release is treated as one that may move the store): the mail from before is there,
/// the mail taken under 1.1 is kept in the snapshot the rollback set aside, which `status` names.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_1_x_minor_release_needs_its_approval_and_rolls_back_with_the_snapshot() {
    let test = "a_real_1_x_minor_release_needs_its_approval_and_rolls_back_with_the_snapshot";
    let Some(rels) = testbed::real::require(test, &["1.0.0-pre.1"]) else {
        return;
    };
    let old = rels[0];
    let first = real_server_packages(old);
    let minor = relabelled_real_packages(old, "1.1.0-pre.1");
    let m = apt_installed_with_mail(&first, "under-1.0");

    m.publish_debs(&[&minor.deb]);
    m.apt_ok("update");
    // Held on 1.0: apt does not even offer 1.1.
    let held = m.apt_ok("install stalwart");
    assert!(
        held.contains("already the newest version (1.0.0~pre.1"),
        "{held}"
    );
    assert!(
        m.sh_ok("cat /etc/apt/preferences.d/stalwart-upgrade")
            .contains("Pin: version 1.0.*"),
        "the hold is on the 1.0 line"
    );
    let allow = m.helper(&["allow", "1.1"]);
    assert_eq!(code(&allow), 0, "{}", text(&allow));
    let out = m.apt_ok("install stalwart");
    assert!(out.contains("upgraded 1.0.0-pre.1 -> 1.1.0-pre.1"), "{out}");
    assert_eq!(m.dpkg_audit(), "");
    let last = m.history().pop().expect("a transaction");
    assert_eq!(last["class"], "minor", "{last}");
    assert!(last["snapshot"].is_string(), "{last}");
    assert!(
        m.sh_ok("cat /etc/apt/preferences.d/stalwart-upgrade")
            .contains("Pin: version 1.1.*"),
        "the hold follows the approved line"
    );
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    RealServer::sees(&m.ct, true, &alice(), &["under-1.0"]).unwrap();
    RealServer::deliver(&m.ct, true, &alice(), "under-1.1").unwrap();

    let out = m.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("is kept in snapshot"), "{t}");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), old.sha256);
    // The data of the stop before the minor upgrade: the mail from before, not 1.1's.
    RealServer::sees(&m.ct, true, &alice(), &["under-1.0"]).unwrap();
    let sees_newer = RealServer::sees(&m.ct, true, &alice(), &["under-1.1"]);
    assert!(
        sees_newer.is_err(),
        "the rollback did not restore the snapshot"
    );
}

/// A 0.16 installation offered a 1.x package (issue #28): 1.x cannot open a 0.16 store and a
/// 1.x binary started on one changes it so that 0.16 no longer opens it (measured with this
/// build), so the package is refused at preinst, before anything stops or is unpacked: apt
/// fails, dpkg is left clean with 0.16 installed, the server runs on as it was, and the message
/// names upstream's way (stalwart-migrate, from 0.16.27).
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_0_16_offered_a_1_x_package_is_refused_before_anything_stops() {
    let test = "a_real_0_16_offered_a_1_x_package_is_refused_before_anything_stops";
    let Some(rels) = testbed::real::require(test, &["0.16.18", "1.0.0-pre.1"]) else {
        return;
    };
    let (old, new) = (rels[0], rels[1]);
    let (first, next) = (real_server_packages(old), real_server_packages(new));
    let m = apt_installed_with_mail(&first, "on-0.16");
    let before = m.invocation();

    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    // The hold keeps apt on 0.16 (it does not even offer 1.x): the admin approves the 1.0 line,
    // which moves the hold; the package's own gate still refuses a 0.x -> 1.x change.
    let held = m.apt_ok("install stalwart");
    assert!(
        held.contains("already the newest version (0.16.18"),
        "{held}"
    );
    let allow = m.helper(&["allow", "1.0"]);
    assert_eq!(code(&allow), 0, "{}", text(&allow));
    let out = m.apt_get("install stalwart");
    let t = text(&out);
    assert!(!out.status.success(), "apt must fail: {t}");
    assert!(
        t.contains("no upgrade path in place")
            && t.contains("stalwart-migrate")
            && t.contains("0.16.27"),
        "{t}"
    );
    // Nothing half-done: dpkg clean, 0.16.18 installed, the same server process serving.
    assert_eq!(m.dpkg_audit(), "");
    let st = m.dpkg_status("stalwart");
    assert!(st.starts_with("install ok installed 0.16.18"), "{st}");
    assert_eq!(m.invocation(), before, "the server was restarted");
    assert_eq!(
        RealServer::running_sha256(&m.ct).unwrap(),
        old.sha256,
        "not running 0.16.18 any more"
    );
    RealServer::sees(&m.ct, true, &alice(), &["on-0.16"]).unwrap();
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));
}

/// install.sh 0.16 with `PREFIX=/opt/stalwart` (bin/ root's, etc/ data/ logs/ the service
/// user's, stalwart.env, its own unit): `apt-get install` of the next release adopts it without
/// touching config or data and upgrades it in the same run; the accounts and mail made through
/// the real API are there afterwards.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_0_16_install_sh_installation_is_adopted_and_upgraded_by_apt() {
    let test = "a_real_0_16_install_sh_installation_is_adopted_and_upgraded_by_apt";
    let Some(rels) = testbed::real::require(test, &["0.16.17", "0.16.18"]) else {
        return;
    };
    let (old, new) = (rels[0], rels[1]);
    let m = Machine::apt_real();
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG_016)
        .unwrap();
    RealServer::install(&m.ct, old, testbed::real::Backend::RocksDb).expect("install.sh 0.16");
    RealServer::populate(&m.ct, true).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), "before-the-adoption").expect("mail");
    let kept = "sha256sum /opt/stalwart/etc/config.json";
    let before = m.sh_ok(kept);
    let env_before = m.sh_ok("sha256sum < /opt/stalwart/etc/stalwart.env");

    let helper = helper_packages();
    let server = real_server_packages(new);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    assert!(out.contains("adopting the existing installation"), "{out}");
    assert!(out.contains("upgraded 0.16.17 -> 0.16.18"), "{out}");
    assert_eq!(m.dpkg_audit(), "");
    assert_eq!(m.sh_ok(kept), before, "config.json untouched");
    // install.sh's env file (in the service user's etc/, read by PID 1 as root) is moved to the
    // root-owned /etc/stalwart-upgrade, unchanged, and the unit reads it there.
    assert!(out.contains("moved the server's environment file"), "{out}");
    assert_eq!(
        m.sh_ok("sha256sum < /etc/stalwart-upgrade/stalwart.env"),
        env_before
    );
    assert_eq!(
        m.sh_ok("stat -c '%U:%G %a' /etc/stalwart-upgrade/stalwart.env")
            .trim(),
        "root:stalwart 640"
    );
    assert!(m
        .sh_ok("systemctl show -p EnvironmentFiles stalwart.service")
        .contains("/etc/stalwart-upgrade/stalwart.env"));
    assert!(!m
        .sh_ok("systemctl show -p EnvironmentFiles stalwart.service")
        .contains("/opt/stalwart/etc/stalwart.env"));
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), new.sha256);
    // Issue #23: bin/ holds the package's verified binary, root's, and no set-id bit is left.
    assert_eq!(
        m.sh_ok("sha256sum < /opt/stalwart/bin/stalwart"),
        m.sh_ok("sha256sum < /usr/lib/stalwart/stalwart")
    );
    assert_eq!(
        m.sh_ok("stat -c '%U %a' /opt/stalwart/bin/stalwart").trim(),
        "root 755"
    );
    assert_eq!(m.sh_ok("find /opt/stalwart -perm /6000"), "");
    RealServer::sees(&m.ct, true, &alice(), &["before-the-adoption"]).unwrap();
    RealServer::deliver(&m.ct, true, &alice(), "after-the-adoption").unwrap();
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));
}

/// install.sh 0.16 without a PREFIX (its FHS layout: /usr/local/bin, /etc/stalwart,
/// /var/lib/stalwart, its own unit) is adopted where it stands by `apt-get install` of the next
/// release (issue #28), which upgrades it in the same run: config.json and the data never move;
/// the binary the packages manage is /opt/stalwart/bin's, /usr/local/bin/stalwart a link to it;
/// the env file moves out of the service user's /etc/stalwart; the mail is there after the
/// upgrade and after a rollback.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_0_16_in_install_sh_fhs_layout_is_adopted_in_place_upgraded_and_rolled_back() {
    let test = "a_real_0_16_in_install_sh_fhs_layout_is_adopted_in_place_upgraded_and_rolled_back";
    let Some(rels) = testbed::real::require(test, &["0.16.17", "0.16.18"]) else {
        return;
    };
    let (old, new) = (rels[0], rels[1]);
    let m = Machine::apt_real();
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG_016)
        .unwrap();
    // What install.sh 0.16 lays out without a PREFIX, with the store a wizard would choose.
    m.sh_ok(&format!(
        "id -u stalwart >/dev/null 2>&1 || useradd stalwart -s /usr/sbin/nologin -M -r -U; \
         install -m 0755 {bin} /usr/local/bin/stalwart && \
         install -d -o stalwart -g stalwart -m 0750 /etc/stalwart /var/lib/stalwart /var/log/stalwart && \
         echo '{{\"@type\":\"RocksDb\",\"path\":\"/var/lib/stalwart/data\"}}' > /etc/stalwart/config.json && \
         chown stalwart:stalwart /etc/stalwart/config.json && \
         echo 'STALWART_RECOVERY_ADMIN={admin}:{secret}' > /etc/stalwart/stalwart.env && \
         chown root:stalwart /etc/stalwart/stalwart.env && chmod 0640 /etc/stalwart/stalwart.env",
        bin = old.in_container(),
        admin = testbed::real_server::ADMIN,
        secret = testbed::real_server::ADMIN_SECRET,
    ));
    m.ct.write_file(
        "/etc/systemd/system/stalwart.service",
        testbed::real_server::UNIT_FILE_016
            .replace("/opt/stalwart/etc", "/etc/stalwart")
            .replace("/opt/stalwart/bin", "/usr/local/bin"),
    )
    .unwrap();
    m.sh_ok("systemctl daemon-reload && systemctl enable --now --quiet stalwart.service");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    let admin = testbed::real_server::RealServer {
        release: old.clone(),
        backend: testbed::real::Backend::RocksDb,
    };
    m.ct.in_netns(|| admin.jmap().disable_pyzor()).unwrap();
    RealServer::populate(&m.ct, true).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), "in-the-fhs-layout").expect("mail");
    let config = "sha256sum /etc/stalwart/config.json";
    let before = m.sh_ok(config);
    let env_before = m.sh_ok("sha256sum < /etc/stalwart/stalwart.env");

    let helper = helper_packages();
    m.publish_debs(&[&helper.deb, &real_server_packages(new).deb]);
    m.apt_ok("update");
    // The first attempt is killed half-way through the relocation (its record and the binary
    // in place, the link not yet): dpkg is left Half-Configured, and its next run finishes it.
    let o = m.sh(&format!(
        "STALWART_UPGRADE_TEST_KILL_AT=fhs:moved {APT} install stalwart 2>&1"
    ));
    assert_ne!(code(&o), 0, "the helper was killed: {}", text(&o));
    assert!(m.dpkg_audit().contains("stalwart"), "Half-Configured");
    assert!(m.ct.path("/opt/stalwart/bin/stalwart").exists());
    let out = m.apt_ok("-f install");
    assert!(
        out.contains("adopting install.sh's FHS layout where it stands"),
        "{out}"
    );
    assert!(out.contains("upgraded 0.16.17 -> 0.16.18"), "{out}");
    assert_eq!(m.dpkg_audit(), "");
    // Config and data where they were, the config unchanged; nothing under /opt/stalwart but bin.
    assert_eq!(m.sh_ok(config), before, "config.json untouched");
    // (The package's tmpfiles.d makes /opt/stalwart/{etc,data,logs}; they stay empty.)
    assert_eq!(
        m.sh_ok("ls -A /opt/stalwart/etc /opt/stalwart/data | grep -v : | grep -c . || true")
            .trim(),
        "0"
    );
    assert!(m.ct.path("/var/lib/stalwart/data").is_dir());
    let exec = m.sh_ok("systemctl show -P ExecStart stalwart.service");
    assert!(
        exec.contains("/opt/stalwart/bin/stalwart")
            && exec.contains("--config=/etc/stalwart/config.json"),
        "{exec}"
    );
    assert_eq!(
        m.sh_ok("readlink /usr/local/bin/stalwart").trim(),
        "/opt/stalwart/bin/stalwart"
    );
    // The env file: in root's directory now, unchanged, and the one the unit reads.
    assert_eq!(
        m.sh_ok("sha256sum < /etc/stalwart-upgrade/stalwart.env"),
        env_before
    );
    let env_files = m.sh_ok("systemctl show -p EnvironmentFiles stalwart.service");
    assert!(
        env_files.contains("/etc/stalwart-upgrade/stalwart.env")
            && !env_files.contains("/etc/stalwart/stalwart.env"),
        "{env_files}"
    );
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e:#}\n{out}\n{}", m.ct.journal("stalwart.service")));
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), new.sha256);
    RealServer::sees(&m.ct, true, &alice(), &["in-the-fhs-layout"]).unwrap();
    RealServer::deliver(&m.ct, true, &alice(), "after-the-adoption").unwrap();
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));

    let out = m.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), old.sha256);
    assert_eq!(
        m.sh_ok(config),
        before,
        "config.json untouched by the rollback"
    );
    RealServer::sees(
        &m.ct,
        true,
        &alice(),
        &["in-the-fhs-layout", "after-the-adoption"],
    )
    .unwrap();
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));
}

/// Issue #26: upstream's DEFAULT installation crosses through the packages. The real 0.15.5
/// installed the install.sh way on the config its own `--init` writes (RocksDB, ten listeners,
/// no server.hostname, a machine with a short hostname), with accounts and mail; the admin
/// installs the helper, approves the 0.16 line and gives the web-admin credentials, then
/// `apt-get install stalwart` of the real 0.16.18 package adopts the installation and crosses in
/// the same run: 0.16.18's bytes in normal mode, old passwords over JMAP and IMAPS, the mail,
/// every listener of before; dpkg clean. `rollback` then brings 0.15.5 back with the mail.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn upstreams_default_0_15_installation_crosses_to_0_16_through_apt_get_install() {
    let test = "upstreams_default_0_15_installation_crosses_to_0_16_through_apt_get_install";
    let (Some(old), Some(new)) = (
        testbed::real::newest("0.15").filter(|r| r.rocksdb),
        testbed::real::newest("0.16"),
    ) else {
        testbed::real::skip(test, "needs a 0.15 release with RocksDB and a 0.16 release");
        return;
    };
    let m = Machine::apt_real();
    let host = m.sh_ok("hostname");
    assert!(!host.trim().contains('.'), "{host}");
    m.ct.write_file(
        "/etc/stalwart-upgrade/config.toml",
        format!(
            "{HELPER_CONFIG_016}\n[webadmin]\ncredentials_file = \"/etc/stalwart-upgrade/webadmin.cred\"\n"
        ),
    )
    .unwrap();
    m.ct.write_file(
        "/etc/stalwart-upgrade/webadmin.cred",
        format!(
            "{}:{}",
            testbed::real_server::ADMIN,
            testbed::real_server::ADMIN_SECRET
        ),
    )
    .unwrap();
    m.sh_ok("chmod 0600 /etc/stalwart-upgrade/webadmin.cred");
    RealServer::install_init(&m.ct, old).expect("install.sh 0.15.5 with --init");
    RealServer::populate(&m.ct, false).expect("accounts");
    RealServer::deliver(&m.ct, false, &alice(), "before-the-packages").expect("mail");
    testbed::real_server::every_init_listener_greets(&m.ct, "0.15.5 before");

    let helper = helper_packages();
    let server = real_server_packages(new);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    m.apt_ok("install stalwart-upgrade");
    let allow = m.helper(&["allow", "0.16"]);
    assert_eq!(code(&allow), 0, "{}", text(&allow));
    let out = m.apt_ok("install stalwart");
    assert!(out.contains("adopting the existing installation"), "{out}");
    assert!(
        out.contains(&format!("{} -> {}", old.version, new.version)),
        "{out}"
    );
    assert_eq!(m.dpkg_audit(), "");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), new.sha256);
    testbed::real_server::assert_normal_mode(&m.ct);
    RealServer::sees(&m.ct, true, &alice(), &["before-the-packages"]).unwrap();
    let n =
        m.ct.in_netns(|| {
            testbed::mail::imaps_inbox_count("127.0.0.1:993", &alice().address(), &alice().password)
        })
        .unwrap();
    assert!(n >= 1, "alice's INBOX over IMAPS holds {n}");
    testbed::real_server::every_init_listener_greets(&m.ct, "0.16 after apt-get install");
    assert_eq!(m.sh_ok("find /opt/stalwart -perm /6000"), "");
    assert_eq!(m.status_code(), 0, "{}", text(&m.helper(&["status"])));

    let back = m.helper(&["rollback", "--yes"]);
    assert_eq!(code(&back), 0, "{}", text(&back));
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), old.sha256);
    RealServer::sees(&m.ct, false, &alice(), &["before-the-packages"]).unwrap();
    testbed::real_server::every_init_listener_greets(&m.ct, "0.15.5 after the rollback");
}

/// Issue #24 (a patch undo never restored data) and #26 (the demo's broken release): a release
/// that changes the store and then fails. Upstream's 1.x store code labelled as the 0.16 patch
/// release 0.16.19-rc1 adds its column families to the 0.16.18 RocksDB store and panics (exit
/// 101); 0.16.18 cannot open that store any more (measured, ../shared/facts). `apt-get upgrade`
/// to it is rolled back WITH the data: 0.16.18 serves the mail of before, dpkg is clean, status
/// exits 8 and names the data the broken release ran on, which is set aside, not deleted.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_release_that_changes_the_store_then_panics_is_rolled_back_with_the_data_by_apt() {
    let test =
        "a_real_release_that_changes_the_store_then_panics_is_rolled_back_with_the_data_by_apt";
    let Some(rels) = testbed::real::require(test, &["0.16.18", "1.0.0-pre.1"]) else {
        return;
    };
    let (good, onex) = (rels[0], rels[1]);
    if !(good.rocksdb && onex.rocksdb) {
        testbed::real::skip(test, "the measured damage is to a RocksDB store");
        return;
    }
    let m = Machine::apt_real();
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG_016)
        .unwrap();
    m.publish_debs(&[&helper_packages().deb, &real_server_packages(good).deb]);
    m.apt_ok("update");
    m.apt_ok("install stalwart");
    let password = m
        .sh_ok("sed -n 's/^STALWART_RECOVERY_ADMIN=admin://p' /etc/stalwart-upgrade/stalwart.env")
        .trim()
        .to_string();
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(90)))
        .unwrap();
    let admin = testbed::mail::Jmap016::new(HTTP, "admin", &password);
    m.ct.in_netns(|| admin.disable_pyzor()).unwrap();
    RealServer::populate_as(&m.ct, true, "admin", &password).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), "before-the-broken-release").unwrap();

    m.publish_debs(&[&relabelled_real_packages(onex, "0.16.19-rc1").deb]);
    m.apt_ok("update");
    let out = text(&m.apt_get("upgrade"));
    assert!(out.contains("Rolled back"), "{out}");
    assert!(out.contains("data restored from snapshot"), "{out}");
    // The broken release did run and did change the store: what it ran on is kept aside.
    assert!(
        m.ct.journal("stalwart.service").contains("status=101"),
        "the relabelled 1.x did not run and panic: {}",
        m.ct.journal("stalwart.service")
    );
    assert_eq!(m.dpkg_audit(), "");
    m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(60)))
        .unwrap();
    assert_eq!(RealServer::running_sha256(&m.ct).unwrap(), good.sha256);
    RealServer::sees(&m.ct, true, &alice(), &["before-the-broken-release"]).unwrap();
    RealServer::deliver(&m.ct, true, &alice(), "after-the-rollback").unwrap();
    let status = m.helper(&["status"]);
    assert_eq!(code(&status), 8, "{}", text(&status));
    assert!(
        text(&status).contains("snapshot remove"),
        "the set-aside data is named with its remove command: {}",
        text(&status)
    );
}
