//! #25 in a booted container: the helper is SIGKILLed right after a journal record, and that
//! record is then torn in the state dir (cut half-way, no newline: what a power loss or a full
//! disk leaves). `recover` must cut it off and finish the job, and from then on `status`,
//! `history` and a new `upgrade` must all work. Before journal format 1, `recover` appended onto
//! the torn record, and every later command failed on the archived journal for good.
//!
//! Record types torn here: begin, step started, step done (the health gate's: the transaction is
//! then undone), abort, undo done; each kill and tear runs in the same container as the next (a
//! container costs 10-20 s), two containers in all. Every record type, end and cut included, at
//! several tear lengths: tests/journal_torn.rs (library level).
//!
//! The first container also carries a journal damaged in the middle into history (the file the
//! helper before format 1 archived): it is moved into history/damaged/ with a warning naming both
//! paths, `history` lists what reads of it, and the next upgrade is not blocked.

mod common;
use common::*;
use stalwart_upgrade::engine::journal::{parse, Ending, Record};
use testbed::Fault;

const JOURNAL: &str = "/var/lib/stalwart-upgrade/journal.jsonl";
const HISTORY: &str = "/var/lib/stalwart-upgrade/history";

/// Runs an upgrade killed at `kill_at`, then tears the journal's last record half-way; returns
/// the length of what is left of it.
fn killed_and_torn(s: &Scenario, to: &std::path::Path, kill_at: &str, retry: bool) -> usize {
    let p = s.inside(to);
    let mut args = vec!["upgrade", "--to", &p, "--yes"];
    if retry {
        args.push("--retry");
    }
    let out = s.helper(&args, &[("STALWART_UPGRADE_TEST_KILL_AT", kill_at)]);
    assert!(
        out.status.code().is_none(),
        "not killed at {kill_at}: {}",
        text(&out)
    );
    let path = s.ct.path(JOURNAL);
    let bytes = std::fs::read(&path).unwrap();
    let body = &bytes[..bytes.len() - 1];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last: serde_json::Value = serde_json::from_slice(&bytes[start..]).unwrap();
    let keep = (bytes.len() - start) / 2;
    std::fs::write(&path, &bytes[..start + keep]).unwrap();
    eprintln!(
        "{kill_at}: tore the last record ({}) to {keep} of {} bytes",
        last["rec"],
        bytes.len() - start
    );
    // Unfinished, not broken: status says so (8), it does not fail (1). A torn begin record
    // is no transaction yet: nothing was changed.
    let st = s.helper(&["status"], &[]);
    if kill_at == "begin:done" {
        assert_eq!(code(&st), 0, "{kill_at}: {}", text(&st));
    } else {
        assert_eq!(code(&st), 8, "{kill_at}: {}", text(&st));
        assert!(text(&st).contains("is unfinished"), "{}", text(&st));
    }
    keep
}

/// `recover` ends the transaction (twice: the second has nothing to do); returns the records of
/// the journal it archived, which must read whole.
fn recover(s: &Scenario, kill_at: &str, torn: usize) -> Vec<Record> {
    let before: Vec<_> = history_files(s);
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{kill_at}: {}", text(&rec));
    let again = s.helper(&["recover"], &[]);
    assert!(
        code(&again) == 0 && text(&again).contains("no unfinished transaction"),
        "{kill_at}: {}",
        text(&again)
    );
    assert!(
        !s.ct.path(JOURNAL).exists(),
        "{kill_at}: journal still open"
    );
    let new: Vec<_> = history_files(s)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(new.len(), 1, "{kill_at}: archived {new:?}");
    let bytes = std::fs::read(&new[0]).unwrap();
    let recs = parse(&new[0], &bytes)
        .unwrap_or_else(|e| panic!("{kill_at}: the archived journal is damaged: {e}"));
    let cut = recs.iter().find_map(|r| match r {
        Record::Cut { bytes, .. } => Some(*bytes),
        _ => None,
    });
    assert_eq!(
        cut,
        Some(torn as u64),
        "{kill_at}: no cut record in {recs:?}"
    );
    recs
}

fn history_files(s: &Scenario) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(s.ct.path(HISTORY))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

fn ending(recs: &[Record]) -> Option<Ending> {
    recs.iter().rev().find_map(|r| match r {
        Record::End { ending, .. } => Some(*ending),
        _ => None,
    })
}

/// `history --json` works and lists `n` transactions; its stderr (the warnings).
fn history_lists(s: &Scenario, n: usize) -> (serde_json::Value, String) {
    let out = s.helper(&["history", "--json"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history json");
    assert_eq!(h.as_array().map(Vec::len), Some(n), "{h}");
    (h, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A patch upgrade: torn begin, torn step started (stop), torn step done (health: undone, since
/// the gate's record is not there); a damaged journal from the old helper carried into history;
/// then a new upgrade commits.
#[test]
fn torn_begin_step_started_and_health_done_then_everything_works() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let before = s.digest();
    let to = release("0.15.6", Fault::None, 0);

    // begin: nothing was changed; recover just removes the journal.
    killed_and_torn(&s, &to, "begin:done", false);
    let rec = s.helper(&["recover"], &[]);
    assert_eq!(code(&rec), 0, "{}", text(&rec));
    assert!(!s.ct.path(JOURNAL).exists());
    assert_eq!(s.status_code(), 0);
    history_lists(&s, 0);

    // step started, step done: undone, the old version on its data.
    let mut n = 0;
    for kill_at in ["stop:started", "health:done"] {
        let torn = killed_and_torn(&s, &to, kill_at, false);
        let recs = recover(&s, kill_at, torn);
        assert_eq!(ending(&recs), Some(Ending::RolledBack), "{kill_at}");
        s.serves("0.15.5", &before);
        n += 1;
        let st = s.helper(&["status"], &[]);
        assert_eq!(code(&st), 0, "{kill_at}: {}", text(&st));
        let (h, warnings) = history_lists(&s, n);
        assert!(warnings.is_empty(), "{kill_at}: {warnings}");
        assert_eq!(h[n - 1]["ending"], "rolled_back", "{h}");
    }

    // What the helper before format 1 archived after such a recovery: a record glued onto the
    // torn one, in the middle of the file.
    let glued = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/journal/err-glued-onto-torn.jsonl"),
    )
    .unwrap();
    let planted = format!("{HISTORY}/20261128T120000-1.jsonl");
    let aside = format!("{HISTORY}/damaged/20261128T120000-1.jsonl");
    s.ct.write_file(&planted, &glued).unwrap();
    let st = s.helper(&["status"], &[]);
    assert_eq!(code(&st), 0, "{}", text(&st));
    let said = text(&st);
    assert!(
        said.contains(&format!("journal {planted} is damaged at line 5"))
            && said.contains(&format!("moved to {aside}")),
        "{said}"
    );
    assert!(!s.ct.path(&planted).exists() && s.ct.path(&aside).is_file());
    let (h, warnings) = history_lists(&s, n + 1);
    assert!(warnings.contains(&aside), "{warnings}");
    let old = h
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["txid"] == "20261128T120000-1")
        .unwrap_or_else(|| panic!("the damaged journal is not listed: {h}"));
    assert_eq!(old["damaged"], aside.as_str());
    assert_eq!(old["ending"], "rolled_back");

    // And a new upgrade is not blocked by any of it.
    let out = s.upgrade(&to, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.serves("0.15.6", &before);
    let (h, _) = history_lists(&s, n + 2);
    let last = h.as_array().unwrap().last().unwrap();
    assert_eq!(last["ending"], "committed", "{h}");
    assert_eq!(last["to"], "0.15.6");
    // Numbered after the damaged one too.
    assert_eq!(last["seq"], 4, "{h}");
    assert_eq!(s.status_code(), 0);
}

/// A minor upgrade to a release that never gets ready, so the kill lands in its rollback: torn
/// undo done (the data restore's), then torn abort; then a good release upgrades.
#[test]
fn torn_undo_done_and_abort_then_everything_works() {
    let s = Scenario::with(
        &release("0.14.3", Fault::None, 0),
        testbed::stalwart::ServerLayout::rocksdb(),
        &DEFAULT_HELPER_CONFIG.replace("ready_secs = 20", "ready_secs = 3"),
    );
    s.allow("0.15");
    let before = s.digest();
    let broken = release("0.15.5", Fault::NeverReady, 0);
    let mut n = 0;
    for (kill_at, retry) in [("undo-data:done", false), ("abort:done", true)] {
        let torn = killed_and_torn(&s, &broken, kill_at, retry);
        let recs = recover(&s, kill_at, torn);
        assert_eq!(ending(&recs), Some(Ending::RolledBack), "{kill_at}");
        s.serves("0.14.3", &before);
        n += 1;
        let (h, warnings) = history_lists(&s, n);
        assert!(warnings.is_empty(), "{kill_at}: {warnings}");
        assert_eq!(h[n - 1]["ending"], "rolled_back", "{h}");
        // The release failed (the rollback had begun): status says so, it does not fail.
        let st = s.helper(&["status"], &[]);
        assert_eq!(code(&st), 8, "{kill_at}: {}", text(&st));
        assert!(
            text(&st).contains("failed and was rolled back"),
            "{kill_at}: {}",
            text(&st)
        );
    }
    let good = release("0.15.5", Fault::None, 0);
    let p = s.inside(&good);
    let out = s.helper(&["upgrade", "--to", &p, "--yes", "--retry"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ready();
    assert_eq!(s.binary_version(), "0.15.5");
    assert_eq!(s.digest()["records"], before["records"]);
    let (h, warnings) = history_lists(&s, n + 1);
    assert!(warnings.is_empty(), "{warnings}");
    assert_eq!(h[n]["ending"], "committed", "{h}");
    assert_eq!(s.status_code(), 0);

    // An open journal damaged in the middle is real damage: recover and upgrade refuse, status
    // says so (8), and the instructions work as written.
    let glued = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/journal/err-glued-onto-torn.jsonl"),
    )
    .unwrap();
    s.ct.write_file(JOURNAL, &glued).unwrap();
    let mv = format!("mkdir -p {HISTORY}/damaged && mv {JOURNAL} {HISTORY}/damaged/");
    let st = s.helper(&["status"], &[]);
    assert_eq!(code(&st), 8, "{}", text(&st));
    assert!(text(&st).contains(&mv), "{}", text(&st));
    for out in [s.helper(&["recover"], &[]), s.upgrade(&good, &[])] {
        assert_ne!(code(&out), 0, "{}", text(&out));
        let said = text(&out);
        assert!(
            said.contains(&format!("journal {JOURNAL} of an unfinished transaction (upgrade 0.14.3 -> 0.15.5 of stalwart.service) is damaged at line 5"))
                && said.contains(&mv),
            "{said}"
        );
    }
    assert_eq!(std::fs::read(s.ct.path(JOURNAL)).unwrap(), glued, "changed");
    let out = s.ct.sh(&mv);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.status_code(), 0);
    let (h, warnings) = history_lists(&s, n + 2);
    let aside = format!("{HISTORY}/damaged/journal.jsonl");
    assert!(warnings.contains(&aside), "{warnings}");
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|e| e["damaged"] == aside.as_str()),
        "{h}"
    );
}
