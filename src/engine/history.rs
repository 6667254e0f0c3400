//! Past transactions: the closed journals under STATE_DIR/history, summarised.
//!
//! A damaged journal there (a helper before journal format 1 appended to a torn tail; a disk
//! error) never blocks a command: it is moved into `history/damaged/` with a warning naming both
//! paths, and is shown as far as it reads (`journal::salvage`). History only informs (order,
//! the rollback target, protected snapshots); recovery never reads these files.

use crate::engine::journal::{Ending, Journal, JournalError, Step, Summary, TxKind};
use crate::server::version::{Class, Version};
use crate::store::state::StateDir;
use crate::Error;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub txid: String,
    /// Order among the transactions (0: written before the journal had it).
    pub seq: u64,
    pub kind: TxKind,
    pub from: Version,
    pub to: Version,
    pub class: Class,
    /// Unix time (ms) of the begin record.
    pub started_at: u64,
    pub duration_ms: u64,
    /// Stop started -> health done.
    pub downtime_ms: Option<u64>,
    /// None: the transaction is unfinished (the live journal).
    pub ending: Option<Ending>,
    pub message: String,
    /// What went wrong without changing the ending.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::engine::warning::Warning>,
    pub steps: Vec<StepTime>,
    pub snapshot: Option<String>,
    /// The journal was damaged: set aside here, and this entry is what could be read of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub step: Step,
    pub ms: u64,
}

impl Entry {
    pub fn from_summary(sum: &Summary) -> Option<Entry> {
        let b = sum.begin.as_ref()?;
        Some(Entry {
            txid: b.txid.clone(),
            seq: b.seq,
            kind: b.kind,
            from: b.from.clone(),
            to: b.to.clone(),
            class: b.class,
            started_at: sum.first_at,
            duration_ms: sum.first.ms_until(&sum.last),
            downtime_ms: sum.downtime_ms(),
            ending: sum.end.as_ref().map(|e| e.0),
            message: sum
                .end
                .as_ref()
                .map(|e| e.1.clone())
                .or_else(|| sum.abort.clone())
                .unwrap_or_default(),
            warnings: sum.end_warnings.clone(),
            steps: sum
                .step_times
                .iter()
                .map(|(s, a, b)| StepTime {
                    step: *s,
                    ms: a.ms_until(b),
                })
                .collect(),
            snapshot: sum.snapshot_id().map(String::from),
            damaged: None,
        })
    }
}

/// The last committed upgrade to `to` (from `from`, when given): what a rollback of `to` undoes.
pub fn committed_upgrade(
    state: &StateDir,
    to: &Version,
    from: Option<&Version>,
) -> Result<Option<Entry>, Error> {
    Ok(list(state)?.into_iter().rev().find(|e| {
        e.kind == TxKind::Upgrade
            && e.ending == Some(Ending::Committed)
            && &e.to == to
            && from.map_or(true, |f| &e.from == f)
    }))
}

/// The one answer to which snapshots retention must never remove: the one a rollback of the
/// `running` release restores (its committed upgrade's), plus `also` (a transaction's own).
/// Snapshots of set-aside data (`Manifest::set_aside`: what a rollback, an undo or a `snapshot
/// restore` displaced) are not listed: they are kept whatever the caller protects, by
/// `Snapshots::prune` and `space_advice` themselves, until `snapshot remove ID`.
pub fn protected_snapshots(
    state: &StateDir,
    running: &Version,
    also: Option<&str>,
) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = committed_upgrade(state, running, None)?
        .and_then(|e| e.snapshot)
        .into_iter()
        .collect();
    out.extend(also.map(String::from));
    Ok(out)
}

/// Closed transactions, oldest first (see `listing`). For the commands that do not print
/// `listing`'s warnings: moving a damaged journal aside is logged (to stderr and the system
/// journal), the rest is for `status` and `history` to say.
pub fn list(state: &StateDir) -> Result<Vec<Entry>, Error> {
    let l = listing(state)?;
    for w in &l.moves {
        tracing::warn!("{w}");
    }
    Ok(l.entries)
}

/// What `listing` read, and what the admin should hear about it.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
    /// The warnings (also in `warnings`) about the journals this call moved aside.
    pub moves: Vec<String>,
}

/// Closed transactions, oldest first, with warnings about the journals that did not read: a
/// damaged one is moved into `history/damaged/` (logged, naming both paths) and listed as far as
/// it reads, there as on every later call; one of a newer format (a downgraded helper) is left
/// in place and not listed. Neither fails the listing. Nothing here is logged.
pub fn listing(state: &StateDir) -> Result<Listing, Error> {
    let dir = state.history_dir();
    let mut out = Listing::default();
    let mut moved = Vec::new();
    for p in journals_in(&dir)? {
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) => {
                out.warnings.push(format!(
                    "cannot read {}: {e}; it is not listed",
                    p.display()
                ));
                continue;
            }
        };
        match crate::engine::journal::parse(&p, &bytes) {
            Ok(records) => out
                .entries
                .extend(Entry::from_summary(&Summary::of(&records))),
            Err(JournalError::Corrupt { line, message, .. }) => match quarantine(state, &p) {
                Ok(to) => {
                    let w = format!(
                            "journal {} is damaged at line {line} ({message}): moved to {}; `stalwart-upgrade history` shows what could be read of it, remove it once you have read it",
                            p.display(),
                            to.display()
                        );
                    out.moves.push(w.clone());
                    out.warnings.push(w);
                    moved.push(to);
                }
                Err(e) => {
                    out.warnings.push(format!(
                            "journal {} is damaged at line {line} ({message}) and could not be moved aside ({e}); it is listed as far as it reads",
                            p.display()
                        ));
                    out.entries.extend(salvaged(&p, &bytes, &mut out.warnings));
                }
            },
            Err(e) => out.warnings.push(format!("{e}; it is not listed")),
        }
    }
    let aside = state.damaged_dir();
    let set_aside = match journals_in(&aside) {
        Ok(v) => v,
        Err(Error::State(crate::store::state::StateError::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    for p in set_aside {
        match std::fs::read(&p) {
            Ok(bytes) => {
                if !moved.contains(&p) {
                    out.warnings.push(format!(
                        "{} is a damaged journal set aside earlier, listed as far as it reads; remove it once you have read it",
                        p.display()
                    ));
                }
                out.entries.extend(salvaged(&p, &bytes, &mut out.warnings));
            }
            Err(e) => out.warnings.push(format!(
                "cannot read {}: {e}; it is not listed",
                p.display()
            )),
        }
    }
    // By sequence, not by the wall clock: it may have been set back between two transactions.
    out.entries
        .sort_by(|a, b| (a.seq, a.started_at, &a.txid).cmp(&(b.seq, b.started_at, &b.txid)));
    Ok(out)
}

/// The `*.jsonl` files directly in `dir`.
fn journals_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let rd = std::fs::read_dir(dir).map_err(|source| crate::store::state::StateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.is_file())
        .collect())
}

/// The entry of what reads of a damaged journal, marked as such.
fn salvaged(p: &Path, bytes: &[u8], warnings: &mut Vec<String>) -> Option<Entry> {
    match crate::engine::journal::salvage(p, bytes) {
        Ok(s) => {
            let entry = Entry::from_summary(&Summary::of(&s.records)).map(|mut e| {
                e.damaged = Some(p.to_owned());
                e
            });
            if entry.is_none() {
                warnings.push(format!(
                    "nothing of the damaged journal {} could be read",
                    p.display()
                ));
            }
            entry
        }
        Err(e) => {
            warnings.push(format!("{e}; it is not listed"));
            None
        }
    }
}

/// Moves a damaged journal from history into `history/damaged/` (never over another file there);
/// returns where it went.
fn quarantine(state: &StateDir, p: &Path) -> Result<PathBuf, crate::store::state::StateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| crate::store::state::StateError::Io { path, source }
    };
    let dir = state.damaged_dir();
    if let Err(e) =
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir)
    {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(io(&dir)(e));
        }
    }
    // It is under the state dir, checked like it: root's, 0700, no symlink.
    crate::store::state::check_private_dir(&dir)?;
    let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("journal");
    let mut to = dir.join(format!("{name}.jsonl"));
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{name}-{n}.jsonl"));
        n += 1;
    }
    std::fs::rename(p, &to).map_err(io(p))?;
    crate::store::state::fsync_dir(&dir).map_err(io(&dir))?;
    crate::store::state::fsync_dir(&state.history_dir()).map_err(io(&state.history_dir()))?;
    Ok(to)
}

/// The sequence number of the next transaction.
pub fn next_seq(state: &StateDir) -> Result<u64, Error> {
    let last = match list(state) {
        Ok(l) => l.iter().map(|e| e.seq).max().unwrap_or(0),
        Err(Error::State(crate::store::state::StateError::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            0
        }
        Err(e) => return Err(e),
    };
    Ok(last + 1)
}

/// The unfinished transaction, if any.
pub fn unfinished(state: &StateDir) -> Result<Option<Entry>, Error> {
    Ok(
        Journal::read_open(&state.journal_path(), &state.damaged_dir())?
            .and_then(|r| Entry::from_summary(&Summary::of(&r))),
    )
}

pub fn ending_word(e: Option<Ending>) -> &'static str {
    match e {
        Some(Ending::Committed) => "committed",
        Some(Ending::RolledBack) => "rolled back",
        Some(Ending::Failed) => "FAILED",
        None => "UNFINISHED",
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = (self.started_at / 1000) as i64;
        if self.kind == TxKind::Restore {
            write!(
                f,
                "{} snapshot restore under {} {} in {:.1} s",
                format_time(secs),
                self.from,
                ending_word(self.ending),
                self.duration_ms as f64 / 1000.0
            )?;
        } else {
            write!(
                f,
                "{} {:?} {} -> {} ({}) {} in {:.1} s",
                format_time(secs),
                self.kind,
                self.from,
                self.to,
                self.class,
                ending_word(self.ending),
                self.duration_ms as f64 / 1000.0
            )?;
        }
        if let Some(d) = self.downtime_ms {
            write!(f, ", downtime {:.1} s", d as f64 / 1000.0)?;
        }
        if !self.steps.is_empty() {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|s| format!("{} {}ms", s.step, s.ms))
                .collect();
            write!(f, "\n    steps: {}", steps.join(", "))?;
        }
        if self.ending != Some(Ending::Committed) && !self.message.is_empty() {
            write!(f, "\n    {}", self.message.replace('\n', "\n    "))?;
        }
        if let Some(p) = &self.damaged {
            write!(
                f,
                "\n    (its journal is damaged, set aside as {}: shown as far as it reads)",
                p.display()
            )?;
        }
        Ok(())
    }
}

/// UTC "YYYY-MM-DD HH:MM:SSZ".
pub fn format_time(secs: i64) -> String {
    crate::os::clock::display(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::journal::{Begin, Phase, Record, FORMAT};

    fn begin(txid: &str, seq: u64) -> Begin {
        crate::engine::journal::sample_begin(txid, seq)
    }

    /// A closed journal in history, as `transaction::close` leaves it; `tear` appends a torn
    /// record before the end record, as a helper before journal format 1 did after a kill.
    fn archived(state: &StateDir, txid: &str, seq: u64, tear: bool) -> PathBuf {
        let p = state.history_dir().join(format!("{txid}.jsonl"));
        let mut j = Journal::create(&p, begin(txid, seq)).unwrap();
        j.step(Step::Stage, Phase::Started, None).unwrap();
        drop(j);
        let mut bytes = std::fs::read(&p).unwrap();
        if tear {
            bytes.extend_from_slice(br#"{"rec":"step","at":3,"step":"stage","ph"#);
        }
        let end = Record::End {
            at: 5,
            mono: None,
            ending: Ending::RolledBack,
            message: "rolled back".into(),
            warnings: Vec::new(),
        };
        bytes.extend(serde_json::to_vec(&end).unwrap());
        bytes.push(b'\n');
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn a_damaged_journal_in_history_is_set_aside_and_listed_as_far_as_it_reads() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(&t.path().join("s")).unwrap();
        archived(&state, "1-a", 1, false);
        let bad = archived(&state, "2-b", 2, true);
        let l = listing(&state).unwrap();
        let to = state.damaged_dir().join("2-b.jsonl");
        assert!(!bad.exists() && to.is_file());
        assert_eq!(l.moves.len(), 1);
        let w = &l.moves[0];
        assert!(
            w.contains(&bad.display().to_string()) && w.contains(&to.display().to_string()),
            "{w}"
        );
        assert!(l.warnings.contains(w));
        // Both listed, in order; the damaged one read through its glued end record.
        let txids: Vec<_> = l.entries.iter().map(|e| e.txid.as_str()).collect();
        assert_eq!(txids, ["1-a", "2-b"]);
        assert_eq!(l.entries[1].damaged.as_deref(), Some(to.as_path()));
        assert_eq!(l.entries[1].ending, Some(Ending::RolledBack));
        assert_eq!(l.entries[0].damaged, None);
        assert!(l.entries[1].to_string().contains("its journal is damaged"));
        // Its sequence number still counts.
        assert_eq!(next_seq(&state).unwrap(), 3);
        // Later: nothing moves, and the warning stays until the admin removes the file.
        let again = listing(&state).unwrap();
        assert!(again.moves.is_empty());
        assert_eq!(again.entries.len(), 2);
        assert_eq!(again.warnings.len(), 1);
        assert!(
            again.warnings[0].contains("set aside earlier"),
            "{:?}",
            again.warnings
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(state.damaged_dir())
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_name_taken_in_the_damaged_dir_is_not_overwritten() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(&t.path().join("s")).unwrap();
        archived(&state, "2-b", 2, true);
        listing(&state).unwrap();
        archived(&state, "2-b", 2, true);
        let l = listing(&state).unwrap();
        assert!(state.damaged_dir().join("2-b.jsonl").is_file());
        assert!(state.damaged_dir().join("2-b-1.jsonl").is_file());
        assert_eq!(l.entries.len(), 2);
    }

    #[test]
    fn a_newer_journal_in_history_is_left_alone_and_not_listed() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(&t.path().join("s")).unwrap();
        let p = archived(&state, "1-a", 1, false);
        let text = std::fs::read_to_string(&p).unwrap().replace(
            &format!(r#""format":{FORMAT}"#),
            &format!(r#""format":{}"#, FORMAT + 1),
        );
        std::fs::write(&p, text).unwrap();
        let l = listing(&state).unwrap();
        assert!(p.is_file() && !state.damaged_dir().exists());
        assert!(l.entries.is_empty());
        assert!(
            l.warnings[0].contains("newer stalwart-upgrade"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn formats_utc_time() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::format_time(1_795_866_534), "2026-11-28 11:48:54Z");
    }
}
