//! The .deb packages end to end: a local apt repository in a booted systemd container, the
//! stand-in server packaged with `packaging/build`, installed and upgraded by apt-get,
//! unattended-upgrades and apt-daily-upgrade.service. The maintainer scripts call the helper,
//! which runs the transaction (src/hooks.rs).

mod packages_common;
use packages_common::*;
use testbed::Fault;

fn install_first(m: &Machine, version: &str) {
    let helper = helper_packages();
    let server = server_packages(version, Fault::None, 0);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    assert!(
        out.contains(&format!("installed stalwart {version}")),
        "{out}"
    );
    m.ready();
    assert_eq!(m.running_binary(), version);
    assert!(m
        .dpkg_status("stalwart")
        .starts_with("install ok installed"));
    assert!(m
        .dpkg_status("stalwart-upgrade")
        .starts_with("install ok installed"));
}

#[test]
fn apt_install_upgrade_remove_purge() {
    if testbed::skip_requested("apt_install_upgrade_remove_purge") {
        return;
    }
    let m = Machine::apt();
    install_first(&m, "0.15.5");
    // First install: the server's own config, owned by the service user; the hardened unit.
    let ls = m.sh_ok("stat -c '%U %a %n' /opt/stalwart/etc /opt/stalwart/data /opt/stalwart/logs /opt/stalwart/etc/config.toml");
    assert!(ls.lines().all(|l| l.starts_with("stalwart ")), "{ls}");
    assert!(m
        .sh_ok("systemctl is-enabled stalwart.service stalwart-upgrade-recover.service")
        .contains("enabled"));
    m.deliver(10);
    let before = m.digest();

    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("upgrade");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.6-1");
    assert_eq!(m.dpkg_audit(), "");
    let after = m.digest();
    assert_eq!(after["records"], before["records"]);
    let h = m.history();
    let last = h.last().expect("a transaction in the history");
    assert_eq!(last["ending"], "committed", "{last}");
    assert_eq!(m.status_code(), 0);

    // remove: stopped, configuration and data kept.
    let out = m.apt_ok("remove stalwart");
    assert!(out.contains("configuration and data stay"), "{out}");
    assert_eq!(
        m.sh_ok("systemctl is-active stalwart.service || true")
            .trim(),
        "inactive"
    );
    m.sh_ok("test -f /opt/stalwart/etc/config.toml && test -d /opt/stalwart/data && test -x /opt/stalwart/bin/stalwart");

    // purge: binary and state gone, configuration and data still kept.
    let out = m.apt_ok("purge stalwart");
    assert!(out.contains("kept /opt/stalwart/etc"), "{out}");
    m.sh_ok("test ! -e /opt/stalwart/bin && test ! -e /var/lib/stalwart-upgrade && test -f /opt/stalwart/etc/config.toml && test -d /opt/stalwart/data");
}
