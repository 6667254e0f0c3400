//! The helper SIGKILLed at every journaled step (and at every undo step of a rollback), then
//! `recover`: each case must end with a healthy server on consistent data — the OLD version when
//! killed before the health gate passed, the NEW one after it (the rule in transaction.rs).
//! Prints the matrix as a table; fails on any cell that is not healthy-and-consistent.

mod common;
use common::*;
use stalwart_upgrade::engine::journal::{
    Begin, Noted, Phase, Record, Step, Summary, TxKind, FORMAT,
};
use stalwart_upgrade::engine::{commit, undo};
use stalwart_upgrade::flows::{rollback, upgrade};
use std::sync::Mutex;
use testbed::Fault;

#[derive(Clone, Copy, Debug)]
enum Expect {
    Old,
    New,
}

struct Case {
    class: &'static str,
    kill_at: String,
    /// The release is broken, so the kill lands inside the rollback.
    broken: bool,
    expect: Expect,
}

/// Points a flow's scenario here never reaches, with why (a case for them could only fail to
/// be killed).
const UNREACHED: &[(&str, &str)] = &[
    // 0.16 takes its admin from its own settings, so the refresh with the 0.15 fallback admin's
    // credentials fails: a warning, and `webadmin:done` is never written.
    ("0.16", "webadmin:done"),
];

/// `{step}:started` and `{step}:done` of every step of a flow's list (`steps`, what the flow
/// exports and the engine holds it to), then of the commit's: each with what `recover` must
/// bring back, the old version until the health gate passed, the new one after. A step added
/// to a flow is killed here without an edit.
fn points(steps: &[Step]) -> Vec<(String, Expect)> {
    let mut v = vec![("begin:done".to_string(), Expect::Old)];
    let mut past_gate = false;
    for step in steps.iter().chain(commit::STEPS) {
        for phase in ["started", "done"] {
            past_gate |= *step == Step::Health && phase == "done";
            let expect = if past_gate { Expect::New } else { Expect::Old };
            v.push((format!("{step}:{phase}"), expect));
        }
    }
    v
}

/// The undo of a minor upgrade whose release never gets ready, as the engine plans it from the
/// journal (`undo::plan`): `abort:done`, then each action's started and done.
fn undo_points() -> Vec<String> {
    let begin = Begin {
        txid: "t".into(),
        seq: 1,
        kind: TxKind::Upgrade,
        unit: "stalwart.service".into(),
        from: "0.14.3".parse().unwrap(),
        to: "0.15.5".parse().unwrap(),
        class: stalwart_upgrade::server::version::Class::Minor,
        was_active: true,
        bin_dir: "/opt/stalwart/bin".into(),
        staged_dir: "/opt/stalwart/bin.new".into(),
        old_sha256: String::new(),
        new_sha256: String::new(),
        restore_data: true,
        restore_from: None,
        server_config: "/opt/stalwart/etc/config.toml".into(),
        listeners: vec![],
    };
    let mut records = vec![Record::Begin {
        at: 0,
        mono: None,
        format: FORMAT,
        begin: Box::new(begin.clone()),
    }];
    for step in upgrade::STEPS {
        records.push(Record::Step {
            at: 1,
            mono: None,
            step: *step,
            phase: Phase::Started,
            note: None,
        });
        if *step != Step::Health {
            records.push(Record::Step {
                at: 1,
                mono: None,
                step: *step,
                phase: Phase::Done,
                note: (*step == Step::Snapshot).then(|| Noted::Snapshot { id: "s".into() }.into()),
            });
        }
    }
    let plan = undo::plan(&Summary::of(&records), &begin, false).expect("an undo plan");
    let mut v = vec!["abort:done".to_string()];
    for undo in plan.iter().filter_map(|a| a.record()) {
        v.push(format!("{}:started", undo.as_str()));
        v.push(format!("{}:done", undo.as_str()));
    }
    v
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |class: &'static str, points: Vec<(String, Expect)>, broken: bool| {
        for (kill_at, expect) in points {
            if !UNREACHED.contains(&(class, kill_at.as_str())) {
                v.push(Case {
                    class,
                    kill_at,
                    broken,
                    expect,
                });
            }
        }
    };
    add("patch", points(upgrade::STEPS), false);
    add("minor", points(upgrade::STEPS), false);
    // 0.15 -> 0.16: config.json / the drop-in written, the recovery-mode start, the carry.
    add("0.16", points(upgrade::CROSSING_STEPS), false);
    // `rollback` from 0.16.18 back to 0.15.5 after a committed 0.15 -> 0.16 upgrade: config.json
    // and the drop-in set aside, the schema-5 snapshot restored. Old = 0.16.18 on its data,
    // New = 0.15.5 on the data from before the upgrade.
    add("<0.16", points(rollback::STEPS), false);
    let undo = undo_points()
        .into_iter()
        .map(|p| (p, Expect::Old))
        .collect();
    add("minor", undo, true);
    if let Ok(filter) = std::env::var("CRASH_MATRIX_FILTER") {
        v.retain(|c| format!("{}:{}", c.class, c.kill_at).contains(&filter));
    }
    v
}

/// Runs one case; Ok(outcome words) or Err(what was wrong).
fn run(case: &Case) -> Result<String, String> {
    if case.class == "<0.16" {
        return run_back_below_016(case);
    }
    let (from, to) = match case.class {
        "patch" => ("0.15.5", "0.15.6"),
        "0.16" => ("0.15.5", "0.16.18"),
        _ => ("0.14.3", "0.15.5"),
    };
    // A minor release that migrates and then never gets ready: the rollback has to restore data.
    let (fault, cfg) = if case.broken {
        (
            Fault::NeverReady,
            DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 3"),
        )
    } else {
        (Fault::None, DEFAULT_HELPER_CONFIG.to_string())
    };
    let s = Scenario::with(
        &release(from, Fault::None, 0),
        testbed::stalwart::ServerLayout::rocksdb(),
        &cfg,
    );
    match case.class {
        "minor" => s.allow("0.15"),
        "0.16" => s.allow("0.16"),
        _ => {}
    }
    let before = s.digest();
    let out = s.upgrade(
        &release(to, fault, 0),
        &[("STALWART_UPGRADE_TEST_KILL_AT", case.kill_at.as_str())],
    );
    was_killed(&out, &case.kill_at)?;
    recover_twice(&s)?;
    let want = match case.expect {
        Expect::Old => from,
        Expect::New => to,
    };
    let after = running(&s, want)?;
    match case.expect {
        Expect::Old if data_of(&after) != data_of(&before) => {
            return Err(format!("data differs: before {before} after {after}"))
        }
        // Crossing to 0.16 wipes settings records by design (upstream's recovery-mode migration).
        Expect::New
            if case.class == "0.16"
                && (after["schema"] != 6
                    || after["records"].as_u64() >= before["records"].as_u64()) =>
        {
            return Err(format!(
                "0.16 migration not as expected: before {before} after {after}"
            ))
        }
        Expect::New if case.class != "0.16" && after["records"] != before["records"] => {
            return Err(format!("records lost: before {before} after {after}"))
        }
        _ => {}
    }
    closed(&s)?;
    Ok(format!(
        "{want} healthy, data consistent (schema {})",
        after["schema"]
    ))
}

fn was_killed(out: &std::process::Output, at: &str) -> Result<(), String> {
    match out.status.code() {
        None => Ok(()),
        Some(_) => Err(format!("helper was not killed at {at}: {}", text(out))),
    }
}

/// The binary and the server both say `want`; returns the server's digest.
fn running(s: &Scenario, want: &str) -> Result<serde_json::Value, String> {
    let version = s.binary_version();
    let after = s.digest();
    if version != want || after["version"] != want {
        return Err(format!(
            "expected {want} running, binary {version}, server {}",
            after["version"]
        ));
    }
    Ok(after)
}

fn closed(s: &Scenario) -> Result<(), String> {
    if s.ct
        .path("/var/lib/stalwart-upgrade/journal.jsonl")
        .exists()
    {
        return Err("journal still open".into());
    }
    Ok(())
}

/// `recover` twice: the first finishes or undoes, the second has nothing to do.
fn recover_twice(s: &Scenario) -> Result<(), String> {
    let rec = s.helper(&["recover"], &[]);
    if code(&rec) != 0 {
        return Err(format!("recover failed: {}", text(&rec)));
    }
    let again = s.helper(&["recover"], &[]);
    if code(&again) != 0 || !text(&again).contains("no unfinished transaction") {
        return Err(format!("second recover not a no-op: {}", text(&again)));
    }
    testbed::stalwart::wait_ready(&s.ct, std::time::Duration::from_secs(30))
        .map(|_| ())
        .map_err(|e| format!("not healthy after recover: {e:#}"))
}

/// A committed 0.15.5 -> 0.16.18 upgrade, more mail on 0.16, then `rollback` killed at the case's
/// step and recovered.
fn run_back_below_016(case: &Case) -> Result<String, String> {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.allow("0.16");
    let before = s.digest();
    let up = s.upgrade(&release("0.16.18", Fault::None, 0), &[]);
    if code(&up) != 0 {
        return Err(format!("the upgrade to 0.16.18 failed: {}", text(&up)));
    }
    s.ready();
    s.deliver(3);
    let on_016 = s.digest();
    let out = s.helper(
        &["rollback", "--yes"],
        &[("STALWART_UPGRADE_TEST_KILL_AT", case.kill_at.as_str())],
    );
    was_killed(&out, &case.kill_at)?;
    recover_twice(&s)?;
    let (want, want_data, config) = match case.expect {
        Expect::Old => ("0.16.18", &on_016, "config.json"),
        Expect::New => ("0.15.5", &before, "config.toml"),
    };
    let after = running(&s, want)?;
    if data_of(&after) != data_of(want_data) {
        return Err(format!("data differs: expected {want_data} got {after}"));
    }
    let exec =
        s.ct.exec_ok(&["systemctl", "show", "-P", "ExecStart", "stalwart.service"])
            .map_err(|e| e.to_string())?;
    if !exec.contains(config) {
        return Err(format!("the unit does not run {config}: {exec}"));
    }
    closed(&s)?;
    Ok(format!(
        "{want} healthy on {config}, data consistent (schema {})",
        after["schema"]
    ))
}

#[test]
fn kill_at_every_step_then_recover() {
    let cases = cases();
    assert!(!cases.is_empty(), "no case selected");
    let parallel: usize = std::env::var("CRASH_MATRIX_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, Result<String, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..parallel {
            sc.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(case) = cases.get(i) else { break };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(case)))
                    .unwrap_or_else(|p| {
                        Err(p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into()))
                    });
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    use std::fmt::Write as _;
    let mut table = String::from("\nclass  release  killed at                ok   outcome\n");
    let mut bad = 0;
    for (i, r) in &results {
        let c = &cases[*i];
        let (ok, what) = match r {
            Ok(s) => ("yes", s.clone()),
            Err(e) => {
                bad += 1;
                ("NO", e.clone())
            }
        };
        let _ = writeln!(
            table,
            "{:<6} {:<8} {:<24} {:<4} {}",
            c.class,
            if c.broken { "broken" } else { "good" },
            c.kill_at,
            ok,
            what.lines().next().unwrap_or("")
        );
    }
    let _ = writeln!(
        table,
        "{} cases, {} healthy and consistent, {} not",
        results.len(),
        results.len() - bad,
        bad
    );
    // Straight to the process's stderr: the test harness captures print!/eprint! of passing
    // tests, and the matrix belongs in every CI log.
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(table.as_bytes());
    for (i, r) in &results {
        if let Err(e) = r {
            eprintln!("\n=== {}:{} ===\n{e}", cases[*i].class, cases[*i].kill_at);
        }
    }
    assert_eq!(
        bad, 0,
        "{bad} crash cases did not end healthy and consistent"
    );
}

/// Killed during the health gate of a minor upgrade, with the new version up and taking mail;
/// then `recover` undoes it. The mail the new version took is not in the restored data, but it is
/// not gone: it is in the snapshot the undo kept, which `status` names, and which restores under
/// a version that reads it (here: the same minor upgrade again, then `snapshot restore`).
#[test]
fn mail_taken_by_the_new_version_before_a_kill_is_kept_and_named_by_status() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    s.allow("0.15");
    let before = s.digest();
    let to = release("0.15.5", Fault::None, 0);
    let out = s.upgrade(&to, &[("STALWART_UPGRADE_TEST_KILL_AT", "health:started")]);
    assert!(out.status.code().is_none(), "not killed: {}", text(&out));
    s.ready();
    s.deliver(5);
    let with_mail = s.digest();
    assert_eq!(with_mail["version"], "0.15.5");
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{}", text(&rec));
    s.serves("0.14.3", &before);
    let st = s.helper(&["status"], &[]);
    let kept = text(&st)
        .lines()
        .find_map(|l| {
            l.split("snapshot ")
                .nth(1)
                .filter(|r| r.contains("keeps the data 0.15.5 ran on"))
                .and_then(|r| r.split_whitespace().next())
                .map(String::from)
        })
        .unwrap_or_else(|| panic!("status names no kept snapshot: {}", text(&st)));
    // Under 0.15.5 again, the kept snapshot brings the five mails back.
    let again = s.upgrade(&to, &[]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    let r = s.helper(&["snapshot", "restore", &kept, "--stop", "--yes"], &[]);
    assert_eq!(code(&r), 0, "{}", text(&r));
    s.ready();
    assert_eq!(
        data_of(&s.digest()),
        data_of(&with_mail),
        "the mail is back"
    );
}

/// The probation's points (issue #25), for a release that passes its gate and crashes 15 s
/// later: the helper killed after the probation is on disk but before its watcher started, and
/// the watcher killed after it judged the crash but before its rollback. Each time the one
/// `recover` a hook or boot runs starts a watcher again, which rolls the release back to the
/// old version with its data, within the probation plus 30 s, and says so in the journal
/// (MESSAGE_ID of the probation rollback).
#[test]
fn probation_points_then_recover() {
    let mut failures = Vec::new();
    for point in ["probation:begun", "probation:judged"] {
        let s = Scenario::new(&release("0.15.5", Fault::None, 0));
        s.ct.write_file(
            "/etc/stalwart-upgrade/config.d/probation.toml",
            "[health]\nprobation_secs = 60\n",
        )
        .unwrap();
        let before = s.digest();
        let out = s.upgrade(
            &release("0.15.6", Fault::CrashLater, 0),
            &[("STALWART_UPGRADE_TEST_KILL_AT", point)],
        );
        let probation = "/var/lib/stalwart-upgrade/probation.json";
        if point == "probation:begun" {
            if let Err(e) = was_killed(&out, point) {
                failures.push(e);
                continue;
            }
        } else {
            assert_eq!(code(&out), 0, "committed on probation: {}", text(&out));
            // The watcher kills itself at its verdict, 15 s after the start at the earliest.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while s
                .ct
                .sh("systemctl is-active --quiet stalwart-upgrade-probation.service")
                .status
                .success()
            {
                assert!(std::time::Instant::now() < deadline, "the watcher ran on");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        if !s.ct.path(probation).exists() {
            failures.push(format!("{point}: the probation was not left on disk"));
            continue;
        }
        assert_eq!(s.binary_version(), "0.15.6", "{point}: not rolled back yet");
        let rec = s.helper(&["recover"], &[]);
        if code(&rec) != 0 {
            failures.push(format!("{point}: recover failed: {}", text(&rec)));
            continue;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        let back = loop {
            let back = s.binary_version() == "0.15.5"
                && !s.ct.path(probation).exists()
                && !s
                    .ct
                    .path("/var/lib/stalwart-upgrade/journal.jsonl")
                    .exists()
                && s.ct
                    .sh("systemctl is-active --quiet stalwart.service")
                    .status
                    .success();
            if back || std::time::Instant::now() > deadline {
                break back;
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        };
        if !back {
            failures.push(format!(
                "{point}: not rolled back within 90 s of recover:\n{}",
                s.ct.journal("stalwart-upgrade-probation.service")
            ));
            continue;
        }
        s.serves("0.15.5", &before);
        let st = s.helper(&["status"], &[]);
        if code(&st) != 8 || !text(&st).contains("failed its probation") {
            failures.push(format!("{point}: status: {}", text(&st)));
        }
        let entries = s.entries("97e4d1cac51b4532aa5a4f5b21d3975b");
        if entries.len() != 1
            || entries[0]["STALWART_FROM"] != "0.15.5"
            || entries[0]["STALWART_TO"] != "0.15.6"
            || entries[0]["OBJECT_SYSTEMD_UNIT"] != "stalwart.service"
        {
            failures.push(format!("{point}: journal entries {entries:#?}"));
        }
        println!("{point}: recover resumed the probation, 0.15.5 healthy, data consistent");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
