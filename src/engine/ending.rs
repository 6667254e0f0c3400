//! How a transaction ends: its outcome and the report the admin reads (`Outcome`, `Report`),
//! the closing message's title, and `close` (the End record, the journal into history, the
//! announcement). The runner, the commit and the undo all end through here.

use crate::engine::journal::{Begin, Ending, Journal, Summary, TxKind};
use crate::engine::resources::Resources;
use crate::engine::warning::Warning;
use crate::server::version::{Class, Version};
use crate::store::state::StateDir;
use crate::Error;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Committed,
    /// The old version runs healthy again. `before_stop`: the failure came before the server
    /// was stopped (staging): nothing was changed, a failed preflight (exit 4).
    RolledBack {
        reason: String,
        #[serde(default)]
        before_stop: bool,
    },
    /// Neither version could be brought back healthy: the admin must act.
    Failed {
        reason: String,
    },
    /// The requested version already runs.
    NothingToDo,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub txid: String,
    pub kind: TxKind,
    pub from: Version,
    pub to: Version,
    pub class: Class,
    pub outcome: Outcome,
    /// Stop issued -> the new version answered ready (ms).
    pub downtime_ms: Option<u64>,
    pub snapshot: Option<String>,
    /// What went wrong without failing the transaction (web admin refresh, hashing).
    pub warnings: Vec<Warning>,
    /// Plain-words account for the admin.
    pub message: String,
    /// The server was running when the transaction began (a committed upgrade of a running
    /// server goes on probation).
    #[serde(skip)]
    pub was_active: bool,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Committed | Outcome::NothingToDo => crate::exit::OK,
            Outcome::RolledBack {
                before_stop: true, ..
            } => crate::exit::PREFLIGHT,
            Outcome::RolledBack { .. } => crate::exit::ROLLED_BACK,
            Outcome::Failed { .. } => crate::exit::BROKEN,
        }
    }
}

/// "Upgrade of stalwart.service from 0.15.5 to 0.15.6": how every closing message starts.
pub(crate) fn title(begin: &Begin) -> String {
    let kind = match begin.kind {
        TxKind::Upgrade => "Upgrade",
        TxKind::Rollback => "Rollback",
        TxKind::Restore => {
            return format!(
                "Restore of snapshot {} on {} ({})",
                begin.restore_from.as_deref().unwrap_or("?"),
                begin.unit,
                begin.from
            )
        }
    };
    format!(
        "{kind} of {} from {} to {}",
        begin.unit, begin.from, begin.to
    )
}

/// Writes the End record and moves the journal into history.
pub(crate) fn close(
    m: &Resources,
    j: &mut Journal,
    begin: &Begin,
    sum: &Summary,
    ending: Ending,
    message: &str,
    warnings: &[Warning],
) -> Result<(), Error> {
    if sum.end.is_none() {
        j.append(crate::engine::journal::Record::End {
            at: crate::os::clock::now_ms(),
            mono: crate::os::clock::MonoStamp::now(),
            ending,
            message: message.into(),
            warnings: warnings.to_vec(),
        })?;
    }
    j.release_reserve();
    archive(m.state, &begin.txid)?;
    crate::engine::announce::ended(
        &begin.unit,
        &begin.txid,
        &begin.from.to_string(),
        &begin.to.to_string(),
        ending,
        message,
    );
    // What a rollback below 0.16 set aside is in the snapshot it took too (config copy).
    let aside = m.state.aside_dir(&begin.txid);
    if aside.exists() {
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            tracing::warn!("cannot remove {}: {e}", aside.display());
        }
    }
    Ok(())
}

fn archive(state: &StateDir, txid: &str) -> Result<(), Error> {
    let from = state.journal_path();
    let to = state.history_dir().join(format!("{txid}.jsonl"));
    std::fs::rename(&from, &to).map_err(|source| crate::engine::journal::JournalError::Io {
        path: from.clone(),
        source,
    })?;
    // The journal's new entry first: power loss must not persist its removal from the state dir
    // (below) without its arrival in history (the record of the transaction would be gone).
    let history = state.history_dir();
    crate::store::state::fsync_dir(&history).map_err(|source| {
        crate::engine::journal::JournalError::Io {
            path: history.clone(),
            source,
        }
    })?;
    crate::store::state::fsync_dir(&state.root).map_err(|source| {
        crate::engine::journal::JournalError::Io {
            path: state.root.clone(),
            source,
        }
    })?;
    Ok(())
}

pub(crate) fn report(
    begin: &Begin,
    sum: &Summary,
    outcome: Outcome,
    message: String,
    warnings: Vec<Warning>,
) -> Report {
    Report {
        txid: begin.txid.clone(),
        kind: begin.kind,
        from: begin.from.clone(),
        to: begin.to.clone(),
        class: begin.class,
        outcome,
        downtime_ms: sum.downtime_ms(),
        snapshot: sum.snapshot_id().map(String::from),
        warnings,
        message,
        was_active: begin.was_active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fsutil::trace;

    #[test]
    fn an_archived_journal_is_durable_in_history_before_its_removal_from_the_state_dir() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(&t.path().join("state")).unwrap();
        std::fs::write(state.journal_path(), b"{}\n").unwrap();
        trace::start();
        archive(&state, "tx-1").unwrap();
        let log = trace::take();
        assert!(state.history_dir().join("tx-1.jsonl").is_file());
        assert!(!state.journal_path().exists());
        assert_eq!(
            log,
            [
                format!("fsync {}", state.history_dir().display()),
                format!("fsync {}", state.root.display()),
            ]
        );
    }
}
