//! The real-server tier across upstream's 0.16 line, with the real 0.15.5 and the newest 0.16: a
//! real failure of the 0.16 side rolled back to 0.15 with every account and mail; a crossing
//! that carries 0.15's directory over (accounts with their passwords, aliases, a group, a list,
//! a DKIM key, the listeners, the admin); and `rollback` after a good crossing (whose 0.16 data
//! the real 0.15.5 refuses, so the schema-5 snapshot is what brings it back).

mod real_common;
use real_common::*;

const DB: &str = "/opt/stalwart/data/index.sqlite3";

#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_0_16_that_fails_to_start_is_rolled_back_to_0_15_with_the_mail() {
    let test = "a_real_0_16_that_fails_to_start_is_rolled_back_to_0_15_with_the_mail";
    let Some((old, new, backend)) = crossing(test) else {
        return;
    };
    if backend != testbed::real::Backend::Sqlite {
        testbed::real::skip(test, "the schema check reads the SQLite store");
        return;
    }
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
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn rollback_after_a_real_crossing_brings_0_15_back_with_its_mail() {
    let test = "rollback_after_a_real_crossing_brings_0_15_back_with_its_mail";
    let Some((old, new, backend)) = crossing(test) else {
        return;
    };
    if backend != testbed::real::Backend::Sqlite {
        testbed::real::skip(test, "the schema check reads the SQLite store");
        return;
    }
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
    // Why the rollback needs the data snapshot: the real 0.15.5 refuses the migrated data.
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
    // Measured: with the carried objects in 0.16's registry (subspace `s`, 0.15's settings)
    // 0.15.5 stops at reading them ("Data corruption detected", exit 1); on a registry without
    // them it reaches the schema check and panics (exit 101).
    let err = String::from_utf8_lossy(&panic.stderr).into_owned();
    assert!(
        (panic.status.code() == Some(1) && err.contains("Data corruption detected"))
            || (panic.status.code() == Some(101) && err.contains("expected 5 or below, found 6")),
        "{}",
        text(&panic)
    );

    let out = s.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves(old, false, &["before-alice"]);
    assert_eq!(s.sqlite_schema(DB), 5);
}

/// Upstream's 0.16 migration wipes the directory; the crossing carries it over (issue 15). A
/// real 0.15.5 with a domain, three accounts (one with an alias, one in a group), a mailing list,
/// a DKIM key and mail for each crosses to the real 0.16: it runs in normal mode, every account
/// logs in with its 0.15 password over JMAP and IMAP (the carried 143 listener) and sees its
/// mail, the alias and the list deliver, the group, list and key exist, and the 0.15 admin logs
/// in with its old password.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_crossing_carries_accounts_groups_lists_dkim_keys_listeners_and_the_admin() {
    use testbed::real_server::{
        alice, bob, Account, RealServer, ADMIN, ADMIN_SECRET, DOMAIN, HTTP,
    };
    let test = "a_real_crossing_carries_accounts_groups_lists_dkim_keys_listeners_and_the_admin";
    let Some((old, new, backend)) = crossing(test) else {
        return;
    };
    let s = RealScenario::new(old, backend);
    let carol = Account {
        local: "carol".into(),
        password: "weakpw1".into(),
    };
    let rest = s.server.rest();
    s.ct.in_netns(|| -> anyhow::Result<()> {
        rest.group("sales", &format!("sales@{DOMAIN}"))?;
        // A weak plain-text password: 0.15 keeps it as given; 0.16 would refuse it as plain text.
        rest.user(
            &carol.local,
            &carol.password,
            &[&carol.address()],
            &["sales"],
        )?;
        rest.list("all", &format!("all@{DOMAIN}"), &["alice", "bob"])?;
        rest.dkim("Ed25519", DOMAIN, "s2026e")?;
        Ok(())
    })
    .expect("the rest of the fixture through the 0.15 API");
    RealServer::deliver(&s.ct, false, &carol, "before-carol").unwrap();
    assert_eq!(code(&s.helper(&["allow", "0.16"])), 0);
    let plan = s.helper(&["plan", "--to", &new.in_container()]);
    let p = text(&plan);
    assert!(
        p.contains("3 Account/User") && p.contains("1 Account/Group"),
        "{p}"
    );
    assert!(
        p.contains("1 MailingList") && p.contains("1 DkimSignature"),
        "{p}"
    );
    assert!(p.contains("NetworkListener") && p.contains("admin:"), "{p}");

    let out = s.upgrade(new);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.server.wait_ready(&s.ct).unwrap();
    assert_eq!(RealServer::running_sha256(&s.ct).unwrap(), new.sha256);
    testbed::real_server::assert_normal_mode(&s.ct);

    // Every account, its 0.15 password, its mail; over IMAP on the carried listener too.
    RealServer::sees(&s.ct, true, &alice(), &["before-alice"]).unwrap();
    RealServer::sees(&s.ct, true, &bob(), &["before-bob"]).unwrap();
    RealServer::sees(&s.ct, true, &carol, &["before-carol"]).unwrap();
    let n =
        s.ct.in_netns(|| {
            testbed::mail::imap_inbox_count("127.0.0.1:143", &alice().address(), &alice().password)
        })
        .unwrap();
    assert!(n >= 1, "alice's INBOX over IMAP holds {n}");
    // The alias and the list deliver.
    s.ct.in_netns(|| {
        testbed::mail::smtp_send(
            "127.0.0.1:25",
            "sender@external.test",
            &[&format!("alice.smith@{DOMAIN}")],
            "to-the-alias",
            "Hi.\n",
        )?;
        testbed::mail::smtp_send(
            "127.0.0.1:25",
            "sender@external.test",
            &[&format!("all@{DOMAIN}")],
            "to-the-list",
            "Hi all.\n",
        )?;
        testbed::mail::wait_for_mail(HTTP, &alice().address(), &alice().password, "to-the-alias")?;
        testbed::mail::wait_for_mail(HTTP, &alice().address(), &alice().password, "to-the-list")?;
        testbed::mail::wait_for_mail(HTTP, &bob().address(), &bob().password, "to-the-list")
    })
    .unwrap();
    // The 0.15 admin, with its old password, sees the group, the list and the key.
    let admin = testbed::mail::Jmap016::new(HTTP, ADMIN, ADMIN_SECRET);
    let (accounts, lists, keys) =
        s.ct.in_netns(|| {
            Ok::<_, anyhow::Error>((
                admin.get("Account", serde_json::Value::Null)?,
                admin.get("MailingList", serde_json::Value::Null)?,
                admin.get("DkimSignature", serde_json::Value::Null)?,
            ))
        })
        .expect("the 0.15 admin logs in to 0.16");
    let group = accounts
        .iter()
        .find(|a| a["@type"] == "Group" && a["name"] == "sales")
        .unwrap_or_else(|| panic!("no group sales: {accounts:?}"));
    let gid = group["id"].as_str().unwrap().to_string();
    let carol_account = accounts
        .iter()
        .find(|a| a["name"] == "carol")
        .unwrap_or_else(|| panic!("no carol: {accounts:?}"));
    assert_eq!(
        carol_account["memberGroupIds"][&gid], true,
        "{carol_account}"
    );
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["selector"], "s2026e", "{keys:?}");
    assert_eq!(s.status_code(), 0, "{}", text(&s.helper(&["status"])));
}

/// The same crossing on a real PostgreSQL data store (the container's own): 0.15.5's
/// `[store.pg]` becomes 0.16's `PostgreSql` config.json with its secret, the accounts and mail
/// come over, and `rollback` brings 0.15.5 back from the pg_dump snapshot with the mail.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_crossing_on_postgresql_and_its_rollback_keep_accounts_and_mail() {
    crossing_on_postgresql(
        "a_real_crossing_on_postgresql_and_its_rollback_keep_accounts_and_mail",
        false,
    );
}

/// The same with a store role that may create databases: the snapshot is a clone database in
/// the PostgreSQL server, the rollback copies it back and swaps it in, and what 0.16 wrote (the
/// mail delivered to it) is kept as a database of its own.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn a_real_crossing_on_postgresql_with_a_clone_snapshot_and_its_rollback() {
    crossing_on_postgresql(
        "a_real_crossing_on_postgresql_with_a_clone_snapshot_and_its_rollback",
        true,
    );
}

fn crossing_on_postgresql(test: &str, clone: bool) {
    use testbed::real_server::{alice, bob, RealServer};
    let Some([old, new]) = crossing_releases(test) else {
        return;
    };
    if !(old.postgres && new.postgres) {
        testbed::real::skip(test, "a release lacks the PostgreSQL store");
        return;
    }
    let s = RealScenario::new(old, testbed::real::Backend::Postgres);
    // psql as the container's PostgreSQL superuser.
    let superuser = |sql: &str| {
        s.ct.exec_ok(&["runuser", "-u", "postgres", "--", "psql", "-At", "-c", sql])
            .unwrap()
            .trim()
            .to_string()
    };
    let databases = |like: &str| {
        superuser(&format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '{like}'"
        ))
    };
    if clone {
        superuser("ALTER ROLE stalwart CREATEDB");
    }
    assert_eq!(code(&s.helper(&["allow", "0.16"])), 0);
    let out = s.upgrade(new);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let list = text(&s.helper(&["snapshot", "list", "--json"]));
    let method = if clone { "\"pg-clone\"" } else { "\"pg-dump\"" };
    assert!(
        list.contains(method),
        "the snapshot is not {method}: {list}"
    );
    assert_eq!(
        databases("stalwart_su_snap_%"),
        if clone { "1" } else { "0" }
    );
    let json =
        s.ct.exec_ok(&["cat", "/opt/stalwart/etc/config.json"])
            .unwrap();
    assert!(
        json.contains("\"PostgreSql\"") && json.contains("\"authSecret\""),
        "{json}"
    );
    s.serves(new, true, &["before-alice"]);
    RealServer::deliver(&s.ct, true, &bob(), "on-0.16-postgresql").unwrap();

    let out = s.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves(old, false, &["before-alice"]);
    RealServer::deliver(&s.ct, false, &alice(), "back-on-0.15").unwrap();
    if clone {
        // What 0.16 ran on (the mail delivered to it) is kept, renamed, not dumped.
        assert_eq!(databases("stalwart_su_kept_%"), "1");
    }
}

/// An object the real 0.16 refuses during the carry step (here a DKIM key whose PEM does not
/// parse, which 0.15 kept without complaint) fails the whole crossing: 0.15.5 runs again with
/// its accounts, mail and config as before.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn an_object_the_real_0_16_refuses_rolls_the_whole_crossing_back() {
    use testbed::real_server::{alice, RealServer};
    let test = "an_object_the_real_0_16_refuses_rolls_the_whole_crossing_back";
    let Some((old, new, backend)) = crossing(test) else {
        return;
    };
    let s = RealScenario::new(old, backend);
    s.ct.sh_ok(
        "printf '\\n[signature.broken]\\nalgorithm = \"ed25519-sha256\"\\ndomain = \"example.org\"\\nselector = \"broken\"\\nprivate-key = \"-----BEGIN PRIVATE KEY-----\\\\nbm90IGEga2V5\\\\n-----END PRIVATE KEY-----\"\\n' >> /opt/stalwart/etc/config.toml && systemctl restart stalwart.service",
    )
    .unwrap();
    s.server.wait_ready(&s.ct).unwrap();
    let toml =
        s.ct.exec_ok(&["sha256sum", "/opt/stalwart/etc/config.toml"])
            .unwrap();
    assert_eq!(code(&s.helper(&["allow", "0.16"])), 0);
    let out = s.upgrade(new);
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(t.contains("0.16 refused DkimSignature"), "{t}");
    s.serves(old, false, &["before-alice"]);
    assert_eq!(
        s.ct.exec_ok(&["sha256sum", "/opt/stalwart/etc/config.toml"])
            .unwrap(),
        toml
    );
    for gone in [
        "/opt/stalwart/etc/config.json",
        "/etc/stalwart-upgrade/stalwart.env",
    ] {
        assert!(!s.ct.path(gone).exists(), "{gone}: {t}");
    }
    RealServer::deliver(&s.ct, false, &alice(), "after-the-refused-crossing").unwrap();
}

/// Issue 26: upstream's DEFAULT installation crosses. The real 0.15.5 installed the install.sh
/// way on the config its own `--init` writes (RocksDB, the ten default listeners, no
/// server.hostname) in a container whose hostname is not fully qualified (0.16 refuses such a
/// name as its defaultHostname), with a domain, accounts with passwords, an alias, a DKIM key
/// and delivered mail. `allow 0.16` + `upgrade --to` the newest real 0.16: exit 0, 0.16's bytes
/// run in normal mode, the accounts log in with their old passwords over IMAPS and JMAP and see
/// their mail, the 0.15 admin works, every listener of before answers with its protocol's
/// greeting; `rollback` brings 0.15.5 back with all of it.
#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn upstreams_default_installation_crosses_on_a_short_hostname_and_rolls_back() {
    use testbed::real_server::{alice, bob, RealServer, ADMIN, ADMIN_SECRET, DOMAIN, HTTP};
    let test = "upstreams_default_installation_crosses_on_a_short_hostname_and_rolls_back";
    let Some([old, new]) = crossing_releases(test) else {
        return;
    };
    if !(old.rocksdb && new.rocksdb) {
        testbed::real::skip(
            test,
            "upstream's default store is RocksDB, which a release lacks",
        );
        return;
    }
    let s = RealScenario::with_init(old);
    // The machine: a short hostname, no fully qualified one (what 0.15 fell back to).
    let host = s.ct.exec_ok(&["hostname"]).unwrap();
    assert!(!host.trim().contains('.'), "{host}");
    let fqdn = s.ct.exec(&["hostname", "-f"]);
    assert!(
        !fqdn.status.success() || !String::from_utf8_lossy(&fqdn.stdout).contains('.'),
        "{}",
        text(&fqdn)
    );
    // The config is --init's own: RocksDB, ten listeners, no server.hostname.
    let toml =
        s.ct.exec_ok(&["cat", "/opt/stalwart/etc/config.toml"])
            .unwrap();
    assert!(
        !toml.contains("hostname") && toml.contains("type = \"rocksdb\""),
        "{toml}"
    );
    assert_eq!(toml.matches("[server.listener.").count(), 10, "{toml}");
    s.ct.in_netns(|| s.server.rest().dkim("Ed25519", DOMAIN, "s2026e"))
        .expect("a DKIM key through the 0.15 API");
    // Three settings an admin changes from 0.15's defaults (the web admin's way: the
    // database): two 0.16's registry expresses (carried), one it is not carried (listed).
    s.ct.in_netns(|| {
        s.server.rest().post(
            "/api/settings",
            serde_json::json!([{"type": "insert", "prefix": null, "assert_empty": false,
                "values": [["queue.schedule.remote.expire", "5d"],
                           ["report.analysis.addresses", format!("postmaster@{DOMAIN}")],
                           ["session.rcpt.max-recipients", "200"]]}]),
        )
    })
    .expect("settings through the 0.15 API");
    RealServer::deliver(
        &s.ct,
        false,
        &alice(),
        "to-the-alias-before", // delivered to alice's own address; the alias is checked after
    )
    .unwrap();
    testbed::real_server::every_init_listener_greets(&s.ct, "0.15.5 before");

    assert_eq!(code(&s.helper(&["allow", "0.16"])), 0);
    let plan = s.helper(&["plan", "--to", &new.in_container()]);
    let p = text(&plan);
    assert_eq!(code(&plan), 0, "{p}");
    assert!(
        p.contains(&format!("hostname:      mail.{DOMAIN} ")),
        "the hostname 0.16 gets: {p}"
    );
    for label in [
        "127.0.0.1:25 SMTP (listener smtp)",
        "127.0.0.1:587 SMTP (listener submission)",
        "127.0.0.1:465 SMTP submissions (listener submissions)",
        "127.0.0.1:143 IMAP (listener imap)",
        "127.0.0.1:993 IMAPS (listener imaptls)",
        "127.0.0.1:110 POP3 (listener pop3)",
        "127.0.0.1:995 POP3S (listener pop3s)",
        "127.0.0.1:4190 ManageSieve (listener sieve)",
        "127.0.0.1:443 HTTPS (listener https)",
        "127.0.0.1:8080 HTTP (listener http)",
    ] {
        assert!(p.contains(label), "no {label:?} in the plan: {p}");
    }
    assert!(!p.contains("HTTP/TLS") && !p.contains("blocked:"), "{p}");
    assert!(
        p.contains("10 NetworkListener") && p.contains("1 DkimSignature"),
        "{p}"
    );
    // The changed settings apart from everything 0.15.5 wrote itself (its defaults, --init's
    // config, the generated keys): two carried, one left behind, no other line says "an admin
    // changed".
    assert!(
        p.contains("settings:      2 an admin changed, carried: queue.schedule.remote.expire, report.analysis.addresses"),
        "{p}"
    );
    let changed: Vec<&str> = p
        .lines()
        .filter(|l| l.starts_with("left behind:") && l.contains("an admin changed"))
        .collect();
    assert_eq!(
        changed,
        ["left behind:   1 x settings session.rcpt.* an admin changed (each with its value in left-behind.txt)"],
        "{p}"
    );
    assert!(p.contains("settings at 0.15's own defaults"), "{p}");

    let out = s.upgrade(new);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.server.wait_ready(&s.ct).unwrap();
    assert_eq!(RealServer::running_sha256(&s.ct).unwrap(), new.sha256);
    testbed::real_server::assert_normal_mode(&s.ct);
    // The accounts, their 0.15 passwords, their mail: over JMAP and IMAPS.
    RealServer::sees(
        &s.ct,
        true,
        &alice(),
        &["before-alice", "to-the-alias-before"],
    )
    .unwrap();
    RealServer::sees(&s.ct, true, &bob(), &["before-bob"]).unwrap();
    let n =
        s.ct.in_netns(|| {
            testbed::mail::imaps_inbox_count("127.0.0.1:993", &alice().address(), &alice().password)
        })
        .unwrap();
    assert!(n >= 2, "alice's INBOX over IMAPS holds {n}");
    // The alias delivers.
    s.ct.in_netns(|| {
        testbed::mail::smtp_send(
            "127.0.0.1:25",
            "sender@external.test",
            &[&format!("alice.smith@{DOMAIN}")],
            "to-the-alias-after",
            "Hi.\n",
        )?;
        testbed::mail::wait_for_mail(
            HTTP,
            &alice().address(),
            &alice().password,
            "to-the-alias-after",
        )
    })
    .unwrap();
    testbed::real_server::every_init_listener_greets(&s.ct, "0.16 after the crossing");
    // The 0.15 admin with its old password: the key, and the hostname 0.16 got.
    let admin = testbed::mail::Jmap016::new(HTTP, ADMIN, ADMIN_SECRET);
    let (keys, settings) =
        s.ct.in_netns(|| {
            Ok::<_, anyhow::Error>((
                admin.get("DkimSignature", serde_json::Value::Null)?,
                admin.get("SystemSettings", serde_json::json!(["singleton"]))?,
            ))
        })
        .expect("the 0.15 admin logs in to 0.16");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["selector"], "s2026e", "{keys:?}");
    assert_eq!(
        settings[0]["defaultHostname"],
        format!("mail.{DOMAIN}"),
        "{settings:?}"
    );
    assert_eq!(s.status_code(), 0, "{}", text(&s.helper(&["status"])));
    // The report next to the dump: the changed settings by key, with their values.
    let report =
        s.ct.sh_ok("cat /var/lib/stalwart-upgrade/carry/*/left-behind.txt")
            .unwrap();
    let listed: Vec<&str> = report.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        listed,
        ["session.rcpt.max-recipients = \"200\""],
        "{report}"
    );
    // The carried settings, as 0.16 has them: the remote schedule expires after 5 days, with
    // 0.15's retries; the other three schedules and four queues are there too (0.16 adds none
    // of its defaults once one exists), and the report address is 0.15's.
    let (schedules, queues, reports) =
        s.ct.in_netns(|| {
            Ok::<_, anyhow::Error>((
                admin.get("MtaDeliverySchedule", serde_json::Value::Null)?,
                admin.get("MtaVirtualQueue", serde_json::Value::Null)?,
                admin.get("ReportSettings", serde_json::json!(["singleton"]))?,
            ))
        })
        .expect("the carried settings");
    let remote = schedules
        .iter()
        .find(|s| s["name"] == "remote")
        .unwrap_or_else(|| panic!("{schedules:?}"));
    assert_eq!(remote["expiry"]["expire"], 432_000_000u64, "{remote}");
    assert_eq!(
        remote["retry"]["intervals"]["0"]["duration"], 120_000,
        "{remote}"
    );
    assert_eq!(schedules.len(), 4, "{schedules:?}");
    assert_eq!(queues.len(), 4, "{queues:?}");
    assert_eq!(
        reports[0]["inboundReportAddresses"],
        serde_json::json!({format!("postmaster@{DOMAIN}"): true}),
        "{reports:?}"
    );

    // And back: 0.15.5 with its accounts, mail, admin and listeners.
    let out = s.helper(&["rollback", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves(old, false, &["before-alice", "to-the-alias-before"]);
    testbed::real_server::every_init_listener_greets(&s.ct, "0.15.5 after the rollback");
    let principal =
        s.ct.in_netns(|| s.server.rest().principal("alice"))
            .expect("the 0.15 admin after the rollback");
    assert_eq!(principal["name"], "alice", "{principal}");
}
