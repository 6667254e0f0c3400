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

/// Publishes the helper and server `version` and installs the server with dnf, up to the
/// server ready (dnf's twin of packages_apt's `install_first`). Returns dnf's output.
fn install_first(m: &Machine, version: &str) -> String {
    let helper = helper_packages();
    let server = server_packages(version, Fault::None, 0);
    m.publish_rpms(&[&helper.rpm, &server.rpm]);
    let out = dnf_ok(m, "install stalwart");
    m.ready();
    out
}

#[test]
fn dnf_install_upgrade_broken_release_remove() {
    if testbed::skip_requested("dnf_install_upgrade_broken_release_remove") {
        return;
    }
    let m = Machine::dnf();
    // Fedora's and RHEL's default preset: nothing is enabled that does not ask for it.
    m.sh_ok("mkdir -p /etc/systemd/system-preset && echo 'disable *' > /etc/systemd/system-preset/99-default.preset");
    let out = install_first(&m, "0.15.5");
    assert!(out.contains("installed stalwart 0.15.5"), "{out}");
    assert_eq!(m.running_binary(), "0.15.5");
    // The recovery unit through our preset file (%systemd_post), the server by the hook.
    assert_eq!(
        m.sh_ok("systemctl is-enabled stalwart.service stalwart-upgrade-recover.service"),
        "enabled\nenabled\n"
    );
    // Installed from the signed repository: both packages carry our signature.
    let sig = m.sh_ok("rpm -qi stalwart stalwart-upgrade | grep '^Signature'");
    assert!(
        sig.lines().count() == 2 && sig.lines().all(|l| l.contains("Key ID")),
        "{sig}"
    );
    // The user from the sysusers.d file (%post), the directories from tmpfiles.d.
    let pw = m.sh_ok("getent passwd stalwart");
    assert_eq!(
        pw.trim().split(':').nth(4),
        Some("Stalwart mail server"),
        "{pw}"
    );
    assert_eq!(
        m.sh_ok("stat -c '%n %U:%G %a' /opt/stalwart/data /var/lib/stalwart-upgrade /run/stalwart-upgrade"),
        "/opt/stalwart/data stalwart:stalwart 750\n/var/lib/stalwart-upgrade root:root 700\n/run/stalwart-upgrade root:root 700\n"
    );
    m.sh_ok("test -f /etc/needrestart/conf.d/stalwart.conf");
    assert!(m
        .sh_ok("rpm -q --changelog stalwart")
        .contains("`stalwart-upgrade allow 0.15`"));
    m.sh_ok("grep -q '^stalwart-0.15' /etc/dnf/plugins/versionlock.list");
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
    // No versionlock entry is left for a package that is not installed.
    assert!(
        out.contains("removed the hold in /etc/dnf/plugins/versionlock.list"),
        "{out}"
    );
    m.sh_ok("! grep -q stalwart /etc/dnf/plugins/versionlock.list");
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
    install_first(&m, "0.14.3");
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

    // And with %pre bypassed too (`rpm --nopre`): the transaction in %posttrans refuses the
    // unapproved line before any downtime; the package is in the database, its binary is not
    // running, and `status` says so.
    let inside = m.ct.target_path(&minor.rpm).expect("rpm under target/");
    let o = m.sh(&format!("rpm -U --nopre {inside} 2>&1"));
    assert!(
        text(&o).contains("STALWART WAS NOT UPGRADED"),
        "{}",
        text(&o)
    );
    assert!(m.rpm_q("stalwart").starts_with("stalwart-0.15.5-1"));
    assert_eq!(m.invocation(), running, "no downtime");
    assert_eq!(m.running_binary(), "0.14.3");
    assert_ne!(
        m.status_code(),
        0,
        "status flags the package it does not run"
    );
}

/// repo_gpgcheck and gpgcheck are on: metadata signed by another key is refused, and so is a
/// package signed by another key under correctly signed metadata.
#[test]
fn dnf_refuses_a_tampered_repository() {
    if testbed::skip_requested("dnf_refuses_a_tampered_repository") {
        return;
    }
    let m = Machine::dnf();
    install_first(&m, "0.15.5");

    // Another key, which the machine does not trust.
    let (other_home, other_key) = new_signing_key(&m.repo.with_file_name(format!(
        "{}-other-key",
        m.repo.file_name().unwrap().to_string_lossy()
    )));

    // The metadata signed by the other key.
    let b = server_packages("0.15.6", Fault::None, 0);
    let o = publish_signed(&m.repo, &other_home, &other_key, &[&b.rpm]);
    assert!(o.status.success(), "{}", text(&o));
    let o = m.dnf_run("upgrade --refresh");
    assert!(
        m.rpm_q("stalwart").starts_with("stalwart-0.15.5-1"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("repomd.xml GPG signature verification error"),
        "{}",
        text(&o)
    );

    // Metadata signed by the owner's key again, but the package still carries the other key's
    // signature: rpm's own check refuses it.
    let (home, key) = signing_key();
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && createrepo_c --quiet --update . && rm -f repodata/repomd.xml.asc && \
             GNUPGHOME={} gpg --batch --quiet --pinentry-mode loopback --passphrase '' -u {key} --armor --detach-sign -o repodata/repomd.xml.asc repodata/repomd.xml",
            m.repo.join("rpm").display(),
            home.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = m.dnf_run("upgrade --refresh");
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("GPG check FAILED"), "{}", text(&o));
    assert!(
        m.rpm_q("stalwart").starts_with("stalwart-0.15.5-1"),
        "{}",
        text(&o)
    );
    assert_eq!(m.running_binary(), "0.15.5");
}

/// Issue #25: the helper killed inside %posttrans (new binary in place, server stopped) leaves
/// rpm's transaction done and the journal open; rpm never runs %posttrans again, so the helper's
/// messages name `dnf reinstall stalwart`: its hook recovers the interrupted transaction first,
/// then upgrades, and the server ends healthy on the new version with its mail.
#[test]
fn dnf_kill_inside_posttrans_then_reinstall_ends_healthy() {
    if testbed::skip_requested("dnf_kill_inside_posttrans_then_reinstall_ends_healthy") {
        return;
    }
    let m = Machine::dnf();
    install_first(&m, "0.15.5");
    m.deliver(10);
    let before = m.digest();
    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_rpms(&[&next.rpm]);
    let o = m.sh("STALWART_UPGRADE_TEST_KILL_AT=swap:done \
         dnf -y --releasever=12 --setopt=install_weak_deps=False upgrade --refresh 2>&1");
    assert!(
        m.rpm_q("stalwart").starts_with("stalwart-0.15.6-1"),
        "rpm's transaction is done: {}",
        text(&o)
    );
    assert_eq!(
        m.sh_ok("test -f /var/lib/stalwart-upgrade/journal.jsonl && echo open"),
        "open\n",
        "the helper was killed mid-transaction: {}",
        text(&o)
    );
    let out = dnf_ok(&m, "reinstall stalwart");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.digest()["records"], before["records"]);
    m.sh_ok("test ! -e /var/lib/stalwart-upgrade/journal.jsonl");
    assert_eq!(m.status_code(), 0);
}
