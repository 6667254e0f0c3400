//! The torn-journal bug of #25 at the library level: a helper killed (or a machine losing power)
//! while writing a record leaves a torn last line. Before journal format 1, `recover` appended
//! straight onto it, so the archived journal was damaged in the middle and `status`, `history`
//! and every later `upgrade` failed on it for good.
//!
//! Here each record type is torn at several lengths, and the journal then goes the way `recover`
//! takes it (`Journal::read_open`, `Journal::open`, appends, archive into history): the whole
//! file must parse, hold a cut record saying what was cut, and list in history without damage.
//! Also a write cut short by the file-size limit (what a full disk does): the failed append is
//! cut back, so the undo's records that follow stay on lines of their own.

use stalwart_upgrade::engine::history;
use stalwart_upgrade::engine::journal::{
    parse, Begin, Ending, Journal, JournalError, Noted, Phase, Record, Step, Summary, TxKind, Undo,
};
use stalwart_upgrade::server::version::{Class, Version};
use stalwart_upgrade::store::state::StateDir;
use std::path::Path;

fn begin(txid: &str) -> Begin {
    Begin {
        txid: txid.into(),
        seq: 1,
        kind: TxKind::Upgrade,
        unit: "stalwart.service".into(),
        from: Version::parse_binary_output("0.14.3").unwrap(),
        to: Version::parse_binary_output("0.15.5").unwrap(),
        class: Class::Minor,
        was_active: true,
        bin_dir: "/opt/stalwart/bin".into(),
        staged_dir: "/opt/stalwart/bin.new".into(),
        old_sha256: "ab".repeat(32),
        new_sha256: "cd".repeat(32),
        restore_data: true,
        restore_from: None,
        server_config: "/opt/stalwart/etc/config.toml".into(),
        listeners: vec![],
    }
}

/// A transaction's journal up to and including the record of type `last` (the one a kill
/// tears); returns the number of records before it.
fn write_until(j: &mut Journal, last: &str) -> usize {
    type Write<'a> = (&'a str, Box<dyn FnMut(&mut Journal)>);
    let script: Vec<Write> = vec![
        (
            "step started",
            Box::new(|j| j.step(Step::Stop, Phase::Started, None).unwrap()),
        ),
        (
            "step done",
            Box::new(|j| {
                j.step(Step::Stop, Phase::Done, None).unwrap();
                j.step(Step::Snapshot, Phase::Started, None).unwrap();
                j.step(
                    Step::Snapshot,
                    Phase::Done,
                    Some(
                        Noted::Snapshot {
                            id: "7-snap".into(),
                        }
                        .into(),
                    ),
                )
                .unwrap();
            }),
        ),
        (
            "abort",
            Box::new(|j| {
                j.append(Record::Abort {
                    at: 10,
                    reason: "0.15.5 at step start: not ready".into(),
                })
                .unwrap()
            }),
        ),
        (
            "undo started",
            Box::new(|j| j.undo(Undo::Data, Phase::Started, None).unwrap()),
        ),
        (
            "undo done",
            Box::new(|j| {
                j.undo(
                    Undo::Data,
                    Phase::Done,
                    Some(
                        Noted::Restored {
                            snapshot: "7-snap".into(),
                        }
                        .into(),
                    ),
                )
                .unwrap()
            }),
        ),
        (
            "end",
            Box::new(|j| {
                j.append(Record::End {
                    at: 20,
                    mono: None,
                    ending: Ending::RolledBack,
                    message: "rolled back".into(),
                    warnings: Vec::new(),
                })
                .unwrap()
            }),
        ),
    ];
    for (rec, mut f) in script {
        f(j);
        if rec == last {
            return Journal::read(j.path()).unwrap().unwrap().len() - 1;
        }
    }
    panic!("no record type {last}");
}

/// What `transaction::recover_locked` does with the journal before acting: read it as the open
/// journal, reopen it (cutting a torn tail), then append the undo's or commit's records.
fn recover_appends(p: &Path, aside: &Path) -> Option<u64> {
    let read = Journal::read_open(p, aside).unwrap().unwrap();
    let (mut j, cut) = Journal::open_cutting(p).unwrap();
    let s = Summary::of(&read);
    if s.end.is_none() {
        if s.abort.is_none() {
            j.append(Record::Abort {
                at: 30,
                reason: "the helper was interrupted".into(),
            })
            .unwrap();
        }
        j.undo(Undo::Start, Phase::Started, None).unwrap();
        j.undo(Undo::Start, Phase::Done, None).unwrap();
        j.append(Record::End {
            at: 40,
            mono: None,
            ending: Ending::RolledBack,
            message: "rolled back after the interruption".into(),
            warnings: Vec::new(),
        })
        .unwrap();
    }
    cut.map(|c| c.bytes)
}

const TYPES: &[&str] = &[
    "step started",
    "step done",
    "abort",
    "undo started",
    "undo done",
    "end",
];

#[test]
fn a_torn_last_record_of_every_type_is_cut_and_the_journal_stays_whole() {
    let mut cases = 0;
    for last in TYPES {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(&t.path().join("state")).unwrap();
        let p = state.journal_path();
        let mut j = Journal::create(&p, begin("1-tx")).unwrap();
        let kept = write_until(&mut j, last);
        drop(j);
        let whole = std::fs::read(&p).unwrap();
        let all = parse(&p, &whole).unwrap();
        let last_len = whole.len()
            - whole[..whole.len() - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        let prefix = &whole[..whole.len() - last_len];
        assert_eq!(parse(&p, prefix).unwrap().len(), kept, "{last}");
        assert_eq!(all.len(), kept + 1, "{last}");
        // Torn after 1 byte, half-way, all but its newline; and zeros where a power loss left
        // the data unwritten.
        let last_rec = &whole[prefix.len()..];
        let mut tears: Vec<Vec<u8>> = [1, last_len / 2, last_len - 1]
            .iter()
            .map(|&k| last_rec[..k].to_vec())
            .collect();
        tears.push(vec![0u8; last_len]);
        for tail in tears {
            let mut torn = prefix.to_vec();
            torn.extend_from_slice(&tail);
            std::fs::write(&p, &torn).unwrap();
            // Reading already drops it; recovery must see exactly the records before it.
            let read = Journal::read_open(&p, &state.damaged_dir())
                .unwrap()
                .unwrap();
            assert_eq!(read, all[..kept], "{last}, {} bytes torn", tail.len());

            let cut = recover_appends(&p, &state.damaged_dir());
            assert_eq!(cut, Some(tail.len() as u64), "{last}");
            let recs = parse(&p, &std::fs::read(&p).unwrap()).unwrap_or_else(|e| {
                panic!(
                    "{last}, {} bytes torn: the journal is damaged: {e}",
                    tail.len()
                )
            });
            assert_eq!(recs[..kept], all[..kept], "{last}");
            match &recs[kept] {
                Record::Cut { bytes, tail: t, .. } => {
                    assert_eq!(*bytes, tail.len() as u64);
                    assert_eq!(t.as_str(), String::from_utf8_lossy(&tail));
                }
                r => panic!("{last}: no cut record after the whole records but {r:?}"),
            }
            let sum = Summary::of(&recs);
            assert_eq!(sum.end.as_ref().map(|e| e.0), Some(Ending::RolledBack));

            // Closed into history: `status`, `history` and the next transaction's sequence
            // number read it without a warning.
            let archived = state.history_dir().join("1-tx.jsonl");
            std::fs::rename(&p, &archived).unwrap();
            let l = history::listing(&state).unwrap();
            assert!(l.warnings.is_empty(), "{last}: {:?}", l.warnings);
            assert_eq!(l.entries.len(), 1);
            assert_eq!(l.entries[0].ending, Some(Ending::RolledBack));
            assert_eq!(history::next_seq(&state).unwrap(), 2);
            std::fs::remove_file(&archived).unwrap();
            cases += 1;
        }
    }
    assert_eq!(cases, TYPES.len() * 4);
}

/// A torn begin record: nothing was changed; `recover` removes the journal (transaction.rs), and
/// reopening it to append is refused (a cut record cannot be the first line).
#[test]
fn a_torn_begin_record_is_nothing_to_recover() {
    let t = tempfile::tempdir().unwrap();
    let state = StateDir::open(&t.path().join("state")).unwrap();
    let p = state.journal_path();
    drop(Journal::create(&p, begin("1-tx")).unwrap());
    let whole = std::fs::read(&p).unwrap();
    for k in [1, whole.len() / 2, whole.len() - 1] {
        std::fs::write(&p, &whole[..k]).unwrap();
        let read = Journal::read_open(&p, &state.damaged_dir())
            .unwrap()
            .unwrap();
        assert!(read.is_empty());
        assert!(Summary::of(&read).begin.is_none());
        let e = Journal::open(&p).err().unwrap();
        assert!(matches!(e, JournalError::Corrupt { line: 1, .. }), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), &whole[..k], "nothing written");
    }
}

/// A recovery killed while writing its own first record, after it had cut a torn tail: the cut
/// record stays, the second torn tail is cut too.
#[test]
fn a_torn_tail_after_a_cut_is_cut_again() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("journal.jsonl");
    let mut j = Journal::create(&p, begin("1-tx")).unwrap();
    j.step(Step::Stop, Phase::Started, None).unwrap();
    drop(j);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(br#"{"rec":"step","at":5,"step":"stop","pha"#);
    std::fs::write(&p, &bytes).unwrap();
    drop(Journal::open(&p).unwrap());
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(br#"{"rec":"abort","at":6,"rea"#);
    std::fs::write(&p, &bytes).unwrap();
    recover_appends(&p, t.path());
    let recs = parse(&p, &std::fs::read(&p).unwrap()).unwrap();
    let cuts: Vec<u64> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Cut { bytes, .. } => Some(*bytes),
            _ => None,
        })
        .collect();
    assert_eq!(cuts, [39, 26]);
}

const CHILD_ENV: &str = "JOURNAL_TORN_SHORT_WRITE_CHILD";

/// A record whose write is cut short (here by RLIMIT_FSIZE: EFBIG after a partial write, as
/// ENOSPC after a partial write on a full disk) is cut back before `append` returns its error;
/// the next record (the undo's, in the engine) starts on its own line. Run in a child process:
/// the limit is per process.
#[test]
fn a_write_cut_short_is_cut_back_before_the_next_record() {
    if let Ok(p) = std::env::var(CHILD_ENV) {
        short_write_child(Path::new(&p));
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("journal.jsonl");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_write_cut_short_is_cut_back_before_the_next_record",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, &p)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "the child ran no test: {log}");
    let recs = parse(&p, &std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert!(matches!(
        recs[1],
        Record::Step {
            step: Step::Stop,
            phase: Phase::Started,
            ..
        }
    ));
    assert!(matches!(recs[2], Record::Abort { .. }));
}

fn short_write_child(p: &Path) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use nix::sys::signal::{signal, SigHandler, Signal};
    let mut j = Journal::create(p, begin("1-tx")).unwrap();
    j.step(Step::Stop, Phase::Started, None).unwrap();
    let whole = std::fs::read(p).unwrap();
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, whole.len() as u64 + 20, hard).unwrap();
    let e = j
        .step(
            Step::Stop,
            Phase::Done,
            Some(stalwart_upgrade::engine::journal::Note::Text(
                "x".repeat(200),
            )),
        )
        .unwrap_err();
    assert!(matches!(e, JournalError::Io { .. }), "{e}");
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    assert_eq!(
        std::fs::read(p).unwrap(),
        whole,
        "the partial record was cut back"
    );
    j.append(Record::Abort {
        at: 1,
        reason: "the journal could not be written".into(),
    })
    .unwrap();
}
