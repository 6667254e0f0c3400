//! What the helper keeps, end to end in booted systemd containers with the stand-in server
//! (issue #24): data a rollback set aside survives count-based retention and restores, and a
//! package purge neither runs under an unfinished transaction nor deletes set-aside data.

mod common;
use common::*;
use testbed::Fault;

/// The retention the issue measured losing mail: a minor upgrade, mail delivered to the new
/// version, a rollback (which restores the pre-upgrade data and keeps the newer data in the
/// snapshot it took), then four patch upgrades with `keep = 3`. Before, the fourth pruned that
/// snapshot and the mail was gone; `status` stopped mentioning it.
#[test]
fn mail_set_aside_by_a_rollback_outlives_retention_and_restores() {
    let s = Scenario::with(
        &release("0.14.3", Fault::None, 0),
        testbed::stalwart::ServerLayout::rocksdb(),
        &format!("[snapshots]\nkeep = 3\n{DEFAULT_HELPER_CONFIG}"),
    );
    let before = s.digest();
    s.allow("0.15");
    let out = s.upgrade(&release("0.15.5", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.deliver(5);
    let with_mail = s.digest();
    assert_eq!(with_mail["version"], "0.15.5");
    assert_ne!(data_of(&with_mail), data_of(&before));

    let rb = s.helper(&["rollback", "--yes"], &[]);
    let t = text(&rb);
    assert_eq!(code(&rb), 0, "{t}");
    s.serves("0.14.3", &before);
    let aside = t
        .split("is kept in snapshot ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the rollback names no kept snapshot: {t}"))
        .to_string();

    for patch in ["0.14.4", "0.14.5", "0.14.6", "0.14.7"] {
        let out = s.upgrade(&release(patch, Fault::None, 0), &[]);
        assert_eq!(code(&out), 0, "{patch}: {}", text(&out));
    }
    assert_eq!(s.binary_version(), "0.14.7");

    // Still there, set aside; retention applied to the others.
    let list = s.helper(&["snapshot", "list", "--json"], &[]);
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let snaps = snaps.as_array().expect("a list");
    let kept = snaps
        .iter()
        .find(|m| m["id"] == aside.as_str())
        .unwrap_or_else(|| panic!("{aside} was pruned: {snaps:#?}"));
    assert_eq!(kept["server_version"], "0.15.5");
    assert!(kept["origin"].is_string(), "{kept:#}");
    let plain = snaps.iter().filter(|m| m["origin"].is_null()).count();
    assert!(plain <= 3, "keep = 3 still applies to the rest: {snaps:#?}");

    // `status` and `history` name it, with its size and the command that removes it.
    let st = s.helper(&["status"], &[]);
    let st_text = text(&st);
    assert_eq!(code(&st), 0, "{st_text}");
    let remove = format!("stalwart-upgrade snapshot remove {aside}");
    assert!(
        st_text.contains(&aside)
            && st_text.contains(&remove)
            && st_text.contains("KiB")
            && st_text.contains("run 0.15.5 again first"),
        "{st_text}"
    );
    let js = s.helper(&["status", "--json"], &[]);
    let js: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    assert_eq!(js["set_aside"][0]["id"], aside.as_str(), "{js:#}");
    assert!(
        js["set_aside"][0]["bytes"].as_u64().unwrap_or(0) > 0,
        "{js:#}"
    );
    let h = text(&s.helper(&["history"], &[]));
    assert!(
        h.contains(&format!("set aside: snapshot {aside}")) && h.contains(&remove),
        "{h}"
    );

    // Restorable: under 0.15.5 again (the version whose data it is), `snapshot restore` brings
    // back the mail that version took before the rollback.
    s.allow("0.15");
    let out = s.upgrade(&release("0.15.5", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let r = s.helper(&["snapshot", "restore", &aside, "--stop", "--yes"], &[]);
    assert_eq!(code(&r), 0, "{}", text(&r));
    s.serves("0.15.5", &with_mail);
}

/// A package purge while a transaction is unfinished (an upgrade killed after its stop) would
/// delete the journal and the snapshot that `recover` needs: it refuses, says what to run, and
/// removes nothing. After `recover` the purge goes through.
#[test]
fn purge_with_an_open_journal_refuses_and_removes_nothing() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    let before = s.digest();
    s.allow("0.15");
    let out = s.upgrade(
        &release("0.15.5", Fault::None, 0),
        &[("STALWART_UPGRADE_TEST_KILL_AT", "swap:done")],
    );
    assert!(out.status.code().is_none(), "not killed: {}", text(&out));
    let journal = "/var/lib/stalwart-upgrade/journal.jsonl";
    assert!(s.ct.path(journal).is_file(), "the journal is open");
    let snapshots =
        s.ct.sh_ok("ls /var/lib/stalwart-upgrade/snapshots")
            .unwrap();

    let p = s.helper(&["hook", "deb", "postrm", "purge"], &[]);
    let t = text(&p);
    assert_ne!(code(&p), 0, "dpkg must see the purge fail: {t}");
    assert!(
        t.contains("purge refused") && t.contains("stalwart-upgrade recover"),
        "{t}"
    );
    assert!(s.ct.path(journal).is_file(), "journal kept: {t}");
    assert_eq!(
        s.ct.sh_ok("ls /var/lib/stalwart-upgrade/snapshots")
            .unwrap(),
        snapshots,
        "snapshots kept: {t}"
    );
    assert!(s.ct.path("/opt/stalwart/bin/stalwart").is_file(), "{t}");

    // The admin does what it says: recovery puts 0.14.3 back on its data.
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{}", text(&rec));
    s.serves("0.14.3", &before);
    s.ct.exec_ok(&["systemctl", "stop", "stalwart.service"])
        .unwrap();
    let p = s.helper(&["hook", "deb", "postrm", "purge"], &[]);
    assert_eq!(code(&p), 0, "{}", text(&p));
    assert!(
        !s.ct.path("/var/lib/stalwart-upgrade").exists(),
        "{}",
        text(&p)
    );
    assert!(!s.ct.path("/opt/stalwart/bin").exists());
    assert!(s.ct.path("/opt/stalwart/data").is_dir(), "data kept");
}
