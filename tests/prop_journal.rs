//! Property tests (fuzzing on stable) of the journal reader `journal::parse`: on arbitrary bytes
//! and on damaged copies of a real journal (written by `Journal::create` + `step`/`undo`/`append`)
//! it returns Ok or `JournalError::Corrupt`, never panics; cutting a journal at any byte gives a
//! prefix of its records; `Summary::of` and its accessors never panic on what parse returns.

mod prop_common;

use prop_common::{check, corpus, expect_of, Expect};
use proptest::prelude::*;
use stalwart_upgrade::journal::{
    parse, Begin, Ending, Journal, JournalError, Note, Phase, Record, Step, Summary, TxKind, Undo,
};
use stalwart_upgrade::version::{Class, Version};
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
                })
                .unwrap(),
        }
    }
    std::fs::read(&p).unwrap()
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
            if let Some(got) = parse_contract(&bytes)? {
                // Whatever is accepted is made of records; when the damage only removed a tail,
                // it is a prefix of the original.
                if original.starts_with(&bytes) {
                    prop_assert_eq!(&got[..], &all[..complete_lines(&bytes)]);
                }
            }
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
        |bytes| parse_contract(&bytes).map(|_| ()),
    );
}

/// Monotonic stamps as a damaged journal may hold them: well-formed (same or another boot, any
/// number) or anything at all.
fn mono() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            proptest::sample::select(vec!["aaaa1111", "bbbb2222"]),
            any::<u64>()
        )
            .prop_map(|(b, ms)| format!("{b}:{ms}")),
        text(),
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
            proptest::option::of(mono()),
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
        proptest::collection::vec(proptest::option::of(mono()), 4),
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
    }
}
