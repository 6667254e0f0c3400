//! The transaction engine: each step is journaled (fsync'd) before and after it runs, a failed step
//! triggers the undo of everything the journal says was started, and `recover` finishes or undoes
//! a transaction whose helper was killed at any point.
//!
//! Modelled on rustup's `dist/component/transaction.rs` (every change recorded with its undo, rolled
//! back unless committed), but the record is on disk so the undo survives a crash. The rule for a
//! killed transaction is deterministic: before `health` was done it is undone (the old version
//! runs), after it the transaction is finished (the new version runs).

use crate::config::Settings;
use crate::journal::{Begin, Ending, Journal, Phase, Step, Summary, TxKind, Undo};
use crate::serverconfig::ServerConfig;
use crate::snapshot::Snapshots;
use crate::state::{FailedUpgrade, StateDir};
use crate::systemd::Systemd;
use crate::version::{Class, Version};
use crate::{health, swap, webadmin, Context, Error};
use serde::Serialize;
use std::cell::OnceCell;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Committed,
    /// The old version runs healthy again.
    RolledBack {
        reason: String,
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
    pub warnings: Vec<String>,
    /// Plain-words account for the admin.
    pub message: String,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Committed | Outcome::NothingToDo => crate::exit::OK,
            Outcome::RolledBack { .. } => crate::exit::ROLLED_BACK,
            Outcome::Failed { .. } => crate::exit::BROKEN,
        }
    }
}

/// The resources steps act on: settings, state dir, and a D-Bus connection made on first use.
pub struct Machine<'a> {
    pub ctx: &'a Context,
    pub state: &'a StateDir,
    sys: OnceCell<Systemd>,
}

impl<'a> Machine<'a> {
    pub fn new(ctx: &'a Context, state: &'a StateDir) -> Machine<'a> {
        Machine {
            ctx,
            state,
            sys: OnceCell::new(),
        }
    }
    pub fn settings(&self) -> &Settings {
        &self.ctx.settings
    }
    pub fn sys(&self) -> Result<&Systemd, Error> {
        if let Some(s) = self.sys.get() {
            return Ok(s);
        }
        let s = Systemd::connect()?;
        Ok(self.sys.get_or_init(|| s))
    }
    pub fn snapshots(&self) -> Snapshots {
        Snapshots::new(&self.settings().snapshot_dir())
    }
}

/// A running transaction. Dropping it without `commit` or `abort` leaves the journal open, which is
/// exactly what a crash leaves: `recover` then decides.
pub struct Transaction<'m, 'a> {
    m: &'m Machine<'a>,
    journal: Journal,
    begin: Begin,
    failed_step: Option<Step>,
}

impl<'m, 'a> Transaction<'m, 'a> {
    pub fn begin(m: &'m Machine<'a>, mut begin: Begin) -> Result<Self, Error> {
        begin.seq = crate::history::next_seq(m.state)?;
        let journal = Journal::create(&m.state.journal_path(), begin.clone())?;
        tracing::info!(
            unit = %begin.unit, from = %begin.from, to = %begin.to, txid = %begin.txid,
            "{:?} {} -> {} ({}) begins", begin.kind, begin.from, begin.to, begin.class
        );
        Ok(Transaction {
            m,
            journal,
            begin,
            failed_step: None,
        })
    }

    pub fn machine(&self) -> &'m Machine<'a> {
        self.m
    }
    pub fn begin_record(&self) -> &Begin {
        &self.begin
    }

    /// Runs one step between its two journal records. The closure returns a note to journal with
    /// the Done record (e.g. the snapshot id), which undo and history read back.
    pub fn step<T>(
        &mut self,
        step: Step,
        f: impl FnOnce(&Machine<'a>, &Begin) -> Result<(T, Option<String>), Error>,
    ) -> Result<T, Error> {
        self.journal.step(step, Phase::Started, None)?;
        tracing::info!(unit = %self.begin.unit, step = step.as_str(), "step {step} started");
        match f(self.m, &self.begin) {
            Ok((v, note)) => {
                self.journal.step(step, Phase::Done, note)?;
                Ok(v)
            }
            Err(e) => {
                self.failed_step = Some(step);
                tracing::error!(unit = %self.begin.unit, step = step.as_str(), "step {step} failed: {e}");
                Err(e)
            }
        }
    }

    /// Undoes everything started, from the journal's own record, and closes the transaction.
    pub fn abort(mut self, err: &Error) -> Result<Report, Error> {
        let at = self
            .failed_step
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default();
        let reason = format!("{}{at}: {err}", self.begin.to);
        let records = Journal::read(self.journal.path())?.unwrap_or_default();
        let sum = Summary::of(&records);
        // An attempt that took the server down is not repeated unattended (no second outage
        // without the admin); one that failed before the stop (staging) changed nothing.
        let blame = sum.started(Step::Stop);
        roll_back(self.m, &mut self.journal, &sum, &reason, blame)
    }

    /// Past the health gate: hashes the snapshot, refreshes the web admin, commits.
    pub fn commit(mut self) -> Result<Report, Error> {
        let records = Journal::read(self.journal.path())?.unwrap_or_default();
        finish(self.m, &mut self.journal, &Summary::of(&records))
    }
}

/// Loads the server config named in the journal (the one in use when the transaction began).
fn server_config(begin: &Begin) -> Result<ServerConfig, Error> {
    Ok(ServerConfig::load(&begin.server_config)?)
}

fn release_path(m: &Machine, v: &Version) -> std::path::PathBuf {
    m.state.release_binary(v)
}

/// Runs one undo action between journal records.
fn undo(
    j: &mut Journal,
    which: Undo,
    f: impl FnOnce() -> Result<Option<String>, Error>,
) -> Result<(), Error> {
    j.undo(which, Phase::Started, None)?;
    let note = f()?;
    j.undo(which, Phase::Done, note)?;
    Ok(())
}

/// Puts the system back to where it was before the transaction. Every action checks the actual
/// state first, so running this again after a kill at any point converges on the same result.
/// `blame_version`: record the target version as failed (not retried automatically). False when
/// the helper was merely interrupted: that says nothing about the release.
pub fn roll_back(
    m: &Machine,
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
        j.append(crate::journal::Record::Abort {
            at: crate::state::now_ms(),
            reason: reason.into(),
        })?;
    }
    let reason = sum.abort.clone().unwrap_or_else(|| reason.to_string());
    tracing::warn!(unit = %begin.unit, from = %begin.from, to = %begin.to, "rolling back: {reason}");
    let headline = format!("{} FAILED: {reason}", title(&begin));
    let mut did = Vec::new();
    match undo_actions(m, j, sum, &begin, &mut did) {
        Ok(()) => {
            let mut message = format!(
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
                }
            );
            // The server is back: from here on a failure to write (a full disk) must not hide
            // that, only add what it means. The marker goes first: a kill before the close
            // repeats this rollback, which writes it again.
            if begin.kind == TxKind::Upgrade && blame_version {
                if let Err(e) = m.state.set_failed(&FailedUpgrade {
                    version: begin.to.clone(),
                    from: begin.from.clone(),
                    txid: begin.txid.clone(),
                    reason: reason.clone(),
                    at: crate::state::now(),
                }) {
                    message += &format!(
                        "\nWARNING: {to} could not be recorded as failed ({e}), so an unattended run may try it again; free space there, or hold the package (`stalwart-upgrade hold`).",
                        to = begin.to
                    );
                }
            }
            if let Err(e) = close(m, j, &begin, sum, Ending::RolledBack, &message) {
                message += &format!(
                    "\nWARNING: the journal {journal} could not be closed ({e}); free space there, then run `stalwart-upgrade recover` to close it (it checks each undo again, and may restart {unit} once).",
                    journal = j.path().display(),
                    unit = begin.unit
                );
            }
            tracing::error!(unit = %begin.unit, from = %begin.from, to = %begin.to, outcome = "rolled_back", "{message}");
            Ok(report(
                &begin,
                sum,
                Outcome::RolledBack { reason },
                message,
                Vec::new(),
            ))
        }
        Err(e) => {
            let message = format!(
                "{headline}\nThe rollback failed too: {e}\nDone so far: {did}.\nThe journal {journal} is kept: fix the cause named above, then run `stalwart-upgrade recover` (it continues the rollback).",
                did = if did.is_empty() { "nothing".into() } else { did.join("; ") },
                journal = j.path().display(),
            );
            tracing::error!(unit = %begin.unit, from = %begin.from, to = %begin.to, outcome = "failed", "{message}");
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

/// "Upgrade of stalwart.service from 0.15.5 to 0.15.6": how every closing message starts.
fn title(begin: &Begin) -> String {
    let kind = match begin.kind {
        TxKind::Upgrade => "Upgrade",
        TxKind::Rollback => "Rollback",
    };
    format!(
        "{kind} of {} from {} to {}",
        begin.unit, begin.from, begin.to
    )
}

fn undo_actions(
    m: &Machine,
    j: &mut Journal,
    sum: &Summary,
    begin: &Begin,
    did: &mut Vec<String>,
) -> Result<(), Error> {
    let boot = m.ctx.boot;
    let s = m.settings();
    // Only a started Start can have left the new version running. A Stop that failed (the unit
    // would not stop) left the old binary and data untouched: stopping again would only repeat
    // the failure; starting (below) replaces the pending stop job.
    if (sum.started(Step::Start) || sum.started(Step::Migrate)) && !boot {
        undo(j, Undo::Stop, || {
            m.sys()?.stop(&begin.unit, s.stop_timeout())?;
            Ok(None)
        })?;
        did.push(format!("{} stopped", begin.unit));
    }
    if sum.started(Step::Swap) {
        let release = release_path(m, &begin.from);
        undo(j, Undo::Binary, || {
            let r = swap::ensure_binary(
                &begin.bin_dir,
                &begin.staged_dir,
                &release,
                &begin.old_sha256,
                &begin.from,
            )?;
            Ok(Some(format!("{r:?}")))
        })?;
        did.push(format!(
            "{} binary back in {}",
            begin.from,
            begin.bin_dir.display()
        ));
    }
    if sum.started(Step::GenerationBack) {
        // Before the data: the data undo reads the store from config.json.
        let aside = crate::generation::aside_dir(m.state, &begin.txid);
        undo(j, Undo::GenerationBack, || {
            crate::generation::put_back(m.settings(), m.sys()?, &aside)?;
            Ok(None)
        })?;
        did.push("config.json and the unit drop-in of the 0.16 line put back".into());
    }
    if sum.started(Step::Generation) {
        undo(j, Undo::Generation, || {
            crate::carry::unpin_admin(s, &crate::carry::dir(m.state, &begin.txid))?;
            crate::generation::undo(m.settings(), m.sys()?)?;
            Ok(None)
        })?;
        did.push("config.json, stalwart.env's carried admin and the unit drop-in of the 0.16 line removed (config.toml was never changed)".into());
    }
    let data_moved =
        sum.started(Step::Start) || sum.started(Step::Restore) || sum.started(Step::Migrate);
    if begin.restore_data && data_moved {
        let id = sum
            .note(Step::Snapshot)
            .filter(|_| sum.done(Step::Snapshot))
            .ok_or_else(|| {
                Error::Preflight(
                    "the data may have moved but the journal names no finished snapshot".into(),
                )
            })?
            .to_string();
        let mut restored = crate::snapshot::Restored::default();
        undo(j, Undo::Data, || {
            // The data the new version ran on (mail may have arrived meanwhile) is kept.
            let displaced = crate::snapshot::Displaced::Keep {
                origin: format!(
                    "the data {} ran on, set aside when transaction {} was rolled back",
                    begin.to, begin.txid
                ),
                version: begin.to.clone(),
            };
            // The live config only adds a consistency check; the targets are the snapshot's.
            let current = server_config(begin).ok();
            restored = m.snapshots().restore(&id, current.as_ref(), &displaced)?;
            Ok(Some(id.clone()))
        })?;
        did.push(format!("data restored from snapshot {id}"));
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
    } else if !begin.restore_data && sum.started(Step::Snapshot) {
        did.push(format!(
            "data kept ({} change: the schema does not move)",
            begin.class
        ));
    }
    let partial_snapshot = sum.started(Step::Snapshot) && !sum.done(Step::Snapshot);
    undo(j, Undo::Cleanup, || {
        swap::remove_dir(&begin.staged_dir)?;
        if partial_snapshot {
            m.snapshots().remove_partials()?;
        }
        Ok(None)
    })?;
    if sum.started(Step::Stage) {
        did.push(format!("{} removed", begin.staged_dir.display()));
    }
    if partial_snapshot {
        did.push("the unfinished snapshot removed".into());
    }
    if begin.was_active && sum.started(Step::Stop) {
        if boot {
            did.push(format!(
                "{} left for systemd to start after boot-time recovery",
                begin.unit
            ));
        } else {
            if let Some(id) = sum
                .note(Step::Snapshot)
                .filter(|_| sum.done(Step::Snapshot))
            {
                let mut put_back = false;
                undo(j, Undo::Config, || {
                    put_back = m.snapshots().put_back_config(id)?;
                    Ok(None)
                })?;
                if put_back {
                    did.push(format!(
                        "{} was missing: put back from snapshot {id}",
                        begin.server_config.display()
                    ));
                }
            }
            undo(j, Undo::Start, || {
                crate::upgrade::start_fresh(m, &begin.unit)?;
                let cfg = server_config(begin).ok();
                // The old version, on its listeners of before the transaction.
                let expect =
                    health::Expect::normal(s, cfg.as_ref(), &begin.from, begin.listeners.clone());
                health::gate(m.sys()?, s, cfg.as_ref(), &expect)?;
                Ok(None)
            })?;
            did.push(format!("{} started and healthy", begin.from));
        }
    }
    Ok(())
}

/// Completes a transaction whose health gate passed: hash the snapshot (off the downtime path),
/// refresh the web admin (reported, not rolled back), then close it as committed.
pub fn finish(m: &Machine, j: &mut Journal, sum: &Summary) -> Result<Report, Error> {
    let begin = sum
        .begin
        .clone()
        .ok_or_else(|| Error::Preflight("journal without a begin record".into()))?;
    let mut warnings = Vec::new();
    if let Some(id) = sum
        .note(Step::Snapshot)
        .filter(|_| sum.done(Step::Snapshot))
    {
        if !sum.done(Step::Verify) {
            j.step(Step::Verify, Phase::Started, None)?;
            match m.snapshots().hash(id) {
                Ok(_) => j.step(Step::Verify, Phase::Done, None)?,
                Err(e) => warnings.push(format!("hashing snapshot {id} failed: {e}")),
            }
        }
    }
    if !m.ctx.boot && !sum.done(Step::Webadmin) && m.settings().webadmin.enabled {
        j.step(Step::Webadmin, Phase::Started, None)?;
        match refresh_webadmin(m, &begin) {
            Ok(()) => j.step(Step::Webadmin, Phase::Done, None)?,
            Err(e) => {
                tracing::warn!(unit = %begin.unit, step = "webadmin", "web admin refresh failed: {e}");
                let hint = match &e {
                    // The crossing carries the 0.15 fallback admin and the accounts over, but
                    // not API keys, and an account's login becomes its full address in 0.16.
                    Error::Webadmin(
                        webadmin::WebadminError::Unauthorized { .. }
                        | webadmin::WebadminError::Forbidden { .. },
                    ) if sum.started(Step::Generation) => format!(
                        " (after crossing to 0.16: API keys are not carried over and accounts log in with their full address; put a 0.16 admin's user:password in {cred} (the 0.15 fallback admin works as it was), then run `stalwart-upgrade webadmin refresh`)",
                        cred = m
                            .settings()
                            .webadmin
                            .credentials_file
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "the [webadmin] credentials_file".into())
                    ),
                    _ => String::new(),
                };
                warnings.push(format!("web admin refresh failed: {e}{hint}"));
            }
        }
    }
    // A rollback that put older data back says where the newer data went (nothing is deleted).
    let data = match (&begin.restore_from, sum.note(Step::Snapshot)) {
        (Some(older), Some(kept)) if begin.kind == TxKind::Rollback => format!(
            "; the data is snapshot {older}'s again, and the data as it was under {from} is kept in snapshot {kept} (`stalwart-upgrade snapshot list`)",
            from = begin.from
        ),
        _ => String::new(),
    };
    let message = format!(
        "{title} ({class}) committed{data}{w}",
        title = title(&begin),
        class = begin.class,
        w = if warnings.is_empty() {
            String::new()
        } else {
            format!("; WARNING: {}", warnings.join("; "))
        }
    );
    // The new version runs healthy: what cannot be written from here on (a full disk) becomes a
    // warning, never an error that would hide it.
    if let Err(e) = close(m, j, &begin, sum, Ending::Committed, &message) {
        warnings.push(format!(
            "the journal {} could not be closed ({e}); free space there, then run `stalwart-upgrade recover`, which only closes it",
            j.path().display()
        ));
    }
    if let Err(e) = m.state.clear_failed() {
        warnings.push(format!("clearing the failure marker failed: {e}"));
    }
    if begin.kind == TxKind::Upgrade {
        if let Err(e) = swap::remove_dir(&begin.staged_dir) {
            warnings.push(format!("removing the staged binary failed: {e}"));
        }
        // The hold follows the new line and the approval that allowed it is used up.
        if m.settings().policy.manage_holds {
            if let Err(e) = crate::policy::after_upgrade(m.settings(), &begin.to) {
                warnings.push(format!(
                    "moving the package hold to {} failed: {e}",
                    begin.to.line()
                ));
            }
        }
    }
    prune(m, sum, &mut warnings);
    tracing::info!(unit = %begin.unit, from = %begin.from, to = %begin.to, outcome = "committed", "{message}");
    Ok(report(&begin, sum, Outcome::Committed, message, warnings))
}

fn refresh_webadmin(m: &Machine, begin: &Begin) -> Result<(), Error> {
    let cfg = ServerConfig::load(&crate::generation::server_config_path(
        m.settings(),
        &begin.to,
    ))?;
    let sys = m.sys()?;
    let pids = unit_pids(sys, &m.settings().unit);
    let endpoint = webadmin::Endpoint::of(m.settings(), Some(&cfg), pids);
    let admin = sys
        .server_env(&m.settings().unit)
        .ok()
        .and_then(|e| e.recovery_admin());
    webadmin::refresh(m.settings(), cfg.generation, &endpoint, admin)?;
    Ok(())
}

/// The pids of the unit's processes (none when systemd cannot say).
pub(crate) fn unit_pids(sys: &crate::systemd::Systemd, unit: &str) -> Vec<u32> {
    sys.unit_processes(unit)
        .map(|v| v.into_iter().map(|(pid, _)| pid).collect())
        .unwrap_or_default()
}

/// Retention: keep the newest `snapshots.keep`, and always the one this transaction took (what a
/// rollback of it restores).
fn prune(m: &Machine, sum: &Summary, warnings: &mut Vec<String>) {
    let protect: Vec<String> = sum
        .note(Step::Snapshot)
        .filter(|_| sum.done(Step::Snapshot))
        .map(String::from)
        .into_iter()
        .collect();
    match m
        .snapshots()
        .prune(m.settings().snapshots.keep, &protect, false)
    {
        Ok(gone) if !gone.is_empty() => {
            let ids: Vec<&str> = gone.iter().map(|g| g.id.as_str()).collect();
            tracing::info!("pruned snapshots {}", ids.join(", "));
        }
        Ok(_) => {}
        Err(e) => warnings.push(format!("pruning old snapshots failed: {e}")),
    }
}

/// Writes the End record and moves the journal into history.
fn close(
    m: &Machine,
    j: &mut Journal,
    begin: &Begin,
    sum: &Summary,
    ending: Ending,
    message: &str,
) -> Result<(), Error> {
    if sum.end.is_none() {
        j.append(crate::journal::Record::End {
            at: crate::state::now_ms(),
            mono: crate::state::mono_stamp(),
            ending,
            message: message.into(),
        })?;
    }
    archive(m.state, &begin.txid)?;
    // What a rollback below 0.16 set aside is in the snapshot it took too (config copy).
    let aside = crate::generation::aside_dir(m.state, &begin.txid);
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
    std::fs::rename(&from, &to).map_err(|source| crate::journal::JournalError::Io {
        path: from.clone(),
        source,
    })?;
    crate::state::fsync_dir(&state.root).map_err(|source| crate::journal::JournalError::Io {
        path: state.root.clone(),
        source,
    })?;
    Ok(())
}

fn report(
    begin: &Begin,
    sum: &Summary,
    outcome: Outcome,
    message: String,
    warnings: Vec<String>,
) -> Report {
    Report {
        txid: begin.txid.clone(),
        kind: begin.kind,
        from: begin.from.clone(),
        to: begin.to.clone(),
        class: begin.class,
        outcome,
        downtime_ms: sum.downtime_ms(),
        snapshot: sum
            .note(Step::Snapshot)
            .filter(|_| sum.done(Step::Snapshot))
            .map(String::from),
        warnings,
        message,
    }
}

/// What `recover` did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecoverReport {
    /// No unfinished transaction.
    Nothing,
    /// The transaction had passed its health gate: finished (new version).
    Finished { report: Report },
    /// Undone (old version).
    RolledBack { report: Report },
    /// The undo could not complete; the journal is kept.
    Failed { report: Report },
}

impl RecoverReport {
    pub fn exit_code(&self) -> i32 {
        match self {
            RecoverReport::Nothing | RecoverReport::Finished { .. } => crate::exit::OK,
            RecoverReport::RolledBack { .. } => crate::exit::OK,
            RecoverReport::Failed { .. } => crate::exit::BROKEN,
        }
    }
}

/// Finishes or undoes an interrupted transaction. Takes the lock; idempotent.
pub fn recover(ctx: &Context) -> Result<RecoverReport, Error> {
    let state = StateDir::open(&ctx.settings.state_dir)?;
    let _lock = state.lock(std::time::Duration::from_secs(
        ctx.settings.timeouts.lock_wait_secs,
    ))?;
    let m = Machine::new(ctx, &state);
    recover_locked(&m)
}

/// `recover` for callers that already hold the lock (upgrade, rollback, hooks).
pub fn recover_locked(m: &Machine) -> Result<RecoverReport, Error> {
    let path = m.state.journal_path();
    let Some(records) = Journal::read(&path)? else {
        return Ok(RecoverReport::Nothing);
    };
    let sum = Summary::of(&records);
    let Some(begin) = sum.begin.clone() else {
        // Killed while writing the first record: nothing was changed.
        std::fs::remove_file(&path).map_err(|source| crate::journal::JournalError::Io {
            path: path.clone(),
            source,
        })?;
        return Ok(RecoverReport::Nothing);
    };
    let mut j = Journal::open(&path)?;
    if let Some((ending, message)) = &sum.end {
        // Killed after the End record but before the journal moved into history.
        close(m, &mut j, &begin, &sum, *ending, message)?;
        let outcome = match ending {
            Ending::Committed => Outcome::Committed,
            Ending::RolledBack => Outcome::RolledBack {
                reason: message.clone(),
            },
            Ending::Failed => Outcome::Failed {
                reason: message.clone(),
            },
        };
        let r = report(&begin, &sum, outcome, message.clone(), Vec::new());
        return Ok(match ending {
            Ending::Committed => RecoverReport::Finished { report: r },
            _ => RecoverReport::RolledBack { report: r },
        });
    }
    tracing::warn!(unit = %begin.unit, txid = %begin.txid, "recovering an interrupted transaction {} -> {}", begin.from, begin.to);
    if sum.abort.is_none() && sum.done(Step::Health) {
        return Ok(RecoverReport::Finished {
            report: finish(m, &mut j, &sum)?,
        });
    }
    let last = sum
        .last_started()
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "begin".into());
    let reason = format!("the helper was interrupted during step {last}");
    // A rollback that had already begun was caused by a real failure of the release.
    let report = roll_back(m, &mut j, &sum, &reason, sum.abort.is_some())?;
    Ok(match report.outcome {
        Outcome::Failed { .. } => RecoverReport::Failed { report },
        _ => RecoverReport::RolledBack { report },
    })
}

/// Unique, sortable transaction id.
pub fn new_txid(from: &Version, to: &Version) -> String {
    let ms = crate::state::now_ms();
    format!("{ms}-{from}-to-{to}")
}
