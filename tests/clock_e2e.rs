//! The wall clock jumping: set back between two upgrades, and forward in the middle of one
//! (NTP stepping it, an admin, a VM resumed from a snapshot). The container shares the host's
//! clock, which a test must not set, so the helper runs under libfaketime (the real CLOCK_REALTIME
//! shifted, the monotonic clocks left alone: exactly what setting the clock does).
//!
//! What must not depend on the wall clock: the order of transactions (history, `status`), the
//! order of snapshots (retention, and which one a rollback restores: a stale one loses mail),
//! and the durations reported (downtime).

mod common;
use common::*;
use testbed::Fault;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn a_clock_set_back_or_forward_changes_no_order_no_choice_and_no_duration() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    s.ct.exec_ok(&["test", "-f", LIBFAKETIME])
        .expect("libfaketime in the testbed rootfs (testbed/mkrootfs.sh)");
    s.allow("0.15");
    let seeded = s.digest();

    // A: with the clock 30 days ahead, a minor upgrade to a release that crashes at start. It
    // is rolled back; its snapshot (of the 20 seeded records) is stamped 30 days ahead.
    let ahead = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "+30d"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let out = s.upgrade(&release("0.15.4", Fault::CrashAtStart, 0), &ahead);
    assert_eq!(code(&out), 5, "{}", text(&out));
    s.ready();
    assert_eq!(data_of(&s.digest()), data_of(&seeded));
    s.deliver(10);
    let before_b = s.digest();

    // B: the clock is back to now (30 days earlier than A's), and jumps a day forward while the
    // server is down (paused after the swap). The upgrade to a good release commits.
    s.ct.write_file("/root/clock", "+0").unwrap();
    let moving = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", "/root/clock"),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let out = s.upgrade_pausing_with(
        &release("0.15.5", Fault::None, 0),
        &moving,
        "swap:done",
        "echo +1d > /root/clock",
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.15.5");

    // History: A then B, although B began 29 days "before" A by the wall clock; B's downtime is
    // what it was (well under a minute), not the day the clock jumped.
    let h = s.history_json();
    let entries = h.as_array().expect("history is a list");
    let [a, b] = &entries[..] else {
        panic!("two transactions expected: {h:#}")
    };
    assert_eq!(
        (a["to"].as_str(), b["to"].as_str()),
        (Some("0.15.4"), Some("0.15.5")),
        "{h:#}"
    );
    assert!(
        b["started_at"].as_u64() < a["started_at"].as_u64(),
        "the test did not set the clock back: {h:#}"
    );
    let downtime = b["downtime_ms"].as_u64().expect("B has a downtime");
    assert!(
        downtime < 60_000,
        "B's downtime counts the clock jump: {downtime} ms"
    );
    let duration = b["duration_ms"].as_u64().unwrap();
    assert!(
        duration < 120_000,
        "B's duration counts the clock jump: {duration} ms"
    );

    // Snapshots: B's is the newest, whatever the stamps say.
    let list = s.helper(&["snapshot", "list", "--json"], &[]);
    assert_eq!(code(&list), 0, "{}", text(&list));
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let snaps = snaps.as_array().expect("snapshot list is a list");
    let last = snaps.last().expect("snapshots");
    assert_eq!(
        last["id"], b["snapshot"],
        "the newest snapshot must be B's: {snaps:#?}"
    );

    // Rollback after more mail: B's snapshot (30 records) comes back, not A's (20) that the
    // wall clock calls newer.
    s.deliver(5);
    let rb = s.helper(&["rollback", "--yes"], &[]);
    assert_eq!(code(&rb), 0, "{}", text(&rb));
    s.serves("0.14.3", &before_b);
}
