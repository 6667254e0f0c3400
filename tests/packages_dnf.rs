//! The .rpm packages end to end with dnf, inside a booted Debian container whose rpm database
//! knows dpkg's packages through a metadata-only package (no Fedora root file system can be had
//! here: this checks scriptlet logic, order and `$1`, not Fedora's paths or SELinux). Scriptlet
//! order on upgrade: new %pre(2), new %post(2), old %preun(1), old %postun(1), new %posttrans.

mod packages_common;
use packages_common::*;
use testbed::Fault;

fn dnf_ok(m: &Machine, args: &str) -> String {
    let o = m.dnf_run(args);
    assert!(o.status.success(), "dnf {args}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn dnf_install_upgrade_broken_release_remove() {
    if testbed::skip_requested("dnf_install_upgrade_broken_release_remove") {
        return;
    }
    let m = Machine::dnf();
    let helper = helper_packages();
    let a = server_packages("0.15.5", Fault::None, 0);
    m.publish_rpms(&[&helper.rpm, &a.rpm]);
    let out = dnf_ok(&m, "install stalwart");
    assert!(out.contains("installed stalwart 0.15.5"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.5");
    assert_eq!(
        m.sh_ok("systemctl is-enabled stalwart.service stalwart-upgrade-recover.service"),
        "enabled\nenabled\n"
    );
    m.deliver(10);
    let before = m.digest();

    let b = server_packages("0.15.6", Fault::None, 0);
    m.publish_rpms(&[&b.rpm]);
    let out = dnf_ok(&m, "upgrade --refresh");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert!(m.rpm_q("stalwart").starts_with("stalwart-0.15.6-1"));
    assert_eq!(m.digest()["records"], before["records"]);
    // The payload of the new package is in place: %posttrans ran after the old files were erased.
    m.sh_ok("/usr/lib/stalwart/stalwart --version | grep -qx 0.15.6");

    let broken = server_packages("0.15.7", Fault::CrashAtStart, 0);
    m.publish_rpms(&[&broken.rpm]);
    let out = dnf_ok(&m, "upgrade --refresh");
    assert!(out.contains("UPGRADE OF STALWART ROLLED BACK"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert!(m.rpm_q("stalwart").starts_with("stalwart-0.15.7-1"));
    assert_ne!(m.status_code(), 0);

    // Erase: stopped, configuration and data kept.
    let out = dnf_ok(&m, "remove stalwart");
    assert!(out.contains("configuration and data stay"), "{out}");
    assert!(out.contains("rm -rf /opt/stalwart/bin"), "{out}");
    assert_eq!(
        m.sh_ok("systemctl is-active stalwart.service || true")
            .trim(),
        "inactive"
    );
    m.sh_ok("test -f /opt/stalwart/etc/config.toml && test -d /opt/stalwart/data");
}

#[test]
fn dnf_pre_gate_refuses_a_minor_upgrade() {
    if testbed::skip_requested("dnf_pre_gate_refuses_a_minor_upgrade") {
        return;
    }
    let m = Machine::dnf();
    let helper = helper_packages();
    let a = server_packages("0.14.3", Fault::None, 0);
    m.publish_rpms(&[&helper.rpm, &a.rpm]);
    dnf_ok(&m, "install stalwart");
    m.ready();
    let running = m.invocation();
    let minor = server_packages("0.15.5", Fault::None, 0);
    m.publish_rpms(&[&minor.rpm]);
    // The versionlock hold (installed at first install) hides 0.15.5 from dnf altogether; with
    // the hold removed by hand, the %pre gate is what stops the minor upgrade (defence in depth).
    let o = m.dnf_run("upgrade --refresh");
    assert!(
        !text(&o).contains("0.15.5"),
        "the hold hides the minor: {}",
        text(&o)
    );
    assert_eq!(m.invocation(), running);
    m.sh_ok("sed -i '/stalwart/d' /etc/dnf/plugins/versionlock.list");
    let o = m.dnf_run("upgrade --refresh");
    assert!(
        text(&o).contains("not installing stalwart 0.15.5"),
        "{}",
        text(&o)
    );
    assert!(
        m.rpm_q("stalwart").starts_with("stalwart-0.14.3-1"),
        "{}",
        m.rpm_q("stalwart")
    );
    assert_eq!(m.invocation(), running, "the gate causes no downtime");
    assert_eq!(m.running_binary(), "0.14.3");
}
