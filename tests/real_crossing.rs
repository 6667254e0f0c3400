//! The real-server tier across upstream's 0.16 line, with the real 0.15.5 and 0.16.18: a real
//! failure of the 0.16 side rolled back to 0.15 with every account and mail, and `rollback` after
//! a good crossing (whose 0.16 data the real 0.15.5 refuses with a panic, so the schema-5
//! snapshot is what brings it back).

mod real_common;
use real_common::*;

const DB: &str = "/opt/stalwart/data/index.sqlite3";

#[test]
fn a_real_0_16_that_fails_to_start_is_rolled_back_to_0_15_with_the_mail() {
    let test = "a_real_0_16_that_fails_to_start_is_rolled_back_to_0_15_with_the_mail";
    let Some(new) = testbed::real::newest("0.16") else {
        testbed::real::skip(test, "no 0.16 release in the real-server tier");
        return;
    };
    let Some((rels, backend)) = releases(test, &["0.15.5", &new.version.clone()]) else {
        return;
    };
    if backend != testbed::real::Backend::Sqlite {
        testbed::real::skip(test, "the schema check reads the SQLite store");
        return;
    }
    let (old, new) = (rels[0], rels[1]);
    let s = RealScenario::new(old, backend);
    assert_eq!(s.sqlite_schema(DB), 5);
    assert_eq!(code(&s.helper(&["allow", "0.16"])), 0);
    // config.json (written by the crossing, in the service user's etc/) is broken before 0.16
    // first reads it: the real binary refuses it ("Startup failed", exit 1).
    let out = s.upgrade_pausing(
        new,
        "generation:done",
        "runuser -u stalwart -- sh -c 'echo not-json > /opt/stalwart/etc/config.json'",
    );
    let t = text(&out);
    assert_eq!(code(&out), 5, "expected an automatic rollback: {t}");
    assert!(t.contains("Rolled back"), "{t}");
    assert!(!s.ct.path("/opt/stalwart/etc/config.json").exists(), "{t}");
    s.serves(old, false, &["before-alice"]);
    assert_eq!(s.sqlite_schema(DB), 5);
    testbed::real_server::RealServer::deliver(
        &s.ct,
        false,
        &testbed::real_server::alice(),
        "after-the-failed-crossing",
    )
    .unwrap();
    assert_eq!(s.status_code(), 8, "status flags the failed upgrade");
}

#[test]
fn rollback_after_a_real_crossing_brings_0_15_back_with_its_mail() {
    let test = "rollback_after_a_real_crossing_brings_0_15_back_with_its_mail";
    let Some(new) = testbed::real::newest("0.16") else {
        testbed::real::skip(test, "no 0.16 release in the real-server tier");
        return;
    };
    let Some((rels, backend)) = releases(test, &["0.15.5", &new.version.clone()]) else {
        return;
    };
    if backend != testbed::real::Backend::Sqlite {
        testbed::real::skip(test, "the schema check reads the SQLite store");
        return;
    }
    let (old, new) = (rels[0], rels[1]);
    let s = RealScenario::new(old, backend);
    assert_eq!(code(&s.helper(&["allow", "0.16"])), 0);
    let out = s.upgrade(new);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.server.wait_ready(&s.ct).unwrap();
    assert_eq!(
        testbed::real_server::RealServer::running_sha256(&s.ct).unwrap(),
        new.sha256
    );
    assert_eq!(
        s.sqlite_schema(DB),
        6,
        "the recovery-mode start migrated the data"
    );
    // Why the rollback needs the data snapshot: the real 0.15.5 panics on schema 6 (exit 101).
    s.ct.sh_ok(&format!(
        "mkdir -p /srv/copy && cp {DB} /srv/copy/db && chown -R stalwart /srv/copy && \
         printf '[storage]\\ndata = \"s\"\\nfts = \"s\"\\nblob = \"s\"\\nlookup = \"s\"\\ndirectory = \"internal\"\\n[store.s]\\ntype = \"sqlite\"\\npath = \"/srv/copy/db\"\\n[directory.internal]\\ntype = \"internal\"\\nstore = \"s\"\\n' > /srv/copy/config.toml"
    ))
    .unwrap();
    let panic = s.ct.exec(&[
        "runuser",
        "-u",
        "stalwart",
        "--",
        &old.in_container(),
        "--config=/srv/copy/config.toml",
    ]);
    assert_eq!(panic.status.code(), Some(101), "{}", text(&panic));
    assert!(
        String::from_utf8_lossy(&panic.stderr).contains("expected 5 or below, found 6"),
        "{}",
        text(&panic)
    );

    let out = s.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves(old, false, &["before-alice"]);
    assert_eq!(s.sqlite_schema(DB), 5);
}
