//! Environment faults and hostile conditions, in booted containers: each must end with a clear
//! message and the server still running its old version, untouched.

mod common;
use common::*;
use testbed::Fault;

fn unchanged(s: &Scenario, before: &serde_json::Value) {
    s.serves("0.15.5", before);
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());
    assert!(!s.ct.path("/opt/stalwart/bin.new").exists());
}

/// Moves /opt/stalwart onto a tmpfs of its own with `spare_mib` MiB beyond what is there; the
/// server is restarted on it and ready.
fn opt_stalwart_on_a_small_fs(s: &Scenario, spare_mib: u64) {
    let used: u64 =
        s.ct.sh_ok("du -sm /opt/stalwart | cut -f1")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    s.ct.sh_ok(&format!(
        "systemctl stop stalwart && cp -a /opt/stalwart /root/opt-stalwart && \
         mount -t tmpfs -o size={}m tmpfs /opt/stalwart && cp -a /root/opt-stalwart/. /opt/stalwart/ && \
         systemctl start stalwart",
        used + spare_mib
    ))
    .unwrap();
    s.ready();
}

/// Mounts a root-only tmpfs of `mib` MiB at `dir` (created if missing).
fn private_fs(s: &Scenario, dir: &str, mib: u64) {
    s.ct.sh_ok(&format!(
        "mkdir -p {dir} && mount -t tmpfs -o size={mib}m,mode=0700 tmpfs {dir}"
    ))
    .unwrap();
}

/// A script filling the file system of `dir` with `dir/.filler` (ENOSPC for whoever writes next).
fn fill(dir: &str) -> String {
    format!("dd if=/dev/zero of={dir}/.filler bs=1M 2>/dev/null; df -h {dir}")
}

#[test]
fn faults_before_downtime_change_nothing() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let pid = s.main_pid();
    let target = release("0.15.6", Fault::None, 0);

    // D-Bus unavailable: refused before anything is stopped.
    let out = s.upgrade(
        &target,
        &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/nonexistent_bus")],
    );
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("D-Bus") && text(&out).contains("nothing was stopped"),
        "{}",
        text(&out)
    );

    // The unit is unknown (config names another): refused, naming it.
    s.ct.write_file(
        HELPER_CONFIG,
        format!("unit = \"stalwrt.service\"\n{DEFAULT_HELPER_CONFIG}"),
    )
    .unwrap();
    let out = s.upgrade(&target, &[]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("stalwrt.service"), "{}", text(&out));

    // A health URL the running server does not answer (a listener moved, a typo): refused, since
    // the health check after the upgrade could only fail and roll back.
    s.ct.write_file(
        HELPER_CONFIG,
        format!("[health]\nurl = \"http://127.0.0.1:8099\"\n{DEFAULT_HELPER_CONFIG}"),
    )
    .unwrap();
    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("does not answer http://127.0.0.1:8099/healthz/ready")
            && text(&out).contains("nothing was stopped")
            && text(&out).contains("[health] url"),
        "{}",
        text(&out)
    );

    // The helper's own config is malformed: refused, naming the file and the key.
    s.ct.write_file(HELPER_CONFIG, "[timeouts]\nstop_secs = \"soon\"\n")
        .unwrap();
    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains(HELPER_CONFIG) && text(&out).contains("stop_secs"),
        "{}",
        text(&out)
    );
    s.ct.write_file(HELPER_CONFIG, DEFAULT_HELPER_CONFIG)
        .unwrap();

    // The server config is malformed: refused before downtime, naming it.
    let cfg = s.ct.path("/opt/stalwart/etc/config.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\n[store.rocksdb\n")).unwrap();
    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("/opt/stalwart/etc/config.toml"),
        "{}",
        text(&out)
    );
    std::fs::write(&cfg, &good).unwrap();

    // A binary that is not a server, and a checksum mismatch: refused before downtime.
    s.ct.write_file("/root/not-stalwart", "#!/bin/sh\necho hello\n")
        .unwrap();
    s.ct.exec_ok(&["chmod", "+x", "/root/not-stalwart"])
        .unwrap();
    let out = s.helper(&["upgrade", "--to", "/root/not-stalwart", "--yes"], &[]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let p = s.inside(&target);
    s.ct.write_file(
        "/root/SHA256SUMS",
        format!(
            "{}  {}\n",
            "0".repeat(64),
            target.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    let out = s.helper(
        &[
            "upgrade",
            "--to",
            &p,
            "--sha256sums",
            "/root/SHA256SUMS",
            "--yes",
        ],
        &[],
    );
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("sha256"), "{}", text(&out));

    // Not root: refused with a message saying so.
    let out =
        s.ct.exec(&["runuser", "-u", "nobody", "--", &s.helper, "status"]);
    assert_ne!(code(&out), 0);
    assert!(text(&out).contains("must run as root"), "{}", text(&out));

    // A state dir others can write: refused.
    s.ct.exec_ok(&["chmod", "0777", "/var/lib/stalwart-upgrade"])
        .unwrap();
    let out = s.upgrade(&target, &[]);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out).contains("writable by group or others"),
        "{}",
        text(&out)
    );
    s.ct.exec_ok(&["chmod", "0700", "/var/lib/stalwart-upgrade"])
        .unwrap();

    unchanged(&s, &before);
    let pid_after = s.main_pid();
    assert_eq!(
        pid, pid_after,
        "the server was restarted by a refused upgrade"
    );
}

#[test]
fn no_secret_reaches_logs_journal_or_status() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut all = text(&out);
    for args in [
        &["status", "--json"][..],
        &["history", "--json"],
        &["plan", "--to", "/opt/stalwart/bin/stalwart"],
        &["snapshot", "list", "--json"],
        &["rollback", "--yes"],
        &["status"],
        &["history"],
    ] {
        all.push_str(&text(&s.helper(args, &[])));
    }
    all.push_str(&s.ct.sh_ok("cat /var/lib/stalwart-upgrade/history/* /var/lib/stalwart-upgrade/snapshots/*/manifest.json").unwrap());
    all.push_str(
        &s.ct
            .sh_ok("journalctl --no-pager -o json -t stalwart-upgrade")
            .unwrap(),
    );
    let secret = testbed::stalwart::DEFAULT_ADMIN_SECRET;
    assert!(!all.contains(secret), "the admin secret leaked");
    // The structured journal fields are there.
    assert!(
        all.contains("\"OUTCOME\":\"committed\""),
        "no structured outcome in the journal"
    );
    assert!(
        all.contains("\"STEP\":\"swap\""),
        "no structured step in the journal"
    );
}

#[test]
fn status_reports_the_install_sh_unit_overriding_the_packaged_one() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stalwart.service"),
    )
    .unwrap();
    s.ct.write_file("/lib/systemd/system/stalwart.service", unit)
        .unwrap();
    s.ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
    let warning = "/etc/systemd/system/stalwart.service overrides the packaged /lib/systemd/system/stalwart.service";
    let out = s.helper(&["status"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains(warning), "{}", text(&out));
    // plan and the upgrade say it too (the upgrade goes on: the unit works, only unhardened).
    let target = release("0.15.6", Fault::None, 0);
    let plan = s.helper(&["plan", "--to", &s.inside(&target)], &[]);
    assert!(text(&plan).contains(warning), "{}", text(&plan));
    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains(warning), "{}", text(&out));
}

#[test]
fn jumps_upstream_refuses_are_refused_before_any_downtime() {
    // A 0.13 (schema 3) install asked to go to 0.16: upstream's 0.16 refuses schema 0-4.
    let s = Scenario::new(&release("0.13.4", Fault::None, 0));
    let before = s.digest();
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("0.15 first"), "{}", text(&out));
    s.serves("0.13.4", &before);
}

#[test]
fn too_little_space_for_the_snapshot_is_refused_before_downtime() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let pid = s.main_pid();
    // The snapshots live on their own small file system: nothing can be hard-linked there.
    private_fs(&s, "/var/lib/stalwart-upgrade/snapshots", 8);
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 4, "{t}");
    assert!(
        t.contains("not enough space")
            && t.contains("missing")
            && t.contains("nothing was stopped"),
        "{t}"
    );
    unchanged(&s, &before);
    let pid_after = s.main_pid();
    assert_eq!(pid, pid_after, "the server was restarted");
    s.ct.exec_ok(&["umount", "/var/lib/stalwart-upgrade/snapshots"])
        .unwrap();
}

#[test]
fn a_full_opt_stalwart_is_refused_before_downtime() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    // /opt/stalwart on its own small file system with room for what is there, not for bin.new.
    opt_stalwart_on_a_small_fs(&s, 8);
    let pid = s.main_pid();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 4, "{t}");
    assert!(
        t.contains("not enough space in /opt/stalwart") && t.contains("nothing was stopped"),
        "{t}"
    );
    unchanged(&s, &before);
    let pid_after = s.main_pid();
    assert_eq!(pid, pid_after, "the server was restarted");
    s.ct.sh_ok("systemctl stop stalwart && umount /opt/stalwart")
        .unwrap();
}

#[test]
fn a_read_only_data_store_is_refused_before_downtime() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    // Stop, make the data dir a read-only bind mount, start again (the stand-in reads it fine
    // until it must write).
    s.ct.sh_ok(
        "systemctl stop stalwart && mount --bind /opt/stalwart/data /opt/stalwart/data && \
         mount -o remount,bind,ro /opt/stalwart/data",
    )
    .unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 4, "{t}");
    assert!(
        t.contains("read-only file system") && t.contains("/opt/stalwart/data"),
        "{t}"
    );
    assert_eq!(s.binary_version(), "0.15.5");
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());
    s.ct.sh_ok("umount /opt/stalwart/data").unwrap();
}

#[test]
fn when_neither_version_starts_the_admin_is_told_and_recover_finishes_after_the_fix() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    // From now on every start of the unit fails (the running server is not affected): the new
    // version cannot start, and neither can the old one during the rollback.
    s.ct.write_file(
        "/etc/systemd/system/stalwart.service.d/block.conf",
        "[Service]\nExecStartPre=/bin/sh -c 'test ! -e /run/block-start'\n",
    )
    .unwrap();
    s.ct.sh_ok("touch /run/block-start && systemctl daemon-reload")
        .unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 6, "expected BROKEN: {t}");
    assert!(
        t.contains("The rollback failed too") && t.contains("stalwart-upgrade recover"),
        "{t}"
    );
    // The alert for "could not be undone" reaches the journal with its MESSAGE_ID, as part of
    // the server unit's log (issue #25: it was never written).
    let entries =
        s.ct.sh_ok("journalctl -q -o json MESSAGE_ID=18e298dc631d4891b52753850fbf4650")
            .unwrap();
    assert!(entries.contains("OBJECT_SYSTEMD_UNIT"), "{entries}");
    assert!(entries.contains("The rollback failed too"), "{entries}");
    let in_unit_log =
        s.ct.sh_ok("journalctl -q -u stalwart.service MESSAGE_ID=18e298dc631d4891b52753850fbf4650")
            .unwrap();
    assert!(!in_unit_log.trim().is_empty(), "not in the unit's log");
    // Each start of the old version was tried again before the rollback was called failed.
    assert!(t.contains("tried again"), "{t}");
    // The journal is kept: status flags the unfinished transaction.
    let st = s.helper(&["status"], &[]);
    assert_eq!(code(&st), 8, "{}", text(&st));
    assert!(text(&st).contains("unfinished"), "{}", text(&st));
    // The admin fixes the cause; recover continues the rollback.
    s.ct.sh_ok("rm /run/block-start").unwrap();
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{}", text(&rec));
    s.serves("0.15.5", &before);
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());
}

#[test]
fn a_masked_unit_is_refused_before_downtime() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let pid = s.main_pid();
    // (A mask in /run would be shadowed by install.sh's unit in /etc: move that to /lib first.)
    s.ct.sh_ok(
        "mv /etc/systemd/system/stalwart.service /lib/systemd/system/ && systemctl daemon-reload && \
         systemctl mask stalwart.service",
    )
    .unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_ne!(code(&out), 0, "{t}");
    assert!(
        t.contains("masked") && t.contains("systemctl unmask stalwart.service"),
        "{t}"
    );
    assert_eq!(s.binary_version(), "0.15.5");
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());
    s.ct.exec_ok(&["systemctl", "unmask", "stalwart.service"])
        .unwrap();
    let pid_after = s.main_pid();
    assert_eq!(pid, pid_after, "the running server was not touched");
}

/// ENOSPC past the preflight: the snapshot file system fills up while the snapshot is being
/// written (the server is already stopped). The partial snapshot goes, the old version comes
/// back on its untouched data, and the admin is told the cause and how to retry.
#[test]
fn a_disk_filling_up_during_the_snapshot_rolls_back_to_the_old_version() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let snaps = "/var/lib/stalwart-upgrade/snapshots";
    // Its own file system, so every file is copied there (no hard links across file systems)
    // and room enough that the preflight lets the upgrade go.
    private_fs(&s, snaps, 80);
    let target = release("0.15.6", Fault::None, 0);
    let out = s.upgrade_pausing(&target, "snapshot:started", &fill(snaps));
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(
        t.contains(&format!("the file system holding {snaps} is full"))
            && t.contains("step snapshot")
            && t.contains("the unfinished snapshot removed; 0.15.5 started and healthy"),
        "{t}"
    );
    assert!(t.contains("will not be retried automatically"), "{t}");
    s.serves("0.15.5", &before);
    let left = s.ct.sh_ok(&format!("ls -A {snaps}")).unwrap();
    assert_eq!(
        left.trim(),
        ".filler",
        "a partial snapshot was left: {left}"
    );
    assert_eq!(s.status_code(), 8, "status must ask for attention");

    // The admin frees the space and retries: it goes through.
    s.ct.sh_ok(&format!("rm {snaps}/.filler")).unwrap();
    let out = s.upgrade(&target, &[]);
    assert_eq!(
        code(&out),
        3,
        "a failed release is not retried without --retry: {}",
        text(&out)
    );
    let p = s.inside(&target);
    let out = s.helper(&["upgrade", "--to", &p, "--yes", "--retry"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves("0.15.6", &before);
    assert_eq!(s.status_code(), 0);
    s.ct.sh_ok(&format!("systemctl stop stalwart; umount {snaps}"))
        .unwrap();
}

/// ENOSPC past the preflight while the new binary is staged (before the stop): nothing was
/// stopped, the half-written bin.new goes, and a run after freeing space needs no --retry.
#[test]
fn a_disk_filling_up_while_staging_stops_nothing() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    opt_stalwart_on_a_small_fs(&s, 64);
    let pid = s.main_pid();
    let target = release("0.15.6", Fault::None, 0);
    let out = s.upgrade_pausing(&target, "stage:started", &fill("/opt/stalwart"));
    let t = text(&out);
    // Before the stop: nothing was changed, a failed preflight.
    assert_eq!(code(&out), 4, "{t}");
    assert!(
        t.contains("No space left on device")
            && t.contains("/opt/stalwart/bin.new")
            && t.contains("step stage")
            && t.contains("was not stopped by this attempt"),
        "{t}"
    );
    s.ct.sh_ok("rm /opt/stalwart/.filler").unwrap();
    unchanged(&s, &before);
    assert_eq!(s.main_pid(), pid, "the server was restarted");
    assert_eq!(
        s.status_code(),
        0,
        "nothing to attend to: {}",
        text(&s.helper(&["status"], &[]))
    );

    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves("0.15.6", &before);
    s.ct.sh_ok("systemctl stop stalwart && umount /opt/stalwart")
        .unwrap();
}

/// The file system of the state dir (journal, snapshots) fills up while the server is down: the
/// old version must still come back, and the admin must learn why and what to do.
#[test]
fn a_full_state_dir_while_the_server_is_down_still_brings_the_old_version_back() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let state = "/var/lib/stalwart-upgrade";
    private_fs(&s, state, 128);
    let target = release("0.15.6", Fault::None, 0);
    let out = s.upgrade_pausing(&target, "stop:done", &fill(state));
    let t = text(&out);
    // Rolled back, and said so, although the failure marker could not be written.
    assert_eq!(code(&out), 5, "{t}");
    assert!(
        t.contains(&format!(
            "the file system holding {state}/snapshots is full"
        )) && t.contains("0.15.5 started and healthy")
            && t.contains("could not be recorded as failed")
            && t.contains("No space left on device"),
        "{t}"
    );
    s.ready();
    assert_eq!(s.binary_version(), "0.15.5", "{t}");
    assert_eq!(data_of(&s.digest()), data_of(&before), "{t}");

    // Space freed: nothing is left to settle, and the release may simply be tried again.
    s.ct.sh_ok(&format!("rm {state}/.filler")).unwrap();
    let rec = s.helper(&["recover"], &[]);
    assert!(
        text(&rec).contains("no unfinished transaction"),
        "{}",
        text(&rec)
    );
    let out = s.upgrade(&target, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.15.6");
    s.ct.sh_ok(&format!("systemctl stop stalwart; umount {state}"))
        .unwrap();
}

/// A node of a cluster: upstream requires every node stopped before an upgrade, and the helper
/// stops only this one, so it goes on only when the admin says the others are stopped.
#[test]
fn a_cluster_node_is_upgraded_only_when_the_admin_says_the_other_nodes_are_stopped() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let pid = s.main_pid();
    s.ct.sh_ok("printf '\\n[cluster]\\nnode-id = 2\\ncoordinator = \"peer-to-peer\"\\n' >> /opt/stalwart/etc/config.toml")
        .unwrap();
    let target = release("0.15.6", Fault::None, 0);
    let plan = s.helper(&["plan", "--to", &s.inside(&target)], &[]);
    assert!(
        text(&plan).contains("cluster:       a cluster node (cluster.node-id = 2)"),
        "{}",
        text(&plan)
    );
    let out = s.upgrade(&target, &[]);
    let t = text(&out);
    assert_eq!(code(&out), 3, "{t}");
    assert!(
        t.contains("this server is a node of a cluster (cluster.node-id = 2")
            && t.contains("--cluster-stopped")
            && t.contains("Nothing was changed"),
        "{t}"
    );
    unchanged(&s, &before);
    assert_eq!(s.main_pid(), pid, "the server was restarted");

    let p = s.inside(&target);
    let out = s.helper(&["upgrade", "--to", &p, "--yes", "--cluster-stopped"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves("0.15.6", &before);
    // A rollback is an upgrade of the cluster too.
    let out = s.helper(&["rollback", "--yes"], &[]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out = s.helper(&["rollback", "--yes", "--cluster-stopped"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.15.5");
}

/// Ctrl-C (SIGINT) during the snapshot, or SIGTERM during the health gate of a minor upgrade:
/// the run finishes the step it is in (the snapshot) or stops waiting (the gate), rolls back,
/// and ends with the old version healthy on its data and the journal closed; the release is not
/// blamed (an interruption says nothing against it).
#[test]
fn a_signal_during_the_snapshot_or_the_health_gate_rolls_back_cleanly() {
    for (pause_at, signal) in [("snapshot:started", "INT"), ("health:started", "TERM")] {
        let s = Scenario::new(&release("0.14.3", Fault::None, 0));
        s.allow("0.15");
        let before = s.digest();
        let out = s.upgrade_pausing(
            &release("0.15.5", Fault::None, 0),
            pause_at,
            &format!("kill -{signal} $pid"),
        );
        let t = text(&out);
        assert_eq!(code(&out), 5, "{pause_at}: {t}");
        assert!(
            t.contains(&format!("interrupted by SIG{signal}")),
            "{pause_at}: {t}"
        );
        assert!(t.contains("which says nothing against"), "{pause_at}: {t}");
        s.serves("0.14.3", &before);
        assert!(
            !s.ct
                .path("/var/lib/stalwart-upgrade/journal.jsonl")
                .exists(),
            "{pause_at}: journal left open"
        );
        assert!(
            !s.ct.path("/var/lib/stalwart-upgrade/failed.json").exists(),
            "{pause_at}: the release was blamed for an interruption"
        );
    }
}

/// Exit codes follow the phase, not the module: a D-Bus that cannot be reached, a corrupt
/// policy.json and a snapshot dir inside the data store are all found before the stop, so each
/// exits 4 (a failed preflight) with the server untouched, never 1 (which would leave a package
/// half-configured).
#[test]
fn any_failure_before_the_stop_exits_4_with_the_server_untouched() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let pid = s.main_pid();
    let target = release("0.15.6", Fault::None, 0);
    let expect_4 = |what: &str, out: std::process::Output| {
        let t = text(&out);
        assert_eq!(code(&out), 4, "{what}: {t}");
        assert!(
            t.contains("nothing was stopped") || t.contains("nothing was changed"),
            "{what}: {t}"
        );
    };
    expect_4(
        "no D-Bus",
        s.upgrade(
            &target,
            &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
        ),
    );
    s.ct.write_file("/var/lib/stalwart-upgrade/policy.json", "{not json")
        .unwrap();
    expect_4("corrupt policy.json", s.upgrade(&target, &[]));
    s.ct.exec_ok(&["rm", "/var/lib/stalwart-upgrade/policy.json"])
        .unwrap();
    s.ct.sh_ok(&format!(
        "cp {HELPER_CONFIG} /root/helper.toml && printf '\\n[snapshots]\\ndir = \"/opt/stalwart/data/snaps\"\\n' >> {HELPER_CONFIG}"
    ))
    .unwrap();
    expect_4("snapshots inside the data store", s.upgrade(&target, &[]));
    s.ct.sh_ok(&format!("cp /root/helper.toml {HELPER_CONFIG}"))
        .unwrap();
    unchanged(&s, &before);
    assert_eq!(s.main_pid(), pid, "the server was restarted");
}

/// The SQLite database is copied before the stop and brought up to date after it: mail that
/// arrives between the copy and the stop is in the snapshot. A failed minor upgrade restores
/// that snapshot, so the old version has every record it took, not just those of the copy.
#[test]
fn a_sqlite_database_copied_before_the_stop_holds_what_arrived_until_the_stop() {
    let s = Scenario::with(
        &release("0.14.3", Fault::None, 0),
        testbed::stalwart::ServerLayout::sqlite(),
        &DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 4"),
    );
    s.allow("0.15");
    let before = s.digest();
    let out = s.upgrade_pausing(
        &release("0.15.5", Fault::NeverReady, 0),
        "prehash:done",
        "curl -sS -f -o /dev/null -X POST 'http://127.0.0.1:8080/standin/deliver?n=7'",
    );
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(
        t.contains("brought up to date from its copy made before the stop"),
        "{t}"
    );
    s.ready();
    let after = s.digest();
    assert_eq!(after["version"], "0.14.3");
    assert_eq!(
        after["records"].as_u64(),
        before["records"].as_u64().map(|n| n + 7),
        "the records delivered after the copy are in the restored snapshot: {before} -> {after}"
    );
}

/// Issue #25: the old version exits once when the rollback starts it (a transient failure, what
/// the unit's Restart= would retry). The rollback starts it again instead of declaring
/// "neither version healthy": exit 5, the old version serves its data.
#[test]
fn the_rollback_survives_one_transient_exit_of_the_old_version() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    // Armed only once the rollback has begun: the next start of the unit fails, once (`+`: as
    // root, the unit runs as the service user).
    s.ct.write_file(
        "/etc/systemd/system/stalwart.service.d/once.conf",
        "[Service]\nExecStartPre=+/bin/sh -c 'test ! -e /run/arm || { rm /run/arm; touch /run/failed-once; exit 1; }'\n",
    )
    .unwrap();
    s.ct.sh_ok("systemctl daemon-reload").unwrap();
    let out = s.upgrade_pausing(
        &release("0.15.6", Fault::CrashAtStart, 0),
        "undo-start:started",
        "touch /run/arm",
    );
    let t = text(&out);
    assert_eq!(code(&out), 5, "rolled back, healthy: {t}");
    assert!(t.contains("tried again"), "{t}");
    s.ct.sh_ok("test -e /run/failed-once")
        .expect("the transient failure happened");
    s.serves("0.15.5", &before);
}

/// Issue #24: monit, Puppet's "ensure running" or a second terminal keeps starting the unit
/// while the upgrade holds it stopped. systemd refuses those starts (the helper's runtime hold),
/// so the upgrade commits the NEW bytes: exit 0, no open journal, and the admin can start and
/// stop the server by hand again afterwards.
#[test]
fn an_outside_start_loop_during_the_downtime_cannot_cancel_the_upgrade() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.ct.sh_ok(
        "systemd-run --quiet --unit=ensure-running sh -c \
         'while :; do systemctl start --no-block stalwart.service 2>>/var/tmp/starts.err; sleep 0.1; done'",
    )
    .unwrap();
    let out = s.upgrade_pausing(
        &release("0.15.6", Fault::None, 0),
        "snapshot:started",
        "sleep 1; systemctl is-active stalwart.service; ! systemctl start stalwart.service",
    );
    let t = text(&out);
    s.ct.sh_ok("systemctl stop ensure-running.service").unwrap();
    assert_eq!(code(&out), 0, "committed: {t}");
    assert!(t.contains("inactive"), "held stopped at the snapshot: {t}");
    assert_eq!(s.binary_version(), "0.15.6");
    s.ready();
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());
    let refused = s.ct.sh_ok("cat /var/tmp/starts.err").unwrap();
    assert!(
        refused.contains("refused"),
        "the loop's starts were refused: {refused}"
    );
    // The hold is gone: the admin's own restart works.
    s.ct.sh_ok("systemctl restart stalwart.service").unwrap();
    s.ready();
}

/// Issue #24: an upgrade of a server the admin stopped does not start it: the binary is
/// swapped, the server stays stopped (and startable by hand), the message says so.
#[test]
fn a_stopped_server_stays_stopped_after_an_upgrade() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    s.ct.sh_ok("systemctl stop stalwart.service").unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(t.contains("stays stopped"), "{t}");
    assert_eq!(s.binary_version(), "0.15.6");
    let active = s.ct.sh("systemctl is-active stalwart.service");
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "inactive",
        "{t}"
    );
    // The admin starts it; nothing holds it back.
    s.ct.sh_ok("systemctl start stalwart.service").unwrap();
    s.serves("0.15.6", &before);
}

/// Issue #25: a server that crashes and is brought back by `Restart=` may be "active" whenever
/// `status` looks; NRestarts tells, and `status` exits 8 naming it. A restart by the admin
/// (after the fix) clears it.
#[test]
fn status_exits_8_for_a_server_restart_keeps_bringing_back() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    assert_eq!(s.status_code(), 0);
    let pid = s.main_pid();
    s.ct.sh_ok(&format!("kill -KILL {pid}")).unwrap();
    // RestartSec=5 in install.sh's unit.
    s.ct.sh_ok(
        "for i in $(seq 1 100); do [ \"$(systemctl show -P NRestarts stalwart.service)\" -ge 1 ] && \
         systemctl is-active -q stalwart.service && exit 0; sleep 0.2; done; exit 1",
    )
    .unwrap();
    s.ready();
    let st = s.helper(&["status"], &[]);
    assert_eq!(code(&st), 8, "{}", text(&st));
    assert!(text(&st).contains("restarted 1 time(s)"), "{}", text(&st));
    s.ct.sh_ok("systemctl restart stalwart.service").unwrap();
    s.ready();
    let st = s.helper(&["status"], &[]);
    assert_eq!(code(&st), 0, "{}", text(&st));
}

/// Issue #24: the gate passes only a main process that runs the bytes this transaction put in
/// bin/. Here the unit's ExecStart runs a copy of the old binary kept elsewhere (a local drop-in
/// an admin forgot): the new version never ran, so the upgrade must not commit it. It is rolled
/// back (exit 5), naming the binary, and the old version serves its data.
#[test]
fn a_main_process_that_does_not_run_the_installed_binary_is_not_committed() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    s.ct.sh_ok(
        "cp /opt/stalwart/bin/stalwart /usr/local/bin/stalwart-kept && \
         mkdir -p /etc/systemd/system/stalwart.service.d && \
         printf '[Service]\\nExecStart=\\nExecStart=/usr/local/bin/stalwart-kept --config=/opt/stalwart/etc/config.toml\\n' \
           > /etc/systemd/system/stalwart.service.d/60-kept.conf && \
         systemctl daemon-reload && systemctl restart stalwart.service",
    )
    .unwrap();
    s.ready();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "rolled back: {t}");
    assert!(
        t.contains("does not run /opt/stalwart/bin/stalwart") && t.contains("stalwart-kept"),
        "{t}"
    );
    assert_eq!(s.binary_version(), "0.15.5");
    s.serves("0.15.5", &before);
}

/// Issue #24: an undo needs space too. Here the data store sits on its own file system apart
/// from the snapshots: the snapshot (a full copy onto the snapshots' file system) fits, but a
/// rollback would copy the data back beside what it keeps in place, and the data's file system
/// has only half of that free. Refused before any downtime, naming the place and the sizes.
#[test]
fn too_little_space_for_the_undo_is_refused_before_downtime() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.ct.sh_ok(
        "systemctl stop stalwart && cp -a /opt/stalwart/data /root/data-copy && \
         mkdir -p /srv/datafs && mount -t tmpfs -o size=256m tmpfs /srv/datafs && \
         cp -a /root/data-copy /srv/datafs/data && \
         mount --bind /srv/datafs/data /opt/stalwart/data && systemctl start stalwart",
    )
    .unwrap();
    s.ready();
    let before = s.digest();
    let pid = s.main_pid();
    // Leave free half of what the data takes.
    s.ct.sh_ok(
        "need=$(du -sk /opt/stalwart/data | cut -f1) && \
         free=$(df --output=avail -k /srv/datafs | tail -1) && \
         dd if=/dev/zero of=/srv/datafs/.filler bs=1k count=$((free - need / 2)) 2>/dev/null && \
         df -k /srv/datafs",
    )
    .unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 4, "{t}");
    assert!(
        t.contains("not enough space to undo this upgrade")
            && t.contains("in /opt/stalwart/data: a rollback would copy")
            && t.contains("nothing was stopped"),
        "{t}"
    );
    unchanged(&s, &before);
    assert_eq!(pid, s.main_pid(), "the server was restarted");
    // With the room back, the same upgrade goes through.
    s.ct.sh_ok("rm /srv/datafs/.filler").unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ct.sh_ok("systemctl stop stalwart && umount /opt/stalwart/data && umount /srv/datafs")
        .unwrap();
}

/// Issue #25: a release that passes its gate and crashes 15 s later (into `Restart=`'s loop) is
/// committed on probation; the watcher the commit starts (a transient unit: it outlives the
/// helper) rolls it back to the version it came from within the probation, with the data, and
/// marks it failed: `status` exits 8 naming the probation, and the journal has the reason.
#[test]
fn a_release_that_crashes_after_its_commit_is_rolled_back_by_its_probation() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.ct.write_file(
        "/etc/stalwart-upgrade/config.d/probation.toml",
        "[health]\nprobation_secs = 60\n",
    )
    .unwrap();
    let before = s.digest();
    let out = s.upgrade(&release("0.15.6", Fault::CrashLater, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "committed on probation: {t}");
    assert_eq!(s.binary_version(), "0.15.6");
    let st = text(&s.helper(&["status"], &[]));
    assert!(st.contains("probation:    0.15.6 for"), "{st}");
    // The crash comes 15 s after the start; the watcher looks every 2 s. Bound: the probation
    // plus 30 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let back = s.binary_version() == "0.15.5"
            && !s
                .ct
                .path("/var/lib/stalwart-upgrade/probation.json")
                .exists()
            && !s
                .ct
                .path("/var/lib/stalwart-upgrade/journal.jsonl")
                .exists()
            && s.ct
                .sh("systemctl is-active --quiet stalwart.service")
                .status
                .success();
        if back {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rolled back within 90 s:\n{}\n{}",
            s.ct.journal("stalwart-upgrade-probation.service"),
            s.ct.journal("stalwart.service")
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    s.serves("0.15.5", &before);
    let st = s.helper(&["status"], &[]);
    assert_eq!(code(&st), 8, "{}", text(&st));
    assert!(text(&st).contains("failed its probation"), "{}", text(&st));
    let log = s.ct.journal("stalwart-upgrade-probation.service");
    assert!(log.contains("0.15.6 failed its probation"), "{log}");
    // Not retried on its own.
    let out = s.upgrade(&release("0.15.6", Fault::CrashLater, 0), &[]);
    assert_ne!(code(&out), 0, "{}", text(&out));
}

/// Issue #25: the state directory's file system fills up while the new version is being
/// checked. The journal keeps room behind its end (allocated when it is created), so
/// `health:done` and the end record are still written: the healthy upgrade commits (exit 0)
/// instead of being rolled back for a full disk, and what could not be written is a warning.
#[test]
fn a_full_state_dir_during_the_health_gate_does_not_roll_back_a_healthy_upgrade() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let state = "/var/lib/stalwart-upgrade";
    private_fs(&s, state, 128);
    let target = release("0.15.6", Fault::None, 0);
    let out = s.upgrade_pausing(&target, "health:started", &fill(state));
    let t = text(&out);
    assert_eq!(code(&out), 0, "committed: {t}");
    assert!(t.contains("committed"), "{t}");
    s.ready();
    assert_eq!(s.binary_version(), "0.15.6", "{t}");
    assert!(!s.ct.path(format!("{state}/journal.jsonl")).exists(), "{t}");
    let last = s.ct.sh_ok(&format!("ls {state}/history")).unwrap();
    assert!(last.contains(".jsonl"), "{last}");
    s.ct.sh_ok(&format!(
        "rm {state}/.filler; systemctl stop stalwart; umount {state}"
    ))
    .unwrap();
}
