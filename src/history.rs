//! Past transactions: the closed journals under STATE_DIR/history, summarised.

use crate::journal::{Ending, Journal, Step, Summary, TxKind};
use crate::state::StateDir;
use crate::version::{Class, Version};
use crate::Error;
use serde::Serialize;

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
    pub steps: Vec<StepTime>,
    pub snapshot: Option<String>,
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
            steps: sum
                .step_times
                .iter()
                .map(|(s, a, b)| StepTime {
                    step: *s,
                    ms: a.ms_until(b),
                })
                .collect(),
            snapshot: sum.snapshot_id().map(String::from),
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

/// Closed transactions, oldest first.
pub fn list(state: &StateDir) -> Result<Vec<Entry>, Error> {
    let dir = state.history_dir();
    let mut out = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|source| crate::state::StateError::Io {
        path: dir.clone(),
        source,
    })?;
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            if let Some(records) = Journal::read(&p)? {
                if let Some(entry) = Entry::from_summary(&Summary::of(&records)) {
                    out.push(entry);
                }
            }
        }
    }
    // By sequence, not by the wall clock: it may have been set back between two transactions.
    out.sort_by(|a, b| (a.seq, a.started_at, &a.txid).cmp(&(b.seq, b.started_at, &b.txid)));
    Ok(out)
}

/// The sequence number of the next transaction.
pub fn next_seq(state: &StateDir) -> Result<u64, Error> {
    let last = match list(state) {
        Ok(l) => l.iter().map(|e| e.seq).max().unwrap_or(0),
        Err(Error::State(crate::state::StateError::Io { source, .. }))
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
    Ok(Journal::read(&state.journal_path())?.and_then(|r| Entry::from_summary(&Summary::of(&r))))
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
        Ok(())
    }
}

/// UTC "YYYY-MM-DD HH:MM:SSZ".
pub fn format_time(secs: i64) -> String {
    crate::clock::display(secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_time() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::format_time(1_795_866_534), "2026-11-28 11:48:54Z");
    }
}
