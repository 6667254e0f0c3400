//! `stalwart-upgrade snapshot ...` on its own, in a booted container with the stand-in server.

mod common;
use common::*;
use testbed::Fault;

#[test]
fn create_verify_restore_prune_from_the_command_line() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();

    // A running server is not copied behind its back.
    let o = s.helper(&["snapshot", "create"], &[]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("--stop"), "{}", text(&o));

    let o = s.helper(&["snapshot", "create", "--stop"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    s.ready();
    let list = s.helper(&["snapshot", "list", "--json"], &[]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["server_version"], "0.15.5");

    let v = s.helper(&["snapshot", "verify", &id], &[]);
    assert_eq!(code(&v), 0, "{}", text(&v));

    // New mail after the snapshot, then the snapshot put back: the data is the snapshot's again.
    s.deliver(7);
    assert_ne!(data_of(&s.digest()), data_of(&before));
    let r = s.helper(&["snapshot", "restore", &id, "--stop", "--yes"], &[]);
    assert_eq!(code(&r), 0, "{}", text(&r));
    s.ready();
    assert_eq!(data_of(&s.digest()), data_of(&before));

    // A damaged snapshot is found by verify (CURRENT is a private copy; the .sst files are hard
    // links shared with the live data, which RocksDB never modifies).
    let snap_dir = format!("/var/lib/stalwart-upgrade/snapshots/{id}");
    s.ct.sh_ok(&format!(
        "f=$(find {snap_dir} -name CURRENT | head -1); printf x >> \"$f\""
    ))
    .unwrap();
    let v = s.helper(&["snapshot", "verify", &id], &[]);
    assert_ne!(
        code(&v),
        0,
        "verify must fail on a damaged file: {}",
        text(&v)
    );
    assert!(text(&v).contains("mismatched"), "{}", text(&v));

    // Retention: with keep = 0 in a dry run, the snapshot is listed but kept.
    s.ct.write_file(
        HELPER_CONFIG,
        format!("[snapshots]\nkeep = 0\n{DEFAULT_HELPER_CONFIG}"),
    )
    .unwrap();
    let p = s.helper(&["snapshot", "prune", "--dry-run"], &[]);
    assert_eq!(code(&p), 0, "{}", text(&p));
    assert!(
        text(&p).contains(&format!("would remove {id}")),
        "{}",
        text(&p)
    );
    assert!(s.ct.path(&snap_dir).is_dir());
}

/// The long steps draw a progress bar for an admin at a terminal (a pseudo-terminal here), and
/// nothing of the kind when stderr is a pipe or a file (the journal, a log, dpkg).
#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.deliver(20);
    let tty =
        s.ct.sh_ok(&format!(
            "script -qec '{} snapshot create --stop' /dev/null",
            s.helper
        ))
        .unwrap();
    s.ready();
    assert!(tty.contains("hashing"), "{tty}");
    assert!(tty.contains("B/s"), "a rate on the bar: {tty}");
    let piped = s.helper(&["snapshot", "create", "--stop"], &[]);
    assert_eq!(code(&piped), 0, "{}", text(&piped));
    s.ready();
    assert!(!text(&piped).contains("B/s"), "{}", text(&piped));
    assert!(!text(&piped).contains('\r'), "{}", text(&piped));
}

/// Issue #24: `snapshot restore` is a transaction of its own. Killed after the data was put back
/// but before the server started, `recover` undoes it (the live data back, the server running
/// on it); killed after its gate passed, `recover` finishes it. A completed restore keeps the
/// data it replaced as a set-aside snapshot and says so; a restore refused (server running,
/// no --stop) changes nothing.
#[test]
fn a_snapshot_restore_killed_half_way_is_undone_or_finished_by_recover() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let at_snapshot = s.digest();
    let o = s.helper(&["snapshot", "create", "--stop"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    s.ready();
    let list = s.helper(&["snapshot", "list", "--json"], &[]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    s.deliver(5);
    let live = s.digest();
    assert_ne!(data_of(&live), data_of(&at_snapshot));

    let running =
        s.ct.sh_ok("systemctl show -P InvocationID stalwart")
            .unwrap();
    let r = s.helper(&["snapshot", "restore", &id, "--yes"], &[]);
    assert_eq!(code(&r), 3, "refused without --stop: {}", text(&r));
    assert_eq!(
        s.ct.sh_ok("systemctl show -P InvocationID stalwart")
            .unwrap(),
        running,
        "not stopped"
    );

    // Killed with the snapshot's data in place and the server stopped: undone.
    let r = s.helper(
        &["snapshot", "restore", &id, "--stop", "--yes"],
        &[("STALWART_UPGRADE_TEST_KILL_AT", "restore:done")],
    );
    assert!(r.status.code().is_none(), "not killed: {}", text(&r));
    assert!(s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .is_file());
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{}", text(&rec));
    s.serves("0.15.5", &live);

    // Killed after its gate: finished, the snapshot's data serves.
    let r = s.helper(
        &["snapshot", "restore", &id, "--stop", "--yes"],
        &[("STALWART_UPGRADE_TEST_KILL_AT", "health:done")],
    );
    assert!(r.status.code().is_none(), "not killed: {}", text(&r));
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{}", text(&rec));
    s.serves("0.15.5", &at_snapshot);
    assert!(!s
        .ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists());

    // The live data it replaced is set aside: status names it, and restoring it brings the
    // five mails back, this time to the end in one run.
    let st = text(&s.helper(&["status"], &[]));
    let aside = st
        .lines()
        .filter(|l| l.contains("keeps the live data replaced by `snapshot restore"))
        .filter_map(|l| l.split("snapshot ").nth(1)?.split_whitespace().next())
        .next_back()
        .map(String::from)
        .unwrap_or_else(|| panic!("status names no set-aside snapshot: {st}"));
    let r = s.helper(&["snapshot", "restore", &aside, "--stop", "--yes"], &[]);
    assert_eq!(code(&r), 0, "{}", text(&r));
    assert!(text(&r).contains("committed"), "{}", text(&r));
    assert!(text(&r).contains("is kept in snapshot"), "{}", text(&r));
    s.serves("0.15.5", &live);
    let h = text(&s.helper(&["history"], &[]));
    assert!(h.contains("snapshot restore under 0.15.5 committed"), "{h}");
}
