//! Power loss in the middle of an upgrade: the helper is killed at a step, the whole container is
//! stopped without a shutdown, and booted again. `stalwart-upgrade-recover.service` (ordered before
//! stalwart.service) must undo (before the health gate passed) or finish (after) the transaction,
//! and the server must come up healthy on consistent data without anyone running a command (a
//! sample of steps of a minor upgrade, and one of a rollback below the 0.16 line).

mod common;
use common::*;
use std::time::Duration;
use testbed::Fault;

/// Stops the container without a shutdown, boots it again and waits until the server is ready
/// (the recover unit ran first); returns the new scenario and the recover unit's log.
fn power_loss(s: Scenario) -> (Scenario, String) {
    let s = s.crash_then(|h| h.boot_again().expect("boot again after the crash"));
    testbed::stalwart::wait_ready(&s.ct, Duration::from_secs(60)).unwrap_or_else(|e| {
        panic!(
            "{e:#}\nrecover unit log:\n{}",
            s.ct.journal("stalwart-upgrade-recover.service")
        )
    });
    let log = s.ct.journal("stalwart-upgrade-recover.service");
    (s, log)
}

fn crash_and_boot(kill_at: &str, expect: &str) -> (Scenario, String) {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    s.install_recover_unit();
    s.allow("0.15");
    let before = s.digest();
    let out = s.upgrade(
        &release("0.15.5", Fault::None, 0),
        &[("STALWART_UPGRADE_TEST_KILL_AT", kill_at)],
    );
    assert!(
        out.status.code().is_none(),
        "helper not killed: {}",
        text(&out)
    );
    let (s, log) = power_loss(s);
    assert!(
        !s.ct
            .path("/var/lib/stalwart-upgrade/journal.jsonl")
            .exists(),
        "journal open after boot:\n{log}"
    );
    assert_eq!(s.binary_version(), expect, "recover log:\n{log}");
    let after = s.digest();
    assert_eq!(after["version"], expect);
    assert_eq!(after["records"], before["records"]);
    if expect == "0.14.3" {
        assert_eq!(
            data_of(&after),
            data_of(&before),
            "original data back:\n{log}"
        );
    } else {
        assert_eq!(after["schema"], 5);
    }
    (s, log)
}

#[test]
fn crash_after_the_new_version_started_boots_into_the_old_one() {
    crash_and_boot("start:done", "0.14.3");
}

/// Also issue #25: the boot's commit does not hash the snapshot (the server's start waits for
/// the recovery); it says so, and `snapshot verify` hashes and checks it afterwards.
#[test]
fn crash_after_the_health_gate_boots_into_the_new_one() {
    let (s, log) = crash_and_boot("health:done", "0.15.5");
    assert!(log.contains("is not hashed yet"), "{log}");
    let id = log
        .split("stalwart-upgrade snapshot verify ")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .unwrap_or_else(|| panic!("no snapshot named: {log}"))
        .to_string();
    let out = s.helper(&["snapshot", "verify", &id], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("\"unhashed\": []"), "{}", text(&out));
}

#[test]
fn crash_while_snapshotting_boots_into_the_old_one() {
    crash_and_boot("snapshot:started", "0.14.3");
}

#[test]
fn crash_mid_swap_boots_into_the_old_one() {
    crash_and_boot("swap:started", "0.14.3");
}

/// A `rollback` from 0.16.18 below the line, the machine crashing after the schema-5 data was put
/// back: at boot, config.json and the unit drop-in must be back (and systemd reloaded) before
/// stalwart.service starts, and the 0.16 data restored, so 0.16.18 comes up on its own data.
#[test]
fn crash_in_a_rollback_below_0_16_boots_into_0_16_on_its_data() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.install_recover_unit();
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    s.deliver(3);
    let on_016 = s.digest();
    let out = s.helper(
        &["rollback", "--yes"],
        &[("STALWART_UPGRADE_TEST_KILL_AT", "restore:done")],
    );
    assert!(
        out.status.code().is_none(),
        "helper not killed: {}",
        text(&out)
    );
    assert!(!s.ct.path("/opt/stalwart/etc/config.json").exists());
    let (s, log) = power_loss(s);
    assert_eq!(s.binary_version(), "0.16.18", "recover log:\n{log}");
    let after = s.digest();
    assert_eq!(after["version"], "0.16.18");
    assert_eq!(data_of(&after), data_of(&on_016), "recover log:\n{log}");
    assert!(s.ct.path("/opt/stalwart/etc/config.json").exists());
    let exec =
        s.ct.exec_ok(&["systemctl", "show", "-P", "ExecStart", "stalwart.service"])
            .unwrap();
    assert!(exec.contains("config.json"), "{exec}\n{log}");
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());
}

/// Issue #25: a boot recovery that cannot finish leaves the server stopped, not crash-looping
/// on the new schema it could not undo. The packaged unit's `ExecCondition=+stalwart-upgrade
/// start-check` skips the start while an interrupted transaction nobody works on is open (the
/// boot's recovery, and an admin's `systemctl start` afterwards). Once the cause is fixed,
/// `recover` undoes it and starts the old version on its data.
#[test]
fn a_boot_recovery_that_cannot_restore_leaves_the_server_stopped_until_recover() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    s.install_recover_unit();
    s.ct.write_file(
        "/etc/systemd/system/stalwart.service.d/10-start-check.conf",
        "[Service]\nExecCondition=+/usr/sbin/stalwart-upgrade start-check\n",
    )
    .unwrap();
    s.ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
    s.allow("0.15");
    let before = s.digest();
    let out = s.upgrade(
        &release("0.15.5", Fault::None, 0),
        &[("STALWART_UPGRADE_TEST_KILL_AT", "start:done")],
    );
    assert!(
        out.status.code().is_none(),
        "helper not killed: {}",
        text(&out)
    );
    // The snapshot the undo needs is away (a disk not mounted at boot): the boot's recovery
    // cannot restore.
    s.ct.sh_ok("mkdir /root/aside && mv /var/lib/stalwart-upgrade/snapshots/[0-9]* /root/aside/")
        .unwrap();
    // The recover unit fails at this boot (what the test is about): a degraded boot.
    let s = s.crash_then(|h| h.boot_again_degraded().expect("boot again after the crash"));
    std::thread::sleep(Duration::from_secs(5));
    let recover_log = s.ct.journal("stalwart-upgrade-recover.service");
    assert!(
        s.ct.path("/var/lib/stalwart-upgrade/journal.jsonl")
            .exists(),
        "the boot's recovery should not have finished: {recover_log}"
    );
    let active = s.ct.sh("systemctl is-active stalwart.service");
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "inactive",
        "started on what the undo could not put back:\n{recover_log}\n{}",
        s.ct.journal("stalwart.service")
    );
    // An admin's (or monit's) start is skipped too, saying why.
    let _ = s.ct.sh("systemctl start stalwart.service");
    let active = s.ct.sh("systemctl is-active stalwart.service");
    assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive");
    let log = s.ct.journal("stalwart.service");
    assert!(log.contains("stalwart-upgrade recover"), "{log}");
    // The cause fixed, `recover` undoes it and starts 0.14.3 on its data.
    s.ct.sh_ok("mv /root/aside/* /var/lib/stalwart-upgrade/snapshots/")
        .unwrap();
    assert!(
        recover_log.contains("runs again in 5 minutes"),
        "a retry is scheduled: {recover_log}"
    );
    assert!(s
        .ct
        .sh("systemctl list-timers --all | grep -q stalwart-upgrade-recover-retry")
        .status
        .success());
    // The admin's alert: one entry with the unfinished recovery's MESSAGE_ID, part of the
    // server unit's journal, explained by the catalog.
    let entries = s.entries("4878deb09c9d42cfbd03bd7e9be2f086");
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["OBJECT_SYSTEMD_UNIT"], "stalwart.service");
    assert_eq!(entries[0]["PRIORITY"], "3");
    let message = entries[0]["MESSAGE"].as_str().unwrap_or_default();
    assert!(
        message.contains("held stopped") && message.contains("retried every 5 minutes"),
        "{message}"
    );
    let out = s.helper(&["recover"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.14.3");
    assert_eq!(data_of(&s.digest()), data_of(&before));
}

/// An ext4 file system on a loop device on the host, bound into the container at
/// /opt/stalwart and /var/lib/stalwart-upgrade; `lose_page_cache` replaces it by the image the
/// device held at that instant, what a power cut leaves: everything written but not yet written
/// back (file data, directory entries, renames not made durable) is gone. Mounted
/// `data=writeback,commit=300,noauto_da_alloc`: metadata may reach the disk before the data it
/// points at, nothing is committed on a timer during a test, and a rename does not flush the
/// renamed file, so only the helper's own fsyncs make anything durable.
struct LossyDisk {
    dir: std::path::PathBuf,
}

const LOSSY_OPTIONS: &str = "loop,data=writeback,commit=300,noauto_da_alloc";

impl LossyDisk {
    fn new(name: &str) -> LossyDisk {
        let dir = testbed::tmp_root().join(format!("lossy-{}-{name}", std::process::id()));
        let sh = |script: &str| {
            let o = std::process::Command::new("sh")
                .args(["-ec", script])
                .output()
                .unwrap();
            assert!(o.status.success(), "{script}: {}", text(&o));
        };
        sh(&format!(
            "rm -rf {d} && mkdir -p {d}/mnt && truncate -s 1G {d}/disk.img && \
             mkfs.ext4 -q -F {d}/disk.img && mount -o {LOSSY_OPTIONS} {d}/disk.img {d}/mnt && \
             mkdir -m 755 {d}/mnt/opt && mkdir -m 700 {d}/mnt/state",
            d = dir.display()
        ));
        LossyDisk { dir }
    }

    fn opt(&self) -> std::path::PathBuf {
        self.dir.join("mnt/opt")
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.join("mnt/state")
    }

    /// Copies what the device holds now (the host's cache of the image file is the device's
    /// content; the container's file system cache above it is not in it).
    fn image_now(&self) {
        let d = self.dir.display();
        let o = std::process::Command::new("sh")
            .args([
                "-ec",
                &format!("cp --sparse=always {d}/disk.img {d}/crash.img"),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }

    /// After the container is gone: the file system mounted again from the image taken at the
    /// power cut (ext4 replays its journal, as at boot).
    fn lose_page_cache(&self) {
        let d = self.dir.display();
        let o = std::process::Command::new("sh")
            .args([
                "-ec",
                &format!(
                    "umount {d}/mnt || umount -l {d}/mnt; rm {d}/disk.img; mv {d}/crash.img {d}/disk.img; \
                     mount -o {LOSSY_OPTIONS} {d}/disk.img {d}/mnt"
                ),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
}

impl Drop for LossyDisk {
    fn drop(&mut self) {
        let d = self.dir.display();
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("umount {d}/mnt 2>/dev/null || umount -l {d}/mnt; rm -rf {d}"),
            ])
            .output();
    }
}

/// Issue #24: power lost with the page cache at a step of a minor upgrade (and of the undo of a
/// broken one): the disk holds only what the helper made durable before the step's journal
/// record. At the next boot the recover unit must undo or finish from that image, and the
/// server comes up on one consistent version and data.
#[test]
fn power_loss_with_the_page_cache_lost_ends_consistent() {
    let cases: &[(&str, bool, &str)] = &[
        ("snapshot:done", false, "0.14.3"),
        ("swap:done", false, "0.14.3"),
        ("start:done", false, "0.14.3"),
        ("health:done", false, "0.15.5"),
        ("undo-data:done", true, "0.14.3"),
        ("undo-start:done", true, "0.14.3"),
    ];
    let mut failures = Vec::new();
    for &(point, broken, expect) in cases {
        let disk = LossyDisk::new(&point.replace(':', "-"));
        let ct = testbed::Container::builder()
            .bind(disk.opt(), "/opt/stalwart")
            .bind(disk.state(), "/var/lib/stalwart-upgrade")
            .boot()
            .expect("boot container");
        let cfg = if broken {
            DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 3")
        } else {
            DEFAULT_HELPER_CONFIG.to_string()
        };
        let s = Scenario::on(
            ct,
            &release("0.14.3", Fault::None, 0),
            testbed::stalwart::ServerLayout::rocksdb(),
            &cfg,
        );
        s.install_recover_unit();
        s.allow("0.15");
        let before = s.digest();
        let fault = if broken {
            Fault::NeverReady
        } else {
            Fault::None
        };
        let to = s.inside(&release("0.15.5", fault, 0));
        // The helper pauses itself right after the point's record is on disk; the image is
        // taken then, and the container is cut off without a shutdown.
        s.ct.sh_ok(&format!(
            "systemd-run --unit=power-loss-upgrade --setenv=STALWART_UPGRADE_TEST_PAUSE_AT={point} {} upgrade --to {to} --yes",
            s.helper
        ))
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let paused = loop {
            let st = s.ct.sh(
                "p=$(systemctl show -P MainPID power-loss-upgrade); [ \"$p\" != 0 ] && cut -d' ' -f3 /proc/$p/stat",
            );
            if String::from_utf8_lossy(&st.stdout).trim() == "T" {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !paused {
            failures.push(format!(
                "{point}: the helper never paused there:\n{}",
                s.ct.journal("power-loss-upgrade.service")
            ));
            continue;
        }
        // The control: a file written now and not synced must be gone after the cut, or the
        // simulation loses nothing and the case proves nothing.
        s.ct.sh_ok("echo written > /opt/stalwart/power-loss-control")
            .unwrap();
        disk.image_now();
        let s = s.crash_then(|halted| {
            disk.lose_page_cache();
            halted.boot_again().expect("boot again after the power cut")
        });
        if let Err(e) = testbed::stalwart::wait_ready(&s.ct, Duration::from_secs(90)) {
            failures.push(format!(
                "{point}: not ready after the boot: {e:#}\nrecover:\n{}\nserver:\n{}",
                s.ct.journal("stalwart-upgrade-recover.service"),
                s.ct.journal("stalwart.service")
            ));
            continue;
        }
        let control = s.ct.sh("cat /opt/stalwart/power-loss-control 2>/dev/null");
        if String::from_utf8_lossy(&control.stdout).contains("written") {
            failures.push(format!(
                "{point}: a file that was never synced survived the power cut: nothing was lost"
            ));
            continue;
        }
        let after = s.digest();
        let version = s.binary_version();
        let journal_open =
            s.ct.path("/var/lib/stalwart-upgrade/journal.jsonl")
                .exists();
        let consistent = match expect {
            "0.14.3" => data_of(&after) == data_of(&before),
            _ => after["records"] == before["records"],
        };
        if version != expect || after["version"] != expect || !consistent || journal_open {
            failures.push(format!(
                "{point}: binary {version}, server {}, journal open {journal_open}; before {before} after {after}\nrecover:\n{}",
                after["version"],
                s.ct.journal("stalwart-upgrade-recover.service")
            ));
            continue;
        }
        let st = s.helper(&["history"], &[]);
        if code(&st) != 0 {
            failures.push(format!("{point}: history after the boot: {}", text(&st)));
            continue;
        }
        println!("{point}: {expect} healthy on consistent data after the page cache was lost");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
