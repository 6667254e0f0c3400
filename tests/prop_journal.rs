//! Property tests (fuzzing on stable) of the journal reader `journal::parse`: on arbitrary bytes
//! and on damaged copies of a real journal (written by `Journal::create` + `step`/`undo`/`append`)
//! it returns Ok or `JournalError::Corrupt` (or `NewerFormat` for a begin record naming a newer
//! format), never panics; cutting a journal at any byte gives a prefix of its records;
//! `Summary::of` and its accessors never panic on what parse returns.
//!
//! And the writer over torn tails (#25): a journal whose last record is torn anywhere (or
//! followed by garbage without a newline) reopens with the tail cut off and recorded, and what
//! is appended then reads back whole; `journal::salvage` (history's reader of damaged journals)
//! never panics, agrees with `parse` on undamaged input, and finds every record of a journal in
//! which a record was glued onto a torn one.

mod prop_common;

use prop_common::{check, corpus, expect_of, Expect};
use proptest::prelude::*;
use stalwart_upgrade::engine::journal::{
    parse, salvage, Begin, Ending, Journal, JournalError, Note, Phase, Record, Step, Summary,
    TxKind, Undo,
};
use stalwart_upgrade::os::clock::MonoStamp;
use stalwart_upgrade::server::version::{Class, Version};
use std::path::Path;

const JPATH: &str = "/var/lib/stalwart-upgrade/journal";

fn begin() -> Begin {
    Begin {
        txid: "20261128T120000-1".into(),
        seq: 0,
        kind: TxKind::Upgrade,
        unit: "stalwart.service".into(),
        from: Version::parse_binary_output("0.15.5").unwrap(),
        to: Version::parse_binary_output("0.16.0-rc1").unwrap(),
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

#[derive(Debug, Clone)]
enum Op {
    Step(Step, Phase, Option<String>),
    Undo(Undo, Phase, Option<String>),
    Abort(String),
    End(Ending, String),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "ready after [0-9]{1,20} ms",
        (0u64..=u64::MAX).prop_map(|ms| format!("ready after {ms} ms")),
        Just("line\nbreak\r\n\"quoted\" \\ \u{0}".to_string()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let step = proptest::sample::select(Step::ALL.to_vec());
    let undo = proptest::sample::select(vec![
        Undo::Stop,
        Undo::Binary,
        Undo::Data,
        Undo::Cleanup,
        Undo::Config,
        Undo::Start,
    ]);
    let phase = prop_oneof![Just(Phase::Started), Just(Phase::Done)];
    let ending =
        proptest::sample::select(vec![Ending::Committed, Ending::RolledBack, Ending::Failed]);
    prop_oneof![
        4 => (step, phase.clone(), proptest::option::of(text())).prop_map(|(s, p, n)| Op::Step(s, p, n)),
        2 => (undo, phase, proptest::option::of(text())).prop_map(|(u, p, n)| Op::Undo(u, p, n)),
        1 => text().prop_map(Op::Abort),
        1 => (ending, text()).prop_map(|(e, m)| Op::End(e, m)),
    ]
}

/// A journal written the way the engine writes it; returns its bytes.
fn write_journal(ops: &[Op]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("journal");
    let mut j = Journal::create(&p, begin()).unwrap();
    append_ops(&mut j, ops);
    std::fs::read(&p).unwrap()
}

fn append_ops(j: &mut Journal, ops: &[Op]) {
    for op in ops {
        match op.clone() {
            Op::Step(s, ph, n) => j.step(s, ph, n.map(Note::Text)).unwrap(),
            Op::Undo(u, ph, n) => j.undo(u, ph, n.map(Note::Text)).unwrap(),
            Op::Abort(reason) => j.append(Record::Abort { at: 1, reason }).unwrap(),
            Op::End(ending, message) => j
                .append(Record::End {
                    at: 2,
                    mono: None,
                    ending,
                    message,
                    warnings: Vec::new(),
                })
                .unwrap(),
        }
    }
}

/// parse's contract on any input; exercises Summary on whatever it accepted.
fn parse_contract(bytes: &[u8]) -> Result<Option<Vec<Record>>, TestCaseError> {
    match parse(Path::new(JPATH), bytes) {
        Ok(recs) => {
            if let Some(first) = recs.first() {
                prop_assert!(
                    matches!(first, Record::Begin { .. }),
                    "first record is not a begin"
                );
            }
            prop_assert!(
                recs.iter()
                    .skip(1)
                    .all(|r| !matches!(r, Record::Begin { .. })),
                "a second begin record was accepted"
            );
            summarize(&recs);
            Ok(Some(recs))
        }
        Err(JournalError::Corrupt { line, path, .. }) => {
            prop_assert!(line >= 1, "corrupt line numbers start at 1");
            prop_assert_eq!(path, Path::new(JPATH));
            Ok(None)
        }
        Err(JournalError::NewerFormat {
            path,
            format,
            known,
        }) => {
            prop_assert!(
                format > known,
                "format {format} refused as newer than {known}"
            );
            prop_assert_eq!(path, Path::new(JPATH));
            Ok(None)
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "parse gave a non-Corrupt error: {e}"
        ))),
    }
}

fn summarize(recs: &[Record]) {
    let s = Summary::of(recs);
    let _ = s.downtime_ms();
    let _ = s.last_started();
    for step in Step::ALL {
        let _ = (s.started(step), s.done(step), s.note(step));
    }
}

/// Number of complete ('\n'-terminated) lines.
fn complete_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

#[test]
fn valid_journal_reads_back_and_every_cut_is_a_prefix() {
    check(
        "journal/cut",
        96,
        (
            proptest::collection::vec(op(), 0..12),
            any::<proptest::sample::Index>(),
        ),
        |(ops, cut)| {
            let bytes = write_journal(&ops);
            let all = parse_contract(&bytes)?.expect("a written journal parses");
            prop_assert_eq!(all.len(), ops.len() + 1);
            // One random cut, and every cut at a line boundary +-1.
            let mut cuts = vec![cut.index(bytes.len() + 1)];
            for (i, &c) in bytes.iter().enumerate() {
                if c == b'\n' {
                    cuts.extend([i, i + 1, (i + 2).min(bytes.len())]);
                }
            }
            cuts.push(0);
            for k in cuts {
                let got = parse_contract(&bytes[..k])?
                    .ok_or_else(|| TestCaseError::fail(format!("cut at {k} refused")))?;
                let n = complete_lines(&bytes[..k]);
                prop_assert_eq!(&got[..], &all[..n], "cut at {}", k);
            }
            Ok(())
        },
    );
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(proptest::sample::Index, u8),
    Delete(proptest::sample::Index, usize),
    Insert(proptest::sample::Index, Vec<u8>),
    DuplicateLine(proptest::sample::Index),
    SwapLines(proptest::sample::Index, proptest::sample::Index),
    DropLine(proptest::sample::Index),
    Truncate(proptest::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    use proptest::sample::Index;
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Damage::Delete(i, n)),
        (
            any::<Index>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<Index>().prop_map(Damage::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::SwapLines(a, b)),
        any::<Index>().prop_map(Damage::DropLine),
        any::<Index>().prop_map(Damage::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    let mut lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    match d {
        Damage::Flip(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= b.max(&1);
            return;
        }
        Damage::Delete(i, n) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
            return;
        }
        Damage::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
            return;
        }
        Damage::Truncate(i) => {
            bytes.truncate(i.index(bytes.len() + 1));
            return;
        }
        Damage::DuplicateLine(i) if !lines.is_empty() => {
            let i = i.index(lines.len());
            lines.insert(i, lines[i].clone());
        }
        Damage::SwapLines(a, b) if !lines.is_empty() => {
            let n = lines.len();
            lines.swap(a.index(n), b.index(n));
        }
        Damage::DropLine(i) if !lines.is_empty() => {
            lines.remove(i.index(lines.len()));
        }
        _ => {}
    }
    *bytes = lines.concat();
}

#[test]
fn damaged_journal_is_ok_or_corrupt() {
    check(
        "journal/damage",
        256,
        (
            proptest::collection::vec(op(), 0..8),
            proptest::collection::vec(damage(), 1..4),
        ),
        |(ops, damages)| {
            let original = write_journal(&ops);
            let all = parse(Path::new(JPATH), &original).unwrap();
            let mut bytes = original.clone();
            for d in &damages {
                apply(&mut bytes, d);
            }
            let parsed = parse_contract(&bytes)?;
            if let Some(got) = &parsed {
                // Whatever is accepted is made of records; when the damage only removed a tail,
                // it is a prefix of the original.
                if original.starts_with(&bytes) {
                    prop_assert_eq!(&got[..], &all[..complete_lines(&bytes)]);
                }
            }
            salvage_contract(&bytes, parsed.as_deref())
        },
    );
}

/// `salvage`'s contract on any input: Ok (or NewerFormat), at most one begin and first; on what
/// `parse` accepts (`parsed`), the same records and no damage.
fn salvage_contract(bytes: &[u8], parsed: Option<&[Record]>) -> Result<(), TestCaseError> {
    match salvage(Path::new(JPATH), bytes) {
        Ok(s) => {
            let begins = s
                .records
                .iter()
                .filter(|r| matches!(r, Record::Begin { .. }))
                .count();
            prop_assert!(begins <= 1, "{begins} begin records salvaged");
            if let Some(first) = s.records.first() {
                prop_assert!(
                    matches!(first, Record::Begin { .. }),
                    "salvage starts without a begin"
                );
            }
            summarize(&s.records);
            if let Some(p) = parsed {
                prop_assert_eq!(&s.records[..], p);
                prop_assert!(
                    s.damaged.is_empty(),
                    "damage in an accepted journal: {:?}",
                    s.damaged
                );
            }
            Ok(())
        }
        Err(JournalError::NewerFormat { .. }) => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!("salvage failed: {e}"))),
    }
}

/// Where a torn record ends: after `Keep` bytes of it, or followed by bytes of a write that never
/// finished (zeros after a power loss, anything) with no newline.
#[derive(Debug, Clone)]
enum Tear {
    Keep(proptest::sample::Index),
    Garbage(Vec<u8>),
}

fn tear() -> impl Strategy<Value = Tear> {
    prop_oneof![
        3 => any::<proptest::sample::Index>().prop_map(Tear::Keep),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..300)
            .prop_map(Tear::Garbage),
        1 => (1usize..5000).prop_map(|n| Tear::Garbage(vec![0; n])),
    ]
}

/// The bytes of a journal whose last record is torn, the records before it, and the torn tail.
fn torn(bytes: &[u8], t: &Tear) -> (Vec<u8>, Vec<u8>) {
    let body = &bytes[..bytes.len() - 1];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    match t {
        // Anything from its first byte to all but its newline.
        Tear::Keep(i) => {
            let k = 1 + i.index(bytes.len() - start - 1);
            (bytes[..start].to_vec(), bytes[start..start + k].to_vec())
        }
        Tear::Garbage(g) => (bytes.to_vec(), g.clone()),
    }
}

#[test]
fn a_torn_tail_is_cut_on_reopening_and_what_follows_reads_whole() {
    check(
        "journal/torn",
        128,
        (
            proptest::collection::vec(op(), 0..8),
            tear(),
            proptest::collection::vec(op(), 0..4),
        ),
        |(ops, t, more)| {
            let written = write_journal(&ops);
            let all = parse(Path::new(JPATH), &written).unwrap();
            let (whole, tail) = torn(&written, &t);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("journal");
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&tail);
            std::fs::write(&p, &bytes).unwrap();
            let kept = complete_lines(&whole);
            let read = parse_contract(&bytes)?.expect("a torn journal reads");
            prop_assert_eq!(&read[..], &all[..kept]);
            if kept == 0 {
                // A torn begin record: recover removes the journal; it is never appended to.
                prop_assert!(Journal::open(&p).is_err(), "a torn begin was reopened");
                prop_assert_eq!(std::fs::read(&p).unwrap(), bytes);
                return Ok(());
            }
            let (mut j, cut) = Journal::open_cutting(&p).unwrap();
            prop_assert_eq!(cut.map(|c| c.bytes), Some(tail.len() as u64));
            append_ops(&mut j, &more);
            drop(j);
            let after = std::fs::read(&p).unwrap();
            prop_assert!(after.starts_with(&whole), "a whole record was changed");
            let got = parse_contract(&after)?.expect("the reopened journal reads whole");
            prop_assert_eq!(got.len(), kept + 1 + more.len());
            prop_assert_eq!(&got[..kept], &all[..kept]);
            match &got[kept] {
                Record::Cut {
                    bytes: n,
                    tail: text,
                    ..
                } => {
                    prop_assert_eq!(*n, tail.len() as u64);
                    let shown = String::from_utf8_lossy(&tail[..tail.len().min(256)]);
                    prop_assert_eq!(text.as_str(), shown.as_ref());
                }
                r => return Err(TestCaseError::fail(format!("no cut record: {r:?}"))),
            }
            // The cut announces nothing.
            let mut without: Vec<Record> = got.clone();
            without.remove(kept);
            let (a, b) = (Summary::of(&got), Summary::of(&without));
            prop_assert_eq!(
                (a.started, a.done, a.undone, a.end, a.abort),
                (b.started, b.done, b.undone, b.end, b.abort)
            );
            salvage_contract(&after, Some(&got))
        },
    );
}

/// What helpers before journal format 1 left: a record appended onto a torn one. `parse`
/// refuses it (damage in the middle); `salvage` reads every record but the torn one.
#[test]
fn a_record_glued_onto_a_torn_one_is_salvaged() {
    check(
        "journal/glued",
        128,
        (
            proptest::collection::vec(op(), 2..8),
            any::<proptest::sample::Index>(),
            any::<proptest::sample::Index>(),
        ),
        |(ops, which, keep)| {
            let bytes = write_journal(&ops);
            let all = parse(Path::new(JPATH), &bytes).unwrap();
            let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
            // A record after the begin, with a record after it.
            let i = 1 + which.index(lines.len() - 2);
            let k = 1 + keep.index(lines[i].len() - 1);
            let mut glued = lines[..i].concat();
            glued.extend_from_slice(&lines[i][..k]);
            glued.extend(lines[i + 1..].concat());
            prop_assert!(
                parse_contract(&glued)?.is_none(),
                "a glued line was accepted"
            );
            let s = salvage(Path::new(JPATH), &glued).unwrap();
            let mut want = all.clone();
            want.remove(i);
            prop_assert_eq!(s.records, want);
            prop_assert!(s.damaged.is_empty(), "{:?}", s.damaged);
            Ok(())
        },
    );
}

#[test]
fn arbitrary_bytes_are_ok_or_corrupt() {
    check(
        "journal/bytes",
        512,
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            // JSON-looking lines with the record tags.
            proptest::collection::vec(
                prop_oneof![
                    Just(b"{\"rec\":\"begin\"".to_vec()),
                    Just(
                        b"{\"rec\":\"step\",\"at\":1,\"step\":\"stop\",\"phase\":\"done\"}"
                            .to_vec()
                    ),
                    Just(
                        b"{\"rec\":\"end\",\"at\":1,\"ending\":\"failed\",\"message\":\"".to_vec()
                    ),
                    Just(b"\n".to_vec()),
                    Just(b"}".to_vec()),
                    Just(b"\"".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..24
            )
            .prop_map(|v| v.concat()),
        ],
        |bytes| {
            let parsed = parse_contract(&bytes)?;
            salvage_contract(&bytes, parsed.as_deref())
        },
    );
}

/// Monotonic stamps as a damaged journal may hold them: well-formed (same or another boot, any
/// number), anything at all (which reads as no stamp), or none.
fn mono() -> impl Strategy<Value = Option<MonoStamp>> {
    prop_oneof![
        (
            proptest::sample::select(vec!["aaaa1111", "bbbb2222"]),
            any::<u64>()
        )
            .prop_map(|(b, ms)| MonoStamp::parse(&format!("{b}:{ms}"))),
        text().prop_map(|t| MonoStamp::parse(&t)),
        Just(None),
    ]
}

/// Records a hostile or damaged-but-parseable journal can hold: any timestamps, any notes.
#[test]
fn summary_of_any_records_never_panics() {
    let rec = prop_oneof![
        (
            any::<u64>(),
            proptest::sample::select(Step::ALL.to_vec()),
            any::<bool>(),
            proptest::option::of(text()),
            mono(),
        )
            .prop_map(|(at, step, done, note, mono)| Record::Step {
                at,
                mono,
                step,
                phase: if done { Phase::Done } else { Phase::Started },
                note: note.map(Note::Text),
            }),
        (any::<u64>(), text()).prop_map(|(at, reason)| Record::Abort { at, reason }),
        any::<u64>().prop_map(|at| Record::Begin {
            at,
            mono: None,
            format: 1,
            begin: Box::new(begin())
        }),
    ];
    // A timed transaction (what downtime_ms reads) with hostile timestamps and health notes.
    let at = || prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64), 0u64..10];
    let timed = (
        at(),
        at(),
        at(),
        at(),
        text(),
        proptest::collection::vec(mono(), 4),
    )
        .prop_map(|(a, b, c, d, note, monos)| {
            let step = |at, i: usize, step, phase, note| Record::Step {
                at,
                mono: monos[i].clone(),
                step,
                phase,
                note,
            };
            vec![
                Record::Begin {
                    at: a,
                    mono: None,
                    format: 1,
                    begin: Box::new(begin()),
                },
                step(a, 0, Step::Stop, Phase::Started, None),
                step(b, 1, Step::Stop, Phase::Done, None),
                step(c, 2, Step::Health, Phase::Started, None),
                // A journal from before typed notes: the ready time as text.
                step(d, 3, Step::Health, Phase::Done, Some(Note::Text(note))),
            ]
        });
    check(
        "journal/summary",
        512,
        prop_oneof![proptest::collection::vec(rec, 0..16), timed],
        |recs| {
            summarize(&recs);
            // And through the reader: the same records as journal lines.
            let mut bytes = Vec::new();
            for r in &recs {
                bytes.extend(serde_json::to_vec(r).unwrap());
                bytes.push(b'\n');
            }
            parse_contract(&bytes).map(|_| ())
        },
    );
}

#[test]
fn corpus_regressions() {
    for p in corpus("journal") {
        let bytes = std::fs::read(&p).unwrap();
        let got = parse_contract(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        match expect_of(&p) {
            Expect::Ok => assert!(got.is_some(), "{} refused", p.display()),
            Expect::Err => assert!(got.is_none(), "{} accepted", p.display()),
            Expect::Any => {}
        }
        salvage_contract(&bytes, got.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// The corpus's journals of #25, beyond accepted or refused: what reads of them.
#[test]
fn corpus_torn_and_glued_journals_read_as_they_should() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/journal");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    // The file a helper before format 1 archived: every record but the torn one salvages, the
    // ending with them.
    let s = salvage(Path::new(JPATH), &read("err-glued-onto-torn.jsonl")).unwrap();
    assert!(s.damaged.is_empty(), "{:?}", s.damaged);
    assert_eq!(s.records.len(), 7);
    let sum = Summary::of(&s.records);
    assert_eq!(sum.end.as_ref().map(|e| e.0), Some(Ending::RolledBack));
    assert!(sum.abort.is_some() && sum.started(Step::Stop));
    // A cut record reads back and is summarised as nothing.
    let recs = parse(Path::new(JPATH), &read("ok-format-1-cut-record.jsonl")).unwrap();
    assert!(matches!(
        &recs[4],
        Record::Cut { bytes: 38, tail, .. } if tail.starts_with(r#"{"rec":"step""#)
    ));
    assert!(matches!(recs[0], Record::Begin { format: 1, .. }));
    let sum = Summary::of(&recs);
    assert_eq!(sum.last_started(), Some(Step::Stop));
    assert_eq!(sum.end.as_ref().map(|e| e.0), Some(Ending::RolledBack));
    // A newer format is refused by name, whatever records follow.
    let e = parse(Path::new(JPATH), &read("err-newer-format.jsonl")).unwrap_err();
    assert!(
        matches!(e, JournalError::NewerFormat { format: 99, .. }),
        "{e}"
    );
    // Torn again after a cut: the cut stays a record, the new torn tail is dropped.
    let recs = parse(Path::new(JPATH), &read("ok-torn-after-cut.jsonl")).unwrap();
    assert_eq!(recs.len(), 3);
    assert!(matches!(recs[2], Record::Cut { bytes: 12, .. }));
}
