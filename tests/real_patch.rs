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
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
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
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn real_0_16_17_to_0_16_18_and_rollback_keep_accounts_and_mail() {
    patch_upgrade_and_rollback(
        "real_0_16_17_to_0_16_18_and_rollback_keep_accounts_and_mail",
        "0.16.17",
        "0.16.18",
    );
}

/// Issue #24: what the helper's refusal of export-only snapshots on 0.16.15+ stands on,
/// checked on the real binary (a release that fixes upstream #3273 turns this red, and the
/// refusal in `SnapshotPlan::unrestorable` can then stop at that release): a populated 0.16.18,
/// stopped, `--export`s its store, and `--import` of that export into a fresh, empty store
/// fails, because the import's own start writes the node lease into the subspace it then
/// refuses.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn real_0_16_18_cannot_import_its_own_export_into_a_fresh_store() {
    let test = "real_0_16_18_cannot_import_its_own_export_into_a_fresh_store";
    let Some((rels, _)) = releases(test, &["0.16.18"]) else {
        return;
    };
    let s = RealScenario::new(rels[0], testbed::real::Backend::RocksDb);
    let as_server = "runuser -u stalwart -- env STALWART_RECOVERY_ADMIN=admin:Export-check-1 /opt/stalwart/bin/stalwart";
    s.ct.sh_ok(&format!(
        "systemctl stop stalwart.service && install -d -o stalwart -g stalwart /var/tmp/x && \
         cd /var/tmp/x && {as_server} --config=/opt/stalwart/etc/config.json --export /var/tmp/x/export && \
         ls /var/tmp/x/export | grep -q subspace_g && \
         printf '{{\"@type\":\"RocksDb\",\"path\":\"/var/tmp/x/fresh\"}}' > /var/tmp/x/fresh.json && \
         chown stalwart: /var/tmp/x/fresh.json"
    ))
    .unwrap();
    let import = s.ct.sh(&format!(
        "cd /var/tmp/x && {as_server} --config=/var/tmp/x/fresh.json --import /var/tmp/x/export"
    ));
    let t = text(&import);
    assert_eq!(code(&import), 1, "{t}");
    assert!(
        t.contains("subspace_g") && t.contains("already contains data"),
        "{t}"
    );
}
