//! Undo: what a transaction that did not pass its health gate puts back, as a pure plan read
//! from its journal (`plan`), then carried out action by action between journal records
//! (`execute`). Actions the journal shows done are skipped, so a recovery that was itself killed
//! resumes where it stopped: it never stops the old version again or restores the snapshot twice
//! over mail the old version took meanwhile.
//!
//! Modelled on rustup's `dist/component/transaction.rs` (a closed set of undo actions), with the
//! record on disk so the undo survives a crash.

use crate::engine::ending::{close, report, title, Outcome, Report};
use crate::engine::journal::{Begin, Ending, Journal, Noted, Phase, Step, Summary, TxKind, Undo};
use crate::engine::resources::Resources;
use crate::engine::warning::Warning;
use crate::server::serverconfig::ServerConfig;
use crate::server::version::Version;
use crate::store::state::FailedUpgrade;
use crate::{server::health, store::swap, Error};

/// One thing the undo does, in the order it does them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop whatever runs now (the new version may be up, or crash-looping).
    Stop,
    /// Put the old binary back into bin/.
    Binary,
    /// Put back what a rollback below 0.16 set aside (config.json, the drop-in).
    CrossingBack,
    /// Remove what the crossing wrote (config.json, drop-ins, the pinned admin).
    Crossing,
    /// Put the data of before the transaction back from this snapshot.
    Data { snapshot: String },
    /// Remove bin.new, and a snapshot left half-written.
    Cleanup { partial_snapshot: bool },
    /// Put the server config back from the snapshot's copy if it is gone.
    Config { snapshot: String },
    /// Start the old version and health-check it.
    Start,
    /// Boot-time recovery: leave the start to systemd (the server's unit is ordered after it).
    LeaveForBoot,
}

impl Action {
    /// Its tag in the journal (none: nothing is changed).
    pub fn record(&self) -> Option<Undo> {
        Some(match self {
            Action::Stop => Undo::Stop,
            Action::Binary => Undo::Binary,
            Action::CrossingBack => Undo::CrossingBack,
            Action::Crossing => Undo::Crossing,
            Action::Data { .. } => Undo::Data,
            Action::Cleanup { .. } => Undo::Cleanup,
            Action::Config { .. } => Undo::Config,
            Action::Start => Undo::Start,
            Action::LeaveForBoot => return None,
        })
    }
}

/// What to undo for a transaction whose journal says `sum` (`boot`: boot-time recovery, which
/// never starts or stops units). Pure: the same journal always gives the same plan.
pub fn plan(sum: &Summary, begin: &Begin, boot: bool) -> Result<Vec<Action>, Error> {
    let mut out = Vec::new();
    // Only a started start (or the crossing's recovery-mode start) can have left a new version
    // running. A stop that failed left binary and data untouched: stopping again would only
    // repeat the failure; the start below replaces the pending stop job.
    let new_ran = sum.started(Step::Start) || sum.started(Step::Migrate);
    if new_ran && !boot {
        out.push(Action::Stop);
    }
    if sum.started(Step::Swap) {
        out.push(Action::Binary);
    }
    // Before the data: the data undo reads the stores from the config the old version uses.
    if sum.started(Step::CrossingBack) {
        out.push(Action::CrossingBack);
    }
    if sum.started(Step::Crossing) {
        out.push(Action::Crossing);
    }
    let snapshot = sum.snapshot_id().map(String::from);
    let data_moved = new_ran || sum.started(Step::Restore);
    if begin.restore_data && data_moved {
        let snapshot = snapshot.clone().ok_or_else(|| {
            Error::Preflight(
                "the data may have moved but the journal names no finished snapshot".into(),
            )
        })?;
        out.push(Action::Data { snapshot });
    }
    out.push(Action::Cleanup {
        partial_snapshot: sum.started(Step::Snapshot) && !sum.done(Step::Snapshot),
    });
    if begin.was_active && sum.started(Step::Stop) {
        if boot {
            out.push(Action::LeaveForBoot);
        } else {
            if let Some(snapshot) = snapshot {
                out.push(Action::Config { snapshot });
            }
            out.push(Action::Start);
        }
    }
    Ok(out)
}

/// Loads the server config named in the journal (the one in use when the transaction began).
fn server_config(m: &Resources, begin: &Begin) -> Result<ServerConfig, Error> {
    m.server_config(&begin.server_config)
}

/// Carries out the plan, each action between its two journal records; what the journal shows
/// done is skipped. `did` collects what the admin is told.
fn execute(
    m: &Resources,
    j: &mut Journal,
    sum: &Summary,
    begin: &Begin,
    did: &mut Vec<String>,
) -> Result<(), Error> {
    for action in plan(sum, begin, m.ctx.boot)? {
        let Some(tag) = action.record() else {
            did.push(format!(
                "{} left for systemd to start after boot-time recovery",
                begin.unit
            ));
            continue;
        };
        if sum.undone.contains(&tag) {
            tracing::info!(undo = tag.as_str(), "already done by an earlier recovery");
            continue;
        }
        j.undo(tag, Phase::Started, None)?;
        let note = run(m, &action, begin, did)?;
        j.undo(tag, Phase::Done, note.map(Into::into))?;
    }
    if !begin.restore_data && sum.started(Step::Snapshot) {
        did.push(format!(
            "data kept ({} change: the schema does not move)",
            begin.class
        ));
    }
    // A server the undo leaves stopped (it was stopped before, or boot starts it) must be
    // startable by the admin again: the stop step's hold goes (the undo's start lifted it
    // already). At boot /run is new and systemd may not be reachable yet: nothing to lift.
    if !m.ctx.boot && sum.started(Step::Stop) {
        m.sys()?.release(&begin.unit)?;
    }
    Ok(())
}

fn run(
    m: &Resources,
    action: &Action,
    begin: &Begin,
    did: &mut Vec<String>,
) -> Result<Option<Noted>, Error> {
    let s = m.settings();
    match action {
        Action::Stop => {
            // Held as the forward stop holds it, until the undo's own start: an outside start
            // must not run the new binary or write while the old one and its data go back.
            m.sys()?.hold(&begin.unit)?;
            m.sys()?.stop(&begin.unit, s.stop_timeout())?;
            did.push(format!("{} stopped", begin.unit));
            Ok(None)
        }
        Action::Binary => {
            let r = swap::ensure_binary(
                &begin.bin_dir,
                &begin.staged_dir,
                &release_path(m, &begin.from),
                &begin.old_sha256,
                &begin.from,
            )?;
            did.push(format!(
                "{} binary back in {}",
                begin.from,
                begin.bin_dir.display()
            ));
            Ok(Some(Noted::Binary { found: r }))
        }
        Action::CrossingBack => {
            let aside = m.state.aside_dir(&begin.txid);
            crate::store::crossing::put_back(s, m.sys()?, &aside)?;
            did.push("config.json and the unit drop-in of the 0.16 line put back".into());
            Ok(None)
        }
        Action::Crossing => {
            crate::store::carried::unpin_admin(
                s,
                &crate::store::carried::dir(m.state, &begin.txid),
            )?;
            crate::store::crossing::undo(s, m.sys()?)?;
            did.push("config.json, stalwart.env's carried admin and the unit drop-in of the 0.16 line removed (config.toml was never changed)".into());
            Ok(None)
        }
        Action::Data { snapshot } => {
            // A recovery resumed after its own stop: whatever runs now (an admin's start) must
            // not write while the data goes back.
            if !m.ctx.boot
                && m.sys()?.state(&begin.unit)?.active_state
                    != crate::os::systemd::ActiveState::Inactive
            {
                m.sys()?.stop(&begin.unit, s.stop_timeout())?;
            }
            // The data the new version ran on (mail may have arrived meanwhile) is kept.
            let displaced = crate::store::snapshot::Displaced::Keep {
                origin: format!(
                    "the data {} ran on, set aside when transaction {} was rolled back",
                    begin.to, begin.txid
                ),
                version: begin.to.clone(),
            };
            // The live config only adds a consistency check; the targets are the snapshot's.
            let current = server_config(m, begin).ok();
            let restored = m
                .snapshots()
                .restore(snapshot, current.as_ref(), &displaced)?;
            did.push(format!("data restored from snapshot {snapshot}"));
            if let Some(kept) = &restored.kept {
                did.push(format!(
                    "the data {} ran on is kept in snapshot {kept}",
                    begin.to
                ));
            }
            for p in &restored.left_in_place {
                did.push(format!(
                    "the data {} ran on is kept at {} (another file system than the snapshots)",
                    begin.to,
                    p.display()
                ));
            }
            Ok(Some(Noted::Restored {
                snapshot: snapshot.clone(),
            }))
        }
        Action::Cleanup { partial_snapshot } => {
            swap::remove_dir(&begin.staged_dir)?;
            did.push(format!("{} removed", begin.staged_dir.display()));
            if *partial_snapshot {
                m.snapshots().remove_partials()?;
                did.push("the unfinished snapshot removed".into());
            }
            Ok(None)
        }
        Action::Config { snapshot } => {
            if m.snapshots().put_back_config(snapshot)? {
                did.push(format!(
                    "{} was missing: put back from snapshot {snapshot}",
                    begin.server_config.display()
                ));
            }
            Ok(None)
        }
        Action::Start => {
            let cfg = server_config(m, begin).ok();
            // The old version, on its listeners of before the transaction.
            let expect =
                health::Expect::normal(s, cfg.as_ref(), &begin.from, begin.listeners.clone())
                    .running_bytes(&begin.old_sha256);
            // Its own bound (issue #25): the old version may have a migration-free but slow
            // start on a restored store, and a false "could not be undone" pages the admin.
            let mut patient = s.clone();
            patient.timeouts.ready_secs = s.timeouts.undo_ready_secs.max(s.timeouts.ready_secs);
            let attempts = s.timeouts.undo_start_attempts.max(1);
            let mut attempt = 1;
            loop {
                let r = m
                    .sys()?
                    .start_fresh(&begin.unit, s.start_timeout())
                    .map_err(Error::from)
                    .and_then(|()| Ok(health::gate(m.sys()?, &patient, cfg.as_ref(), &expect)?));
                match r {
                    Ok(_) => break,
                    // A signal is the admin's, not the server's: no second try.
                    Err(Error::Health(e @ health::HealthError::Interrupted { .. })) => {
                        return Err(Error::Health(e))
                    }
                    Err(e) if attempt < attempts => {
                        tracing::warn!(unit = %begin.unit, attempt, "{} did not come up ({e}); starting it again", begin.from);
                        did.push(format!(
                            "start {attempt} of {} failed ({e}), tried again",
                            begin.from
                        ));
                        // What RestartSec= gives a crashing unit before its next start.
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            did.push(format!("{} started and healthy", begin.from));
            Ok(None)
        }
        Action::LeaveForBoot => Ok(None),
    }
}

fn release_path(m: &Resources, v: &Version) -> std::path::PathBuf {
    m.state.release_binary(v)
}

/// Puts the system back to where it was before the transaction. Every action checks the actual
/// state first, so running this again after a kill at any point converges on the same result.
/// `blame_version`: record the target version as failed (not retried automatically). False when
/// the helper was merely interrupted: that says nothing about the release.
pub fn roll_back(
    m: &Resources,
    j: &mut Journal,
    sum: &Summary,
    reason: &str,
    blame_version: bool,
) -> Result<Report, Error> {
    let begin = sum
        .begin
        .clone()
        .ok_or_else(|| Error::Preflight("journal without a begin record".into()))?;
    if sum.abort.is_none() {
        j.append(crate::engine::journal::Record::Abort {
            at: crate::os::clock::now_ms(),
            reason: reason.into(),
        })?;
    }
    let reason = sum.abort.clone().unwrap_or_else(|| reason.to_string());
    tracing::warn!(unit = %begin.unit, from = %begin.from, to = %begin.to, "rolling back: {reason}");
    let headline = format!("{} FAILED: {reason}", title(&begin));
    let mut did = Vec::new();
    match execute(m, j, sum, &begin, &mut did) {
        Ok(()) => {
            let message = format!(
                "{headline}\nRolled back: {did}.\n{next}",
                did = did.join("; "),
                next = match begin.kind {
                    TxKind::Upgrade if blame_version => format!(
                        "{to} will not be retried automatically. Read `stalwart-upgrade history` and `journalctl -u {unit}`, then retry with `stalwart-upgrade upgrade --to PATH --retry` or by reinstalling the package.",
                        to = begin.to,
                        unit = begin.unit
                    ),
                    TxKind::Upgrade if !sum.started(Step::Stop) => format!(
                        "{unit} was not stopped by this attempt. Fix the cause named above, then run the upgrade again (`stalwart-upgrade upgrade --to PATH`, or reinstall the package).",
                        unit = begin.unit
                    ),
                    TxKind::Upgrade => format!(
                        "The upgrade was interrupted, which says nothing against {to}: run it again with `stalwart-upgrade upgrade --to PATH` or by reinstalling the package.",
                        to = begin.to
                    ),
                    TxKind::Rollback => "Nothing else to do; `stalwart-upgrade status` shows the state.".into(),
                    TxKind::Restore => "The live data is as it was before the restore; nothing else to do (`stalwart-upgrade status` shows the state).".into(),
                }
            );
            // The server is back: from here on a failure to write (a full disk) must not hide
            // that, only add what it means. The marker goes first: a kill before the close
            // repeats this rollback, which writes it again.
            let mut warnings = Vec::new();
            if begin.kind == TxKind::Upgrade && blame_version {
                if let Err(e) = m.state.set_failed(&FailedUpgrade {
                    version: begin.to.clone(),
                    from: begin.from.clone(),
                    txid: begin.txid.clone(),
                    reason: reason.clone(),
                    at: crate::os::clock::now_secs(),
                }) {
                    warnings.push(Warning::FailureNotRecorded {
                        version: begin.to.to_string(),
                        error: e.to_string(),
                    });
                }
            }
            if let Err(e) = close(m, j, &begin, sum, Ending::RolledBack, &message, &warnings) {
                warnings.push(Warning::JournalNotClosed {
                    path: j.path().to_owned(),
                    error: e.to_string(),
                    rolled_back: true,
                    unit: begin.unit.clone(),
                });
            }
            tracing::error!(unit = %begin.unit, from = %begin.from, to = %begin.to, outcome = "rolled_back", "{message}");
            Ok(report(
                &begin,
                sum,
                Outcome::RolledBack {
                    reason,
                    before_stop: !sum.started(Step::Stop),
                },
                message,
                warnings,
            ))
        }
        Err(e) => {
            let message = format!(
                "{headline}\nThe rollback failed too: {e}\nDone so far: {did}.\nThe journal {journal} is kept: fix the cause named above, then run `stalwart-upgrade recover` (it continues the rollback).",
                did = if did.is_empty() { "nothing".into() } else { did.join("; ") },
                journal = j.path().display(),
            );
            tracing::error!(unit = %begin.unit, from = %begin.from, to = %begin.to, outcome = "failed", "{message}");
            // The alert an unattended admin needs most (issue #25): the journal stays open for
            // `recover`, so no end record is written, but the ending is announced all the same.
            crate::engine::announce::ended(
                &begin.unit,
                &begin.txid,
                &begin.from.to_string(),
                &begin.to.to_string(),
                Ending::Failed,
                &message,
            );
            Ok(report(
                &begin,
                sum,
                Outcome::Failed {
                    reason: format!("{reason}; rollback: {e}"),
                },
                message,
                Vec::new(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::journal::Record;
    use crate::server::version::Class;

    fn begin(kind: TxKind, class: Class, restore_data: bool, was_active: bool) -> Begin {
        Begin {
            txid: "t".into(),
            seq: 1,
            kind,
            unit: "stalwart.service".into(),
            from: "0.15.5".parse().unwrap(),
            to: "0.16.18".parse().unwrap(),
            class,
            was_active,
            bin_dir: "/opt/stalwart/bin".into(),
            staged_dir: "/opt/stalwart/bin.new".into(),
            old_sha256: "a".repeat(64),
            new_sha256: "b".repeat(64),
            restore_data,
            restore_from: None,
            server_config: "/opt/stalwart/etc/config.toml".into(),
            listeners: vec![],
        }
    }

    /// Every prefix of `steps` (each step started, then done), as the journal has it.
    fn prefixes(b: &Begin, steps: &[Step]) -> Vec<(String, Summary)> {
        let mut recs = vec![Record::Begin {
            at: 0,
            mono: None,
            format: 1,
            begin: Box::new(b.clone()),
        }];
        let mut out = vec![("begin".to_string(), Summary::of(&recs))];
        for s in steps {
            for phase in [Phase::Started, Phase::Done] {
                let note = (*s == Step::Snapshot && phase == Phase::Done).then(|| {
                    crate::engine::journal::Note::from(Noted::Snapshot {
                        id: "snap-1".into(),
                    })
                });
                recs.push(Record::Step {
                    at: 1,
                    mono: None,
                    step: *s,
                    phase,
                    note,
                });
                out.push((format!("{s}:{phase:?}"), Summary::of(&recs)));
            }
        }
        out
    }

    fn position(plan: &[Action], f: impl Fn(&Action) -> bool) -> Option<usize> {
        plan.iter().position(f)
    }

    /// The invariants the crash matrix checks by effect, over every prefix of the upgrade, the
    /// crossing and the rollback, in boot and normal recovery.
    #[test]
    fn every_journal_prefix_gives_a_complete_ordered_plan() {
        use Step::*;
        // The flows' own step lists: a step added to a flow is covered here without an edit.
        use crate::flows::{rollback, upgrade};
        let lists: Vec<(Begin, &[Step])> = vec![
            (
                begin(TxKind::Upgrade, Class::Patch, false, true),
                upgrade::STEPS,
            ),
            (
                begin(TxKind::Upgrade, Class::Minor, true, true),
                upgrade::STEPS,
            ),
            (
                begin(TxKind::Upgrade, Class::Minor, true, true),
                upgrade::CROSSING_STEPS,
            ),
            (
                begin(TxKind::Rollback, Class::Downgrade, true, true),
                rollback::STEPS,
            ),
            (
                begin(TxKind::Restore, Class::Same, true, true),
                crate::flows::restore::STEPS,
            ),
            (
                begin(TxKind::Upgrade, Class::Minor, true, false),
                upgrade::STEPS,
            ),
        ];
        for (b, steps) in &lists {
            for (at, sum) in prefixes(b, steps) {
                for boot in [false, true] {
                    let plan = plan(&sum, b, boot).unwrap();
                    let ctx = format!("{:?} {:?} at {at}, boot {boot}: {plan:?}", b.kind, steps);
                    let new_ran = sum.started(Start) || sum.started(Migrate);
                    assert_eq!(plan.contains(&Action::Stop), new_ran && !boot, "{ctx}");
                    assert_eq!(plan.contains(&Action::Binary), sum.started(Swap), "{ctx}");
                    assert_eq!(
                        plan.contains(&Action::Crossing),
                        sum.started(Crossing),
                        "{ctx}"
                    );
                    assert_eq!(
                        plan.contains(&Action::CrossingBack),
                        sum.started(CrossingBack),
                        "{ctx}"
                    );
                    let data = b.restore_data && (new_ran || sum.started(Restore));
                    assert_eq!(
                        plan.iter().any(
                            |a| matches!(a, Action::Data { snapshot } if snapshot == "snap-1")
                        ),
                        data,
                        "{ctx}"
                    );
                    let back_up = b.was_active && sum.started(Stop);
                    assert_eq!(plan.contains(&Action::Start), back_up && !boot, "{ctx}");
                    assert_eq!(
                        plan.contains(&Action::LeaveForBoot),
                        back_up && boot,
                        "{ctx}"
                    );
                    assert!(
                        plan.iter().any(|a| matches!(a, Action::Cleanup { .. })),
                        "{ctx}"
                    );
                    // Stop first; the binary and configs before the data; the start last.
                    let order = [
                        position(&plan, |a| *a == Action::Stop),
                        position(&plan, |a| *a == Action::Binary),
                        position(&plan, |a| {
                            matches!(a, Action::Crossing | Action::CrossingBack)
                        }),
                        position(&plan, |a| matches!(a, Action::Data { .. })),
                        position(&plan, |a| matches!(a, Action::Cleanup { .. })),
                        position(&plan, |a| matches!(a, Action::Config { .. })),
                        position(&plan, |a| matches!(a, Action::Start | Action::LeaveForBoot)),
                    ];
                    let present: Vec<usize> = order.iter().flatten().copied().collect();
                    assert!(present.windows(2).all(|w| w[0] < w[1]), "{ctx}");
                    if back_up && !boot {
                        assert_eq!(plan.last(), Some(&Action::Start), "{ctx}");
                    }
                }
            }
        }
    }

    #[test]
    fn moved_data_without_a_finished_snapshot_is_an_error_not_a_silent_skip() {
        let b = begin(TxKind::Upgrade, Class::Minor, true, true);
        let recs = vec![
            Record::Begin {
                at: 0,
                mono: None,
                format: 1,
                begin: Box::new(b.clone()),
            },
            Record::Step {
                at: 1,
                mono: None,
                step: Step::Start,
                phase: Phase::Started,
                note: None,
            },
        ];
        assert!(plan(&Summary::of(&recs), &b, false).is_err());
    }
}
