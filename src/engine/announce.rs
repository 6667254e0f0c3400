//! What reaches the admin beyond stderr when a transaction ends: one journal entry per ending,
//! with a MESSAGE_ID (`journalctl MESSAGE_ID=...`, explained by `journalctl -x` through the
//! catalog the package ships) and OBJECT_SYSTEMD_UNIT, which makes root's entry part of
//! `journalctl -u stalwart.service` (journalctl(1): -u also matches OBJECT_SYSTEMD_UNIT= of
//! entries logged by uid 0). Under unattended-upgrades and dnf-automatic this entry, `status`
//! exit 8 and their own mail are what an admin sees of a night-time failure; stderr is read by
//! nobody there.

use crate::engine::journal::Ending;

/// An upgrade committed: the new version runs and is healthy.
pub const COMMITTED: &str = "331eb49cee5c4d81ab98ec8340f72c3f";
/// An upgrade failed and was rolled back: the old version runs again.
pub const ROLLED_BACK: &str = "97a59f1a87d94666b6cdc3b7fe31d9ca";
/// An upgrade failed and its rollback did not finish: the server needs an admin.
pub const FAILED: &str = "18e298dc631d4891b52753850fbf4650";
/// An upgrade the package manager asked for was refused before any downtime.
pub const REFUSED: &str = "e0e0a2aca43c424d95d5f6f993049904";
/// A committed release crashed during its probation and was rolled back by the watcher.
pub const PROBATION_ROLLED_BACK: &str = "97e4d1cac51b4532aa5a4f5b21d3975b";
/// A recovery (at boot, or its retry) could not finish: the server is held stopped.
pub const RECOVERY_UNFINISHED: &str = "4878deb09c9d42cfbd03bd7e9be2f086";

/// The tracing target of these entries: the journald layer takes them, the stderr layer does
/// not (what they say is printed there already, in the words of the caller).
pub const TARGET: &str = "announce";

pub fn message_id(ending: Ending) -> &'static str {
    match ending {
        Ending::Committed => COMMITTED,
        Ending::RolledBack => ROLLED_BACK,
        Ending::Failed => FAILED,
    }
}

/// One entry with the fields every ending carries, at a level fixed per call site (tracing's
/// levels are part of the callsite, not a value).
macro_rules! ending_entry {
    ($level:ident, $id:expr, $unit:expr, $txid:expr, $from:expr, $to:expr, $message:expr) => {
        tracing::$level!(
            target: TARGET,
            message_id = $id,
            object_systemd_unit = $unit,
            stalwart_upgrade_txid = $txid,
            stalwart_from = $from,
            stalwart_to = $to,
            "{}",
            $message
        )
    };
}

/// The journal entry for the end of transaction `txid` on `unit`, `from` -> `to`: info when it
/// committed, error when it did not (rollback done or not: the ids tell them apart).
pub fn ended(unit: &str, txid: &str, from: &str, to: &str, ending: Ending, message: &str) {
    let id = message_id(ending);
    match ending {
        Ending::Committed => ending_entry!(info, id, unit, txid, from, to, message),
        Ending::RolledBack | Ending::Failed => {
            ending_entry!(error, id, unit, txid, from, to, message)
        }
    }
}

/// The journal entry for an upgrade refused before any downtime; `target` is the version, or
/// the binary where the hook has not read its version.
pub fn refused(unit: &str, target: &str, why: &str) {
    tracing::warn!(
        target: TARGET,
        message_id = REFUSED,
        object_systemd_unit = unit,
        stalwart_target = target,
        "upgrade of {unit} to {target} refused before any downtime: {why}"
    );
}

/// The journal entry for a release the probation watcher rolled back (`done`: the rollback
/// finished; otherwise [`FAILED`]'s advice applies too and the message says why).
pub fn probation_rolled_back(unit: &str, txid: &str, from: &str, to: &str, why: &str, done: bool) {
    let message = if done {
        format!("{to} failed its probation after the commit ({why}): rolled back to {from}")
    } else {
        format!("{to} failed its probation after the commit ({why}) and the rollback to {from} did not finish: run `stalwart-upgrade status`")
    };
    ending_entry!(error, PROBATION_ROLLED_BACK, unit, txid, from, to, message)
}

/// The journal entry for a recovery that could not finish (`why`); `retry` says whether a
/// retry timer was set.
pub fn recovery_unfinished(unit: &str, why: &str, retry: bool) {
    let next = if retry {
        "it is retried every 5 minutes"
    } else {
        "run `stalwart-upgrade recover` once the cause is fixed"
    };
    tracing::error!(
        target: TARGET,
        message_id = RECOVERY_UNFINISHED,
        object_systemd_unit = unit,
        "recovery of an interrupted upgrade of {unit} could not finish ({why}): the server is held stopped; {next}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let ids = [
            COMMITTED,
            ROLLED_BACK,
            FAILED,
            REFUSED,
            PROBATION_ROLLED_BACK,
            RECOVERY_UNFINISHED,
        ];
        for id in ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        let mut sorted = ids.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    #[test]
    fn each_ending_has_its_own_id() {
        assert_eq!(message_id(Ending::Committed), COMMITTED);
        assert_eq!(message_id(Ending::RolledBack), ROLLED_BACK);
        assert_eq!(message_id(Ending::Failed), FAILED);
    }
}
