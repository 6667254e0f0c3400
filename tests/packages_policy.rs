//! Semver policy through the real package managers: the hold installed at first install lets
//! unattended-upgrades take a patch release and never even select a minor one; with the pin removed
//! by hand the new package's preinst refuses the minor upgrade and dpkg unwinds cleanly; after
//! `stalwart-upgrade allow` apt takes it, with a data snapshot, and the pin follows the new line.

mod packages_common;
use packages_common::*;
use testbed::Fault;

const PREFS: &str = "/etc/apt/preferences.d/stalwart-upgrade";

#[test]
fn hold_takes_patches_unattended_and_a_minor_only_after_allow() {
    if testbed::skip_requested("hold_takes_patches_unattended_and_a_minor_only_after_allow") {
        return;
    }
    let m = Machine::apt();
    let helper = helper_packages();
    let a = server_packages("0.14.3", Fault::None, 0);
    m.publish_debs(&[&helper.deb, &a.deb]);
    m.apt_ok("update");
    m.apt_ok("install stalwart");
    m.ready();
    let prefs = m.sh_ok(&format!("cat {PREFS}"));
    assert!(
        prefs.contains("Pin: version 0.14.*"),
        "hold installed at first install:\n{prefs}"
    );

    // A+1 (patch) and B (minor) published together.
    let patch = server_packages("0.14.4", Fault::None, 0);
    let minor = server_packages("0.15.5", Fault::None, 300);
    m.publish_debs(&[&patch.deb, &minor.deb]);
    m.apt_ok("update");
    let policy = m.sh_ok("apt-cache policy stalwart");
    println!("{policy}");
    assert!(policy.contains("Candidate: 0.14.4-1"), "{policy}");
    let minor_line = policy
        .lines()
        .position(|l| l.contains("0.15.5-1"))
        .map(|i| policy.lines().nth(i).unwrap_or(""))
        .unwrap_or("");
    assert!(
        minor_line.trim_end().ends_with("-1"),
        "0.15.5 must be pinned at -1: {policy}"
    );

    let o = m.sh("unattended-upgrade -v 2>&1");
    assert!(o.status.success(), "{}", text(&o));
    m.ready();
    assert_eq!(m.running_binary(), "0.14.4");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.14.4-1");

    // The admin removes the pin by hand: unattended-upgrades now tries B; the preinst refuses it.
    m.sh_ok(&format!("rm {PREFS}"));
    let running = m.invocation();
    let _ = m.sh("unattended-upgrade -v 2>&1");
    m.ready();
    assert_eq!(m.running_binary(), "0.14.4");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.14.4-1");
    assert_eq!(m.dpkg_audit(), "", "no package left broken");
    assert_eq!(m.invocation(), running, "the refusal caused no downtime");
    let log = m.sh_ok("cat /var/log/unattended-upgrades/unattended-upgrades-dpkg.log");
    assert!(
        log.contains("stalwart-upgrade allow 0.15"),
        "the log says how to approve:\n{log}"
    );
    assert!(
        log.contains("v0_15.md"),
        "the log names the document to read:\n{log}"
    );

    // Approved: apt takes B through the transaction, with a data snapshot; the pin follows.
    let o = m.helper(&["allow", "0.15"]);
    assert!(o.status.success(), "{}", text(&o));
    let prefs = m.sh_ok(&format!("cat {PREFS}"));
    assert!(prefs.contains("Pin: version 0.15.*"), "{prefs}");
    m.apt_ok("update");
    m.apt_ok("upgrade");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.5");
    assert_eq!(m.digest()["schema"], 5);
    let last = m.history().last().cloned().unwrap_or_default();
    assert_eq!(last["ending"], "committed", "{last}");
    assert_eq!(last["class"], "minor", "{last}");
    assert!(
        last["snapshot"].is_string(),
        "a minor upgrade takes a data snapshot: {last}"
    );
    let prefs = m.sh_ok(&format!("cat {PREFS}"));
    assert!(prefs.contains("Pin: version 0.15.*"), "{prefs}");
    let policy = m.sh_ok("apt-cache policy stalwart");
    assert!(policy.contains("Installed: 0.15.5-1"), "{policy}");
}

#[test]
fn dnf_versionlock_takes_patches_and_a_minor_only_after_allow() {
    if testbed::skip_requested("dnf_versionlock_takes_patches_and_a_minor_only_after_allow") {
        return;
    }
    let m = Machine::dnf();
    let dnf_ok = |args: &str| {
        let o = m.dnf_run(args);
        assert!(o.status.success(), "dnf {args}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let helper = helper_packages();
    let a = server_packages("0.14.3", Fault::None, 0);
    m.publish_rpms(&[&helper.rpm, &a.rpm]);
    dnf_ok("install stalwart");
    m.ready();
    let lock = m.sh_ok("cat /etc/dnf/plugins/versionlock.list");
    assert!(
        lock.contains("stalwart-0.14.*"),
        "hold installed at first install:\n{lock}"
    );

    let patch = server_packages("0.14.4", Fault::None, 0);
    let minor = server_packages("0.15.5", Fault::None, 300);
    m.publish_rpms(&[&patch.rpm, &minor.rpm]);
    let out = dnf_ok("upgrade --refresh");
    m.ready();
    assert_eq!(m.running_binary(), "0.14.4", "{out}");
    assert!(
        m.rpm_q("stalwart").starts_with("stalwart-0.14.4-1"),
        "{}",
        m.rpm_q("stalwart")
    );
    // dnf never selected the minor release: the %pre gate was not even reached.
    assert!(
        !out.contains("0.15.5"),
        "versionlock should hide 0.15.5:\n{out}"
    );

    let o = m.helper(&["allow", "0.15"]);
    assert!(o.status.success(), "{}", text(&o));
    let lock = m.sh_ok("cat /etc/dnf/plugins/versionlock.list");
    assert!(
        lock.contains("stalwart-0.15.*") && !lock.contains("stalwart-0.14.*"),
        "{lock}"
    );
    dnf_ok("upgrade --refresh");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.5");
    assert_eq!(m.digest()["schema"], 5);
    let last = m.history().last().cloned().unwrap_or_default();
    assert_eq!(last["ending"], "committed", "{last}");
    assert!(last["snapshot"].is_string(), "{last}");
}
