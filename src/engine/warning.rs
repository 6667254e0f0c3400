//! What went wrong without changing how a transaction ended: a committed upgrade whose web admin
//! refresh failed, a rollback whose failure marker could not be written. Typed, so that `status`
//! and the journal's end record carry them as records instead of text to search; each prints
//! what happened and what to run.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum Warning {
    /// The boot recovery committed without hashing the snapshot (the server waits for it).
    SnapshotNotHashed {
        id: String,
    },
    SnapshotHashFailed {
        id: String,
        error: String,
    },
    /// `hint`: what the crossing changes about logging in (or empty).
    WebadminRefreshFailed {
        error: String,
        hint: String,
    },
    /// The end record is written but the journal did not move into history.
    JournalNotClosed {
        path: PathBuf,
        error: String,
        rolled_back: bool,
        unit: String,
    },
    FailureMarkerNotCleared {
        error: String,
    },
    /// A rolled-back version could not be marked failed: an unattended run may try it again.
    FailureNotRecorded {
        version: String,
        error: String,
    },
    StagedNotRemoved {
        error: String,
    },
    HoldNotMoved {
        line: String,
        error: String,
    },
    ProbationNotStarted {
        unit: String,
        why: String,
    },
    PruneSkipped {
        error: String,
    },
    SnapshotNotPruned {
        id: String,
        why: String,
    },
    PruneFailed {
        error: String,
    },
    CarriedDumpNotRemoved {
        error: String,
        dir: PathBuf,
    },
    /// A warning in a journal written before warnings were records (its end message's text).
    Written {
        text: String,
    },
    /// A kind a newer helper wrote.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::SnapshotNotHashed { id } => write!(
                f,
                "snapshot {id} is not hashed yet (the boot did not wait for it): run `stalwart-upgrade snapshot verify {id}`"
            ),
            Warning::SnapshotHashFailed { id, error } => {
                write!(f, "hashing snapshot {id} failed: {error}")
            }
            Warning::WebadminRefreshFailed { error, hint } => {
                write!(f, "web admin refresh failed: {error}{hint}")
            }
            Warning::JournalNotClosed {
                path,
                error,
                rolled_back: false,
                ..
            } => write!(
                f,
                "the journal {} could not be closed ({error}); free space there, then run `stalwart-upgrade recover`, which only closes it",
                path.display()
            ),
            Warning::JournalNotClosed {
                path, error, unit, ..
            } => write!(
                f,
                "the journal {} could not be closed ({error}); free space there, then run `stalwart-upgrade recover` to close it (it checks each undo again, and may restart {unit} once)",
                path.display()
            ),
            Warning::FailureMarkerNotCleared { error } => {
                write!(f, "clearing the failure marker failed: {error}")
            }
            Warning::FailureNotRecorded { version, error } => write!(
                f,
                "{version} could not be recorded as failed ({error}), so an unattended run may try it again; free space there, or hold the package (`stalwart-upgrade hold`)"
            ),
            Warning::StagedNotRemoved { error } => {
                write!(f, "removing the staged binary failed: {error}")
            }
            Warning::HoldNotMoved { line, error } => {
                write!(f, "moving the package hold to {line} failed: {error}")
            }
            Warning::ProbationNotStarted { unit, why } => write!(
                f,
                "probation not started ({why}): watch {unit} yourself for a while"
            ),
            Warning::PruneSkipped { error } => write!(f, "pruning skipped: {error}"),
            Warning::SnapshotNotPruned { id, why } => write!(
                f,
                "snapshot {id} could not be pruned ({why}); the others were: fix that, then `stalwart-upgrade snapshot prune`"
            ),
            Warning::PruneFailed { error } => write!(f, "pruning old snapshots failed: {error}"),
            Warning::CarriedDumpNotRemoved { error, dir } => write!(
                f,
                "removing the directory dump of an earlier 0.15 -> 0.16 crossing failed: {error}; remove {} by hand",
                dir.display()
            ),
            Warning::Written { text } => f.write_str(text),
            Warning::Unknown => f.write_str(
                "a warning a newer stalwart-upgrade recorded (see `stalwart-upgrade history`)",
            ),
        }
    }
}

/// The warnings of an end record: its own, or for a journal written before they were records,
/// the text its message carried after "; WARNING: ".
pub fn of_end(message: &str, recorded: &[Warning]) -> Vec<Warning> {
    if !recorded.is_empty() {
        return recorded.to_vec();
    }
    match message.split_once("; WARNING: ") {
        Some((_, text)) => vec![Warning::Written { text: text.into() }],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unknown_kinds_still_read() {
        let w = Warning::HoldNotMoved {
            line: "0.16".into(),
            error: "disk full".into(),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"warning":"hold_not_moved","line":"0.16","error":"disk full"}"#
        );
        assert_eq!(serde_json::from_str::<Warning>(&json).unwrap(), w);
        let newer: Warning =
            serde_json::from_str(r#"{"warning":"from_the_future","x":1}"#).unwrap();
        assert_eq!(newer, Warning::Unknown);
    }

    #[test]
    fn an_old_end_message_gives_its_warning_text() {
        assert_eq!(
            of_end(
                "Upgrade ... committed; WARNING: web admin refresh failed: x",
                &[]
            ),
            [Warning::Written {
                text: "web admin refresh failed: x".into()
            }]
        );
        assert!(of_end("Upgrade ... committed", &[]).is_empty());
    }
}
