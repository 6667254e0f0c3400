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
    // The user comes from the sysusers.d file (its GECOS; the helper's useradd fallback sets
    // none), the directories from the tmpfiles.d files.
    let pw = m.sh_ok("getent passwd stalwart");
    let f: Vec<&str> = pw.trim().split(':').collect();
    assert_eq!(f[4], "Stalwart mail server", "{pw}");
    assert_eq!(f[6], "/usr/sbin/nologin", "{pw}");
    assert!(f[2].parse::<u32>().unwrap() < 1000, "a system user: {pw}");
    assert_eq!(m.sh_ok("id -gn stalwart").trim(), "stalwart");
    assert_eq!(
        m.sh_ok("stat -c '%n %U:%G %a' /opt/stalwart /opt/stalwart/bin /opt/stalwart/etc /opt/stalwart/data /opt/stalwart/logs /var/lib/stalwart-upgrade /run/stalwart-upgrade"),
        "/opt/stalwart root:root 755\n/opt/stalwart/bin root:root 755\n\
         /opt/stalwart/etc stalwart:stalwart 750\n/opt/stalwart/data stalwart:stalwart 750\n\
         /opt/stalwart/logs stalwart:stalwart 750\n/var/lib/stalwart-upgrade root:root 700\n\
         /run/stalwart-upgrade root:root 700\n"
    );
    let cat = m.sh_ok("systemd-tmpfiles --cat-config");
    assert!(
        cat.contains("d /opt/stalwart/data :0750 :stalwart :stalwart"),
        "{cat}"
    );
    assert!(cat.contains("d /run/stalwart-upgrade"), "{cat}");
    // Applied again (as at every boot): the prefix is root's again, an admin's mode on data/
    // stays.
    m.sh_ok(
        "chmod 0700 /opt/stalwart/data && chmod 0775 /opt/stalwart && systemd-tmpfiles --create",
    );
    assert_eq!(
        m.sh_ok("stat -c '%a' /opt/stalwart /opt/stalwart/data"),
        "755\n700\n"
    );
    m.sh_ok("chmod 0750 /opt/stalwart/data");
    // needrestart leaves the server to the helper, and only the server.
    let nr = m.sh_ok(
        r#"perl -e 'our %nrconf; do "/etc/needrestart/conf.d/stalwart.conf"; die "load: $@" if $@; for my $u ("stalwart.service", "stalwart-upgrade-recover.service", "postfix.service") { my @m = grep { $u =~ $_ && !$nrconf{override_rc}{$_} } keys %{$nrconf{override_rc}}; print "$u ", (@m ? "excluded" : "restartable"), "\n" }'"#,
    );
    assert_eq!(
        nr,
        "stalwart.service excluded\nstalwart-upgrade-recover.service restartable\npostfix.service restartable\n"
    );
    // apt-listchanges shows the NEWS entry of the line to whoever comes from an older one.
    let news = m.sh_ok("zcat /usr/share/doc/stalwart/NEWS.Debian.gz");
    assert!(news.starts_with("stalwart-upgrade (0.15.0-1)"), "{news}");
    assert!(news.contains("`stalwart-upgrade allow 0.15`"), "{news}");
    m.sh_ok("test -s /etc/apt/preferences.d/stalwart-upgrade");
    assert!(m
        .sh_ok("systemctl is-enabled stalwart.service stalwart-upgrade-recover.service")
        .contains("enabled"));
    m.deliver(10);
    let before = m.digest();

    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    // On a terminal, as an admin runs it: dpkg's scripts get apt's pty, and the hook still
    // draws no progress bars there (they would garble apt's output and term.log).
    let out = m.sh_ok(&format!("script -qec '{APT} upgrade' /dev/null"));
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
    assert!(!out.contains("B/s"), "no progress bar under dpkg: {out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    // The commit's journal entry (info), in the server unit's journal.
    let committed: Vec<_> = m
        .entries("331eb49cee5c4d81ab98ec8340f72c3f")
        .into_iter()
        .filter(|e| e["STALWART_TO"] == "0.15.6")
        .collect();
    assert_eq!(committed.len(), 1, "{committed:#?}");
    assert_eq!(committed[0]["STALWART_FROM"], "0.15.5");
    assert_eq!(committed[0]["OBJECT_SYSTEMD_UNIT"], "stalwart.service");
    // tracing-journald's INFO is syslog's notice.
    assert_eq!(committed[0]["PRIORITY"], "5");
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
    // No pin is left for a package that is not installed.
    assert!(
        out.contains("removed the hold in /etc/apt/preferences.d/stalwart-upgrade"),
        "{out}"
    );
    m.sh_ok("test ! -e /etc/apt/preferences.d/stalwart-upgrade");
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

    // Installed again over the kept data: the first start of the packaged binary (which could
    // migrate it) comes after a snapshot of that data.
    let out = m.apt_ok("install stalwart");
    assert!(
        out.contains("snapshotted the data kept from an earlier installation"),
        "{out}"
    );
    m.ready();
    assert_eq!(
        m.digest()["records"],
        after["records"],
        "the kept data is served"
    );
    let list = m.sh_ok("stalwart-upgrade snapshot list --json");
    let snaps: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(snaps.as_array().map(|a| a.len()), Some(1), "{snaps:#}");
    assert!(snaps[0]["hashed_at"].is_string(), "{snaps:#}");
}

#[test]
fn apt_broken_release_rolls_back_exits_0_and_is_not_retried() {
    if testbed::skip_requested("apt_broken_release_rolls_back_exits_0_and_is_not_retried") {
        return;
    }
    let m = Machine::apt();
    install_first(&m, "0.15.5");
    m.deliver(10);
    let before = m.digest();

    let broken = server_packages("0.15.6", Fault::NeverReady, 0);
    m.publish_debs(&[&broken.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("upgrade");
    assert!(out.contains("UPGRADE OF STALWART ROLLED BACK"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.5");
    assert_eq!(m.digest()["records"], before["records"]);
    // Not Half-Configured: apt and unattended-upgrades are not blocked.
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.6-1");
    assert_eq!(m.dpkg_audit(), "");
    assert_ne!(m.status_code(), 0, "status must flag the failed upgrade");
    // Beyond stderr: one journal entry with the rollback's MESSAGE_ID, part of the server
    // unit's journal, explained by the catalog (journalctl -x).
    let entries = m.entries("97a59f1a87d94666b6cdc3b7fe31d9ca");
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["OBJECT_SYSTEMD_UNIT"], "stalwart.service");
    assert_eq!(entries[0]["STALWART_FROM"], "0.15.5");
    assert_eq!(entries[0]["STALWART_TO"], "0.15.6");
    assert_eq!(entries[0]["PRIORITY"], "3");
    let unit_log = m.sh_ok("journalctl -q -u stalwart.service -o cat");
    assert!(
        unit_log.contains("from 0.15.5 to 0.15.6 FAILED"),
        "{unit_log}"
    );
    let explained = m.sh_ok("journalctl -q -x MESSAGE_ID=97a59f1a87d94666b6cdc3b7fe31d9ca");
    assert!(
        explained.contains("Upgrade of stalwart.service to 0.15.6 failed and was rolled back"),
        "{explained}"
    );

    // Later runs cause no second outage.
    let running = m.invocation();
    m.apt_ok("upgrade");
    m.sh_ok("dpkg --configure -a");
    // What a Half-Configured re-run would execute: the engine refuses the failed version.
    let o = m.sh("/var/lib/dpkg/info/stalwart.postinst configure 0.15.5-1 2>&1");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("REMINDER"), "{}", text(&o));
    assert_eq!(m.invocation(), running, "no restart of the server");
    m.ready();

    // Reinstalling the package is the admin's way to try the same version again.
    let out = m.apt_ok("install --reinstall stalwart");
    assert!(
        out.contains("UPGRADE OF STALWART ROLLED BACK"),
        "retried: {out}"
    );
    m.ready();
    assert_eq!(m.running_binary(), "0.15.5");
}

#[test]
fn unattended_upgrades_run_the_transaction() {
    if testbed::skip_requested("unattended_upgrades_run_the_transaction") {
        return;
    }
    let m = Machine::apt();
    install_first(&m, "0.15.5");

    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    let o = m.sh("unattended-upgrade -v 2>&1");
    assert!(o.status.success(), "{}", text(&o));
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6", "{}", text(&o));
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.6-1");

    // The timer's path, as a real unit: apt-daily.service then apt-daily-upgrade.service.
    let broken = server_packages("0.15.7", Fault::CrashAtStart, 0);
    m.publish_debs(&[&broken.deb]);
    m.sh_ok("systemctl start apt-daily.service && systemctl start apt-daily-upgrade.service");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.7-1");
    assert_eq!(m.dpkg_audit(), "");
    let log = m.sh_ok("cat /var/log/unattended-upgrades/unattended-upgrades-dpkg.log");
    assert!(log.contains("UPGRADE OF STALWART ROLLED BACK"), "{log}");
    assert_ne!(m.status_code(), 0);
}

#[test]
fn apt_adopts_an_install_sh_installation() {
    if testbed::skip_requested("apt_adopts_an_install_sh_installation") {
        return;
    }
    let m = Machine::apt();
    let old = testbed::standin_release("0.15.5", Fault::None, 0);
    testbed::stalwart::install_server(&m.ct, &old, testbed::stalwart::ServerLayout::rocksdb())
        .expect("install.sh-style install");
    m.ready();
    m.deliver(10);
    let before = m.digest();
    let config = m.sh_ok("sha256sum /opt/stalwart/etc/config.toml");

    let helper = helper_packages();
    let server = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    assert!(out.contains("adopting the existing installation"), "{out}");
    assert!(out.contains("overrides the package's unit"), "{out}");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.sh_ok("sha256sum /opt/stalwart/etc/config.toml"), config);
    assert_eq!(m.digest()["records"], before["records"]);
    m.sh_ok("test -f /etc/systemd/system/stalwart.service");
    // install.sh gave all of /opt/stalwart to the service user: the prefix and bin/ are root's
    // now (they could have replaced the binary root runs), the server's own directories stay
    // theirs.
    assert!(out.contains("now belongs to root"), "{out}");
    assert_eq!(
        m.sh_ok("stat -c '%U %a' /opt/stalwart /opt/stalwart/bin /opt/stalwart/bin/stalwart")
            .trim(),
        "root 755\nroot 755\nroot 755"
    );
    assert_eq!(
        m.sh_ok("stat -c %U /opt/stalwart/etc /opt/stalwart/data /opt/stalwart/etc/config.toml")
            .trim(),
        "stalwart\nstalwart\nstalwart"
    );
    let o = m.ct.exec(&[
        "runuser",
        "-u",
        "stalwart",
        "--",
        "sh",
        "-c",
        "echo x > /opt/stalwart/bin/stalwart",
    ]);
    assert!(
        !o.status.success(),
        "the service user can still replace the binary"
    );
}

#[test]
fn apt_policy_gate_refuses_a_minor_upgrade_without_downtime() {
    if testbed::skip_requested("apt_policy_gate_refuses_a_minor_upgrade_without_downtime") {
        return;
    }
    let m = Machine::apt();
    install_first(&m, "0.14.3");
    let minor = server_packages("0.15.5", Fault::None, 500);
    m.publish_debs(&[&minor.deb]);
    m.apt_ok("update");
    let running = m.invocation();
    let o = m.apt_get("install stalwart=0.15.5-1");
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("not installing stalwart 0.15.5"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("allow 0.15"), "{}", text(&o));
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.14.3-1");
    assert_eq!(m.dpkg_audit(), "");
    assert_eq!(m.invocation(), running, "the gate causes no downtime");

    let o = m.helper(&["allow", "0.15"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = m.apt_ok("install stalwart=0.15.5-1");
    assert!(out.contains("upgraded 0.14.3 -> 0.15.5"), "{out}");
    m.ready();
    assert_eq!(m.digest()["schema"], 5);
}

/// 0.15.5 installed with mail, then `apt upgrade` to 0.15.6 with the helper killed at `point`
/// inside postinst: dpkg is left Half-Configured. Returns the machine and the mail as it was.
fn killed_in_postinst(point: &str) -> (Machine, serde_json::Value) {
    let m = Machine::apt();
    install_first(&m, "0.15.5");
    m.deliver(10);
    let before = m.digest();
    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    let o = m.sh(&format!(
        "STALWART_UPGRADE_TEST_KILL_AT={point} {APT} upgrade 2>&1"
    ));
    assert_ne!(code(&o), 0, "the helper was killed: {}", text(&o));
    assert!(m.dpkg_audit().contains("stalwart"), "Half-Configured");
    (m, before)
}

/// Power loss in the middle of the postinst transaction (binary swapped, server stopped): dpkg
/// is left Half-Configured; at boot stalwart-upgrade-recover.service (ordered before
/// stalwart.service) undoes the swap so the old version starts; `dpkg --configure -a` then runs
/// the upgrade again and completes it.
#[test]
fn apt_power_loss_mid_upgrade_is_recovered_at_boot() {
    if testbed::skip_requested("apt_power_loss_mid_upgrade_is_recovered_at_boot") {
        return;
    }
    let (m, before) = killed_in_postinst("swap:done");

    let m = m.crash_and_boot();
    m.ready();
    assert_eq!(m.running_binary(), "0.15.5", "undone at boot");
    // systemd-tmpfiles-setup made the runtime directory again on the fresh /run.
    assert_eq!(
        m.sh_ok("stat -c '%U %a' /run/stalwart-upgrade"),
        "root 700\n"
    );
    let journal = m.ct.journal("stalwart-upgrade-recover.service");
    assert!(
        journal.contains("Finished") || journal.contains("Deactivated"),
        "{journal}"
    );
    let order = m.sh_ok(
        "systemctl show -p ExecMainExitTimestampMonotonic stalwart-upgrade-recover.service; \
         systemctl show -p ExecMainStartTimestampMonotonic stalwart.service",
    );
    let nums: Vec<u64> = order
        .lines()
        .filter_map(|l| l.split('=').nth(1)?.parse().ok())
        .collect();
    assert!(
        nums.len() == 2 && nums[0] > 0 && nums[0] <= nums[1],
        "recover before the server: {order}"
    );
    assert_eq!(m.digest()["records"], before["records"]);

    let o = m.sh("dpkg --configure -a 2>&1");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("upgraded 0.15.5 -> 0.15.6"),
        "{}",
        text(&o)
    );
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.dpkg_audit(), "");
    assert_eq!(m.status_code(), 0);
}

/// Issue #25: the helper killed inside postinst while the new version is being checked (no
/// power loss: the machine runs on) leaves dpkg Half-Configured and the journal open; `apt-get
/// -f install` (dpkg --configure -a under apt) recovers the interrupted transaction in its first
/// step and upgrades again: healthy on the new version, mail intact, dpkg clean.
#[test]
fn apt_kill_inside_postinst_then_apt_get_f_install_ends_healthy() {
    if testbed::skip_requested("apt_kill_inside_postinst_then_apt_get_f_install_ends_healthy") {
        return;
    }
    let (m, before) = killed_in_postinst("health:started");
    m.sh_ok("test -f /var/lib/stalwart-upgrade/journal.jsonl");
    let out = m.apt_ok("-f install");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.digest()["records"], before["records"]);
    assert_eq!(m.dpkg_audit(), "");
    assert_eq!(m.status_code(), 0);
}

/// A refusal before downtime inside `apt upgrade` (here: the health URL points nowhere) leaves apt
/// clean and the old version running; `status` must then flag that the package's version does
/// not run, and its advice must work.
#[test]
fn apt_upgrade_refused_before_downtime_is_flagged_by_status() {
    if testbed::skip_requested("apt_upgrade_refused_before_downtime_is_flagged_by_status") {
        return;
    }
    let m = Machine::apt();
    install_first(&m, "0.15.5");
    m.sh_ok("mkdir -p /etc/stalwart-upgrade/config.d && printf '[health]\\nurl = \"http://127.0.0.1:8099\"\\n' > /etc/stalwart-upgrade/config.d/50-test.toml");
    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&next.deb]);
    m.apt_ok("update");
    let running = m.invocation();
    let out = m.apt_ok("upgrade");
    assert!(out.contains("STALWART WAS NOT UPGRADED"), "{out}");
    // The refusal's journal entry (warning), in the server unit's journal.
    let refused = m.entries("e0e0a2aca43c424d95d5f6f993049904");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    // The package's binary: the hook refused before it read the version.
    assert_eq!(refused[0]["STALWART_TARGET"], "/usr/lib/stalwart/stalwart");
    assert_eq!(refused[0]["OBJECT_SYSTEMD_UNIT"], "stalwart.service");
    assert_eq!(refused[0]["PRIORITY"], "4");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.6-1");
    assert_eq!(m.dpkg_audit(), "");
    assert_eq!(m.running_binary(), "0.15.5");
    assert_eq!(m.invocation(), running, "no restart of the server");

    let st = m.helper(&["status"]);
    assert_eq!(code(&st), 8, "{}", text(&st));
    assert!(
        text(&st)
            .contains("the package carries 0.15.6 (/usr/lib/stalwart/stalwart) but 0.15.5 runs"),
        "{}",
        text(&st)
    );

    // The admin fixes the cause and runs what status said.
    m.sh_ok("rm /etc/stalwart-upgrade/config.d/50-test.toml");
    let up = m.helper(&["upgrade", "--to", "/usr/lib/stalwart/stalwart"]);
    assert_eq!(code(&up), 0, "{}", text(&up));
    m.ready();
    assert_eq!(m.running_binary(), "0.15.6");
    assert_eq!(m.status_code(), 0);
}

/// A failure before the stop inside apt (here a corrupt policy.json) leaves dpkg clean: no
/// half-configured package, the old version running, and the cause in apt's output.
#[test]
fn apt_with_a_corrupt_policy_file_leaves_dpkg_clean_and_the_server_running() {
    if testbed::skip_requested(
        "apt_with_a_corrupt_policy_file_leaves_dpkg_clean_and_the_server_running",
    ) {
        return;
    }
    let m = Machine::apt();
    let helper = helper_packages();
    let a = server_packages("0.15.5", Fault::None, 0);
    m.publish_debs(&[&helper.deb, &a.deb]);
    m.apt_ok("update");
    m.apt_ok("install stalwart");
    m.ready();
    let running = m.invocation();
    m.sh_ok("echo '{not json' > /var/lib/stalwart-upgrade/policy.json");
    let b = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&b.deb]);
    m.apt_ok("update");
    let o = m.apt_get("install stalwart");
    let out = text(&o);
    assert!(out.contains("policy.json"), "{out}");
    assert_eq!(m.dpkg_audit(), "", "{out}");
    assert_eq!(m.invocation(), running, "the server was restarted: {out}");
    assert_eq!(m.running_binary(), "0.15.5");
    m.sh_ok("rm /var/lib/stalwart-upgrade/policy.json");
    let out = m.apt_ok("install --reinstall stalwart=0.15.6-1");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
}

/// The repository is signed (InRelease, signed-by= in the sources line): a tampered index or one
/// signed by another key is refused by apt, and nothing from it is installed.
#[test]
fn apt_refuses_a_tampered_repository() {
    if testbed::skip_requested("apt_refuses_a_tampered_repository") {
        return;
    }
    let m = Machine::apt();
    install_first(&m, "0.15.5");
    let next = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&next.deb]);
    // An index changed after signing: its hash no longer matches the signed Release.
    let packages = m.repo.join("apt/Packages");
    let text_before = std::fs::read_to_string(&packages).unwrap();
    std::fs::write(&packages, text_before.replace("0.15.6-1", "0.15.7-1")).unwrap();
    let o = m.apt_get("update");
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("Hash Sum mismatch"), "{}", text(&o));
    m.apt_get("upgrade");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.5-1");

    // Signed again, by a key the machine does not trust.
    // Another key, which the machine does not trust.
    let (other_home, other_key) = new_signing_key(&m.repo.with_file_name(format!(
        "{}-other-key",
        m.repo.file_name().unwrap().to_string_lossy()
    )));
    let o = publish_signed(&m.repo, &other_home, &other_key, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // apt keeps the indexes it verified before (a warning, exit 0) and uses nothing new.
    let o = m.apt_get("update");
    assert!(
        text(&o).contains("NO_PUBKEY") && text(&o).contains("The repository is not updated"),
        "{}",
        text(&o)
    );
    m.apt_get("upgrade");
    assert_eq!(m.dpkg_status("stalwart"), "install ok installed 0.15.5-1");
    assert_eq!(m.running_binary(), "0.15.5");

    // The owner's key signs it again: the upgrade goes through.
    m.publish_debs(&[]);
    m.apt_ok("update");
    let out = m.apt_ok("upgrade");
    assert!(out.contains("upgraded 0.15.5 -> 0.15.6"), "{out}");
}
