//! The real-server tier: patch upgrades and their rollback between upstream's real releases of
//! one line (the two newest 0.15 releases in the tier, 0.16.17 -> 0.16.18), with accounts made
//! through the real management API and mail delivered over SMTP, read back over JMAP after every
//! step; the process runs the expected bytes. Skips loudly when the tier lacks the releases.

mod real_common;
use real_common::*;
use testbed::real_server::{alice, RealServer};

fn patch_upgrade_and_rollback(test: &str, old: &str, new: &str) {
    let Some((rels, backend)) = releases(test, &[old, new]) else {
        return;
    };
    let (old, new) = (rels[0], rels[1]);
    let g = old.is_016();
    let s = RealScenario::new(old, backend);
    s.serves(old, g, &["before-alice"]);

    let out = s.upgrade(new);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("committed"), "{}", text(&out));
    s.serves(new, g, &["before-alice"]);
    RealServer::deliver(&s.ct, g, &alice(), "under-the-new-release").unwrap();
    assert_eq!(s.status_code(), 0, "{}", text(&s.helper(&["status"])));

    // Back to the kept release: a patch change keeps the data (nothing restored), so the mail
    // the new release took is there too.
    let out = s.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves(old, g, &["before-alice", "under-the-new-release"]);
    RealServer::deliver(&s.ct, g, &alice(), "after-the-rollback").unwrap();
}

#[test]
fn real_0_15_patch_upgrade_and_rollback_keep_accounts_and_mail() {
    let test = "real_0_15_patch_upgrade_and_rollback_keep_accounts_and_mail";
    let Some((old, new)) = testbed::real::newest_two("0.15") else {
        testbed::real::skip(
            test,
            "it needs two 0.15 releases in the real-server tier (STALWART_REAL_BINS), found fewer",
        );
        return;
    };
    patch_upgrade_and_rollback(test, &old.version.clone(), &new.version.clone());
}

#[test]
fn real_0_16_17_to_0_16_18_and_rollback_keep_accounts_and_mail() {
    patch_upgrade_and_rollback(
        "real_0_16_17_to_0_16_18_and_rollback_keep_accounts_and_mail",
        "0.16.17",
        "0.16.18",
    );
}
