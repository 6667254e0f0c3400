//! Probation after a commit (issue #25; the pattern of RAUC's and Mender's commit after health,
//! and of Fedora's greenboot). A release can pass the gate and crash a minute later (measured: a
//! crash 20 s after start was committed and `Restart=on-failure` then looped it while `status`
//! said all was well). For `[health] probation_secs` after an upgrade's commit a watcher
//! (`stalwart-upgrade probation`, run as the transient unit [`UNIT`] so that it outlives the helper
//! and the package manager) looks at the server every few seconds and rolls the release back
//! when it crashes: the unit failed, or `Restart=` brought it back (NRestarts above 0: the helper's
//! own start reset it), or `/healthz/ready` failed [`FAILS`] times in a row once the process is
//! older than `[timeouts] ready_secs` (an admin's restart is not judged while it starts). The rollback is the
//! admin's `rollback` (binary, and the data snapshot when the schema may have moved, with what
//! the release wrote set aside), and the release is marked failed: not retried automatically.
//!
//! An admin who stops or restarts the server, or any other transaction (a `rollback`, the next
//! upgrade), ends the probation without judging the release. Its state is STATE/probation.json,
//! written at the commit and removed when the probation ends; `status` shows it.

use crate::engine::ending::{Outcome, Report};
use crate::engine::journal::TxKind;
use crate::engine::resources::Resources;
use crate::engine::transaction::{self, RecoverReport};
use crate::engine::warning::Warning;
use crate::os::systemd::{ActiveState, UnitState};
use crate::server::version::Version;
use crate::store::state::StateDir;
use crate::{Context, Error};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The watcher's transient unit.
pub const UNIT: &str = "stalwart-upgrade-probation.service";
const FILE: &str = "probation.json";
/// Failed readiness probes in a row that count as a failure (one every [`TICK`]).
pub const FAILS: u32 = 3;
pub(crate) const TICK: Duration = Duration::from_secs(2);

/// A release on probation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probation {
    pub txid: String,
    pub unit: String,
    pub from: Version,
    pub to: Version,
    /// The server's health base URL (as the gate probed it).
    pub health_url: String,
    /// Until when (ms since the epoch).
    pub until_unix_ms: u64,
}

/// What one look at the server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Running; the probe's answer decides.
    Running,
    /// It crashed: the release is rolled back.
    Crashed(String),
    /// Someone else took over (a stop, another transaction): the probation ends, no verdict.
    TakenOver(String),
    /// The probation time is over: the release stays.
    Passed,
}

/// Pure: what the unit's state, the installed version and the clock say about `p`.
pub fn look(p: &Probation, st: &UnitState, installed: Option<&Version>, now_ms: u64) -> Look {
    if installed != Some(&p.to) {
        return Look::TakenOver(format!(
            "{} is installed now, not {}",
            installed.map_or("another version".into(), |v| v.to_string()),
            p.to
        ));
    }
    if st.n_restarts > 0 || st.sub_state.is_auto_restart() || st.active_state == ActiveState::Failed
    {
        return Look::Crashed(format!(
            "{} crashed after its commit ({} {}, exit status {}, restarted {} time(s) by Restart=)",
            p.unit, st.active_state, st.sub_state, st.exec_main_status, st.n_restarts
        ));
    }
    if st.active_state == ActiveState::Inactive {
        return Look::TakenOver(format!("{} was stopped", p.unit));
    }
    if now_ms >= p.until_unix_ms {
        return Look::Passed;
    }
    Look::Running
}

fn path(state: &StateDir) -> std::path::PathBuf {
    state.root.join(FILE)
}

/// The probation in progress, if any (a stale file, past its time, counts as none).
pub fn current(state: &StateDir) -> Option<Probation> {
    let text = std::fs::read(path(state)).ok()?;
    let p: Probation = serde_json::from_slice(&text).ok()?;
    (crate::os::clock::now_ms() < p.until_unix_ms).then_some(p)
}

/// Ends the probation of transaction `txid` (not a newer one a later upgrade began meanwhile).
pub(crate) fn end_of(state: &StateDir, txid: &str) {
    let ours = std::fs::read(path(state))
        .ok()
        .and_then(|t| serde_json::from_slice::<Probation>(&t).ok())
        .is_some_and(|p| p.txid == txid);
    if ours {
        end(state);
    }
}

pub(crate) fn end(state: &StateDir) {
    if let Err(e) = std::fs::remove_file(path(state)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {} failed: {e}", path(state).display());
        }
    }
}

/// After a commit: an upgrade that started the server goes on probation (a release that passed
/// its gate may still crash a minute later). Not at boot: the server's unit is ordered after
/// the boot recovery, and the next `recover` (every hook's first step) starts it then. A
/// warning on the report when it cannot be watched (the release stays committed).
pub fn after_commit(m: &Resources, mut r: Report) -> Report {
    if r.kind == TxKind::Upgrade && r.outcome == Outcome::Committed && r.was_active && !m.ctx.boot {
        r.warnings.extend(begin(m, &r));
    }
    r
}

/// [`after_commit`] for what a recovery finished (the helper killed past the health gate).
pub fn recovered(m: &Resources, r: RecoverReport) -> RecoverReport {
    match r {
        RecoverReport::Finished { report } => RecoverReport::Finished {
            report: after_commit(m, report),
        },
        other => other,
    }
}

/// Puts the release `r` committed on probation and starts the watcher.
fn begin(m: &Resources, r: &Report) -> Option<Warning> {
    let s = m.settings();
    if s.health.probation_secs == 0 {
        return None;
    }
    let cfg = m
        .server_config(&crate::server::lines::server_config_path(s, &r.to))
        .ok();
    let p = Probation {
        txid: r.txid.clone(),
        unit: s.unit.clone(),
        from: r.from.clone(),
        to: r.to.clone(),
        health_url: crate::server::health::base_url(s, cfg.as_ref()),
        until_unix_ms: crate::os::clock::now_ms() + s.health.probation_secs.saturating_mul(1000),
    };
    let data = match serde_json::to_vec_pretty(&p) {
        Ok(d) => d,
        Err(e) => {
            return Some(Warning::ProbationNotStarted {
                unit: p.unit,
                why: e.to_string(),
            })
        }
    };
    if let Err(e) = crate::os::fsutil::Dir::open(&m.state.root)
        .and_then(|d| d.write_atomic(FILE, &data, 0o600, None))
    {
        return Some(Warning::ProbationNotStarted {
            unit: p.unit,
            why: e.to_string(),
        });
    }
    // Killed here, the probation is on disk without a watcher: `recover` (the hook's first
    // step, and boot) starts one (`resume`).
    crate::engine::journal::test_point("probation:begun");
    match start_watcher() {
        Ok(()) => {
            tracing::info!(unit = %p.unit, to = %p.to, "{} is on probation for {} s: a crash meanwhile rolls it back", p.to, s.health.probation_secs);
            None
        }
        Err(why) => {
            end(m.state);
            Some(Warning::ProbationNotStarted { unit: p.unit, why })
        }
    }
}

/// Starts the watcher as a transient unit; one that already runs picks up the new probation.
fn start_watcher() -> Result<(), String> {
    crate::os::systemd::run_helper_transient(
        UNIT,
        "Stalwart upgrade probation: roll back a release that crashes after its commit",
        None,
        &["probation"],
        &crate::engine::journal::test_env(),
    )
}

/// `recover`, then [`resume`]: what `stalwart-upgrade recover`, boot and every hook run.
pub fn recover(ctx: &Context) -> Result<RecoverReport, Error> {
    transaction::locked(ctx, |m| {
        let r = recovered(m, transaction::recover_locked(m)?);
        if let Some(warning) = resume(m.state) {
            tracing::warn!("{warning}");
        }
        Ok(r)
    })
}

/// Run by `recover` (the first step of every hook, and boot): a probation on disk whose
/// watcher is gone (the helper killed between the commit and the watcher's start, a watcher
/// killed, a reboot during the probation) gets its watcher back. Nothing when the watcher runs
/// (systemd-run refuses a second unit of the name) or no probation is current.
pub fn resume(state: &StateDir) -> Option<String> {
    let p = current(state)?;
    match start_watcher() {
        Ok(()) => {
            tracing::debug!(unit = %p.unit, to = %p.to, "the probation of {} goes on", p.to);
            None
        }
        Err(why) => Some(format!(
            "the probation of {} could not go on ({why}): watch {} yourself for a while",
            p.to, p.unit
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Probation {
        Probation {
            txid: "t".into(),
            unit: "stalwart.service".into(),
            from: "0.15.5".parse().unwrap(),
            to: "0.15.6".parse().unwrap(),
            health_url: "http://127.0.0.1:8080".into(),
            until_unix_ms: 1_000,
        }
    }

    fn running() -> UnitState {
        UnitState {
            load_state: crate::os::systemd::LoadState::Loaded,
            active_state: ActiveState::Active,
            sub_state: crate::os::systemd::ServiceState::Running,
            main_pid: 7,
            ..UnitState::default()
        }
    }

    #[test]
    fn a_crash_a_restart_loop_or_a_failed_unit_roll_back() {
        let v: Version = "0.15.6".parse().unwrap();
        assert_eq!(look(&p(), &running(), Some(&v), 10), Look::Running);
        let restarted = UnitState {
            n_restarts: 1,
            ..running()
        };
        assert!(matches!(
            look(&p(), &restarted, Some(&v), 10),
            Look::Crashed(_)
        ));
        let waiting = UnitState {
            active_state: ActiveState::Activating,
            sub_state: crate::os::systemd::ServiceState::AutoRestart,
            ..running()
        };
        assert!(matches!(
            look(&p(), &waiting, Some(&v), 10),
            Look::Crashed(_)
        ));
        let failed = UnitState {
            active_state: ActiveState::Failed,
            sub_state: crate::os::systemd::ServiceState::Failed,
            ..running()
        };
        // Even past the deadline: a crash seen is a crash.
        assert!(matches!(
            look(&p(), &failed, Some(&v), 5_000),
            Look::Crashed(_)
        ));
    }

    #[test]
    fn a_stop_or_another_transaction_ends_it_and_time_passes_it() {
        let v: Version = "0.15.6".parse().unwrap();
        let stopped = UnitState {
            active_state: ActiveState::Inactive,
            sub_state: crate::os::systemd::ServiceState::Dead,
            ..running()
        };
        assert!(matches!(
            look(&p(), &stopped, Some(&v), 10),
            Look::TakenOver(_)
        ));
        let back: Version = "0.15.5".parse().unwrap();
        assert!(matches!(
            look(&p(), &running(), Some(&back), 10),
            Look::TakenOver(_)
        ));
        assert_eq!(look(&p(), &running(), Some(&v), 1_000), Look::Passed);
    }
}
