//! The transaction engine: each step is journaled (fsync'd) before and after it runs, a failed step
//! triggers the undo of everything the journal says was started, and `recover` finishes or undoes
//! a transaction whose helper was killed at any point.
//!
//! Modelled on rustup's `dist/component/transaction.rs` (every change recorded with its undo, rolled
//! back unless committed), but the record is on disk so the undo survives a crash. The rule for a
//! killed transaction is deterministic: before `health` was done it is undone (the old version
//! runs), after it the transaction is finished (the new version runs).

use crate::config::Settings;
use crate::engine::ending::{close, report, Outcome, Report};
use crate::engine::journal::{Begin, Ending, Journal, Phase, Step, Summary};
use crate::engine::resources::Resources;
use crate::server::version::Version;
use crate::store::state::StateDir;
use crate::{server::health, Context, Error};
use serde::Serialize;

/// Takes the state dir's lock, finishes or undoes an interrupted transaction, then runs `f`
/// (upgrade, rollback). A recovery that leaves the server needing an admin is the answer
/// instead: nothing new starts on top of it.
pub fn after_recovery(
    ctx: &Context,
    f: impl FnOnce(&Resources, RecoverReport) -> Result<Report, Error>,
) -> Result<Report, Error> {
    locked(ctx, |m| match recover_locked(m)? {
        RecoverReport::Failed { report } => Ok(report),
        recovered => f(m, recovered),
    })
}

/// Runs `f` with the state dir's lock held (waiting for it at most `lock_wait_secs`).
pub fn locked<T>(
    ctx: &Context,
    f: impl FnOnce(&Resources) -> Result<T, Error>,
) -> Result<T, Error> {
    let state = StateDir::open(&ctx.settings.state_dir)?;
    let _lock = state.lock(std::time::Duration::from_secs(
        ctx.settings.timeouts.lock_wait_secs,
    ))?;
    f(&Resources::new(ctx, &state))
}

/// A running transaction. Dropping it without `commit` or `abort` leaves the journal open, which is
/// exactly what a crash leaves: `recover` then decides.
pub struct Transaction<'m, 'a> {
    m: &'m Resources<'a>,
    journal: Journal,
    begin: Begin,
    failed_step: Option<Step>,
    /// The steps the flow declared, in order (a flow may skip some, never add or reorder one:
    /// the crash matrix and the undo's tests are generated from these lists).
    steps: &'static [Step],
    /// How far into `steps` the transaction is.
    next: usize,
    /// Committed or aborted: nothing left for the panic backstop in `Drop`.
    closed: bool,
    _signals: crate::os::signals::Held,
}

impl<'m, 'a> Transaction<'m, 'a> {
    /// Opens the journal of a transaction that runs `steps` (the flow's exported list).
    pub fn begin(
        m: &'m Resources<'a>,
        mut begin: Begin,
        steps: &'static [Step],
    ) -> Result<Self, Error> {
        begin.seq = crate::engine::history::next_seq(m.state)?;
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
            steps,
            next: 0,
            closed: false,
            _signals: crate::os::signals::hold(),
        })
    }

    pub fn machine(&self) -> &'m Resources<'a> {
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
        f: impl FnOnce(
            &Resources<'a>,
            &Begin,
        ) -> Result<(T, Option<crate::engine::journal::Noted>), Error>,
    ) -> Result<T, Error> {
        if let Some(sig) = crate::os::signals::received() {
            tracing::warn!(unit = %self.begin.unit, "{sig} received: rolling back before step {step}");
            return Err(Error::Interrupted {
                signal: sig.to_string(),
                step: step.as_str().into(),
            });
        }
        let Some(at) = self.steps[self.next..].iter().position(|s| *s == step) else {
            return Err(Error::Bug(format!(
                "step {step} is not in its flow's step list {:?} after {:?}",
                self.steps,
                &self.steps[..self.next]
            )));
        };
        self.next += at + 1;
        self.journal.step(step, Phase::Started, None)?;
        tracing::info!(unit = %self.begin.unit, step = step.as_str(), "step {step} started");
        match f(self.m, &self.begin) {
            Ok((v, note)) => {
                self.journal.step(step, Phase::Done, note.map(Into::into))?;
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
        // An interruption says nothing against the release.
        let blameless = matches!(err, Error::Interrupted { .. })
            || matches!(err, Error::Health(health::HealthError::Interrupted { .. }));
        self.undo_now(&reason, !blameless)
    }

    fn undo_now(&mut self, reason: &str, may_blame: bool) -> Result<Report, Error> {
        self.closed = true;
        crate::os::signals::undoing();
        let records = Journal::read(self.journal.path())?.unwrap_or_default();
        let sum = Summary::of(&records);
        // An attempt that took the server down is not repeated unattended (no second outage
        // without the admin); one that failed before the stop (staging) changed nothing.
        let blame = may_blame && sum.started(Step::Stop);
        crate::engine::undo::roll_back(self.m, &mut self.journal, &sum, reason, blame)
    }

    /// Past the health gate: hashes the snapshot, refreshes the web admin, commits.
    pub fn commit(mut self) -> Result<Report, Error> {
        self.closed = true;
        let records = Journal::read(self.journal.path())?.unwrap_or_default();
        crate::engine::commit::finish(self.m, &mut self.journal, &Summary::of(&records))
    }
}

/// The backstop for a panic inside a transaction: the undo runs from the journal, as `recover`
/// would (the journal stays authoritative: a panic during this undo leaves it for `recover`).
impl Drop for Transaction<'_, '_> {
    fn drop(&mut self) {
        if !self.closed && std::thread::panicking() {
            tracing::error!(unit = %self.begin.unit, "the helper panicked inside the transaction: rolling back");
            let r = self.undo_now("the helper panicked (a bug: please report it with `stalwart-upgrade history --json`)", false);
            match r {
                Ok(report) => eprintln!("{}", report.message),
                Err(e) => eprintln!(
                    "rolling back after a panic failed: {e}; run `stalwart-upgrade recover`"
                ),
            }
        }
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

/// May the server's unit start now? (`stalwart-upgrade start-check`, the packaged unit's
/// `ExecCondition=`, issue #25.) Not while a transaction is open that nobody works on (a boot
/// recovery that could not finish, a helper killed mid-undo, and a reboot that dropped the
/// runtime hold since): the old binary could start on data an undo left half-restored, or on
/// the new schema, and crash-loop. A transaction a helper runs now (it holds the lock: its own
/// start) or one past its health gate (the new version is healthy) lets it start. Err says why
/// not and what to run.
pub fn start_check(settings: &Settings) -> Result<(), String> {
    let Ok(state) = StateDir::open(&settings.state_dir) else {
        return Ok(());
    };
    let path = state.journal_path();
    if !path.exists() {
        return Ok(());
    }
    // A helper at work holds the lock: its own start (or its undo's) goes ahead.
    let Ok(_lock) = state.lock(std::time::Duration::ZERO) else {
        return Ok(());
    };
    let records = match Journal::read_open(&path, &state.damaged_dir()) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(e) => {
            return Err(format!(
                "{e}; {} is not started until that is resolved",
                settings.unit
            ))
        }
    };
    let sum = Summary::of(&records);
    if sum.done(Step::Health) || sum.end.is_some() || !sum.started(Step::Stop) {
        return Ok(());
    }
    Err(format!(
        "an interrupted transaction ({}) left {} unfinished, so {} is not started on data it may have left half-restored: run `stalwart-upgrade recover` (it finishes or undoes it and starts the server), then see `stalwart-upgrade status`",
        path.display(),
        sum.begin
            .as_ref()
            .map(|b| format!("{} -> {}", b.from, b.to))
            .unwrap_or_else(|| "a transaction".into()),
        settings.unit
    ))
}

/// Finishes or undoes an interrupted transaction. Takes the lock; idempotent.
pub fn recover(ctx: &Context) -> Result<RecoverReport, Error> {
    locked(ctx, recover_locked)
}

/// `recover` for callers that already hold the lock (upgrade, rollback, hooks).
pub fn recover_locked(m: &Resources) -> Result<RecoverReport, Error> {
    let path = m.state.journal_path();
    // Damage before the last line refuses (with what to do); a torn last line is not a record,
    // and `Journal::open` below cuts it off before anything is appended.
    let Some(records) = Journal::read_open(&path, &m.state.damaged_dir())? else {
        return Ok(RecoverReport::Nothing);
    };
    let sum = Summary::of(&records);
    let Some(begin) = sum.begin.clone() else {
        // Killed while writing the first record: nothing was changed.
        std::fs::remove_file(&path).map_err(|source| crate::engine::journal::JournalError::Io {
            path: path.clone(),
            source,
        })?;
        return Ok(RecoverReport::Nothing);
    };
    let mut j = Journal::open(&path)?;
    if let Some((ending, message)) = &sum.end {
        // Killed after the End record but before the journal moved into history.
        close(m, &mut j, &begin, &sum, *ending, message, &[])?;
        let outcome = match ending {
            Ending::Committed => Outcome::Committed,
            Ending::RolledBack => Outcome::RolledBack {
                reason: message.clone(),
                before_stop: !sum.started(Step::Stop),
            },
            Ending::Failed => Outcome::Failed {
                reason: message.clone(),
            },
        };
        let r = report(
            &begin,
            &sum,
            outcome,
            message.clone(),
            sum.end_warnings.clone(),
        );
        return Ok(match ending {
            Ending::Committed => RecoverReport::Finished { report: r },
            _ => RecoverReport::RolledBack { report: r },
        });
    }
    tracing::warn!(unit = %begin.unit, txid = %begin.txid, "recovering an interrupted transaction {} -> {}", begin.from, begin.to);
    if sum.abort.is_none() && sum.done(Step::Health) {
        return Ok(RecoverReport::Finished {
            report: crate::engine::commit::finish(m, &mut j, &sum)?,
        });
    }
    let last = sum
        .last_started()
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "begin".into());
    let reason = format!("the helper was interrupted during step {last}");
    // A rollback that had already begun was caused by a real failure of the release.
    let report = crate::engine::undo::roll_back(m, &mut j, &sum, &reason, sum.abort.is_some())?;
    Ok(match report.outcome {
        Outcome::Failed { .. } => RecoverReport::Failed { report },
        _ => RecoverReport::RolledBack { report },
    })
}

/// Unique, sortable transaction id.
pub fn new_txid(from: &Version, to: &Version) -> String {
    let ms = crate::os::clock::now_ms();
    format!("{ms}-{from}-to-{to}")
}
