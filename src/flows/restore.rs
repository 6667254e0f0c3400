//! `stalwart-upgrade snapshot restore ID`: a snapshot's data put back as a transaction of its
//! own (issue #24), so that a failure or a kill half-way never leaves the server on
//! half-restored data: stop (held), a snapshot of the live data, the restore, start, the gate.
//! A failure is undone (the live data back from the snapshot just taken, the server started);
//! a kill is finished or undone by `recover`, as for an upgrade. The live data the restore
//! replaced is kept, set aside, until the admin removes it by name.

use crate::engine::ending::Report;
use crate::engine::journal::{Begin, Noted, Step, TxKind};
use crate::engine::resources::Resources;
use crate::engine::transaction::Transaction;
use crate::flows::plan::{check_env, Change, Current};
use crate::flows::rollback;
use crate::server::version::{classify, Class};
use crate::store::snapshot::PreHash;
use crate::{flows::steps, Context, Error};

/// What the admin asked for.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The snapshot to put back.
    pub id: String,
    /// Stop a running server for it (and start it again after).
    pub stop: bool,
}

pub fn run(ctx: &Context, req: &RestoreRequest) -> Result<Report, Error> {
    crate::flows::after_recovery(ctx, |m| run_recovered(m, req))
}

/// A restore's steps: no binary changes, so no stage and no swap; a server that was stopped
/// ends after the restore.
pub const STEPS: &[Step] = &[
    Step::Stop,
    Step::Snapshot,
    Step::Restore,
    Step::Start,
    Step::Health,
];

/// What a restore would do: the server as it is, and the snapshot to put back.
pub struct Plan {
    pub current: Current,
    pub id: String,
}

impl Plan {
    /// A restore changes no binary: `to` is the running version, and its undo puts the live
    /// data back from the snapshot it takes first.
    fn begin(&self, ctx: &Context) -> Begin {
        self.current.begin(
            ctx,
            Change {
                kind: TxKind::Restore,
                to: &self.current.from,
                class: Class::Same,
                new_sha256: &self.current.old_sha256,
                restore_data: true,
                restore_from: Some(self.id.clone()),
            },
        )
    }
}

fn run_recovered(m: &Resources, req: &RestoreRequest) -> Result<Report, Error> {
    let plan = plan(m, req).map_err(Error::before_downtime)?;
    let c = &plan.current;
    let known = m.snapshots().prehash(&c.server_config, &c.snapshot);
    let mut tx = Transaction::begin(m, plan.begin(m.ctx), STEPS).map_err(Error::before_downtime)?;
    match steps(&mut tx, &plan.current, &req.id, &known) {
        Ok(()) => tx.commit(),
        Err(e) => tx.abort(&e),
    }
}

/// The steps: no binary changes, so no stage and no swap.
fn steps(tx: &mut Transaction, plan: &Current, id: &str, known: &PreHash) -> Result<(), Error> {
    tx.step(Step::Stop, steps::stop)?;
    let taken = tx.step(Step::Snapshot, |m, b| {
        steps::snapshot(m, b, &plan.server_config, known)
    })?;
    tx.step(Step::Restore, |m, b| {
        // The live data was just snapshotted (`taken`, server stopped since): the copy proven
        // identical to it is dropped and `taken` holds it, set aside.
        let displaced = crate::store::snapshot::Displaced::Discard {
            covered_by: taken.clone(),
            origin: format!(
                "the live data replaced by `snapshot restore {id}` ({})",
                b.txid
            ),
            version: b.from.clone(),
        };
        m.snapshots()
            .restore(id, Some(&plan.server_config), &displaced)?;
        Ok((
            (),
            Some(Noted::Restored {
                snapshot: id.to_string(),
            }),
        ))
    })?;
    // A server that was stopped (restore without --stop) stays stopped.
    if !plan.unit_active {
        let m = tx.machine();
        m.sys()?.release(&m.settings().unit)?;
        return Ok(());
    }
    tx.step(Step::Start, steps::start)?;
    let expect = plan.expect(
        tx.machine().settings(),
        &plan.server_config,
        &plan.from,
        plan.listeners.clone(),
    );
    tx.step(Step::Health, |m, _| {
        steps::healthy(m, &plan.server_config, &expect)
    })?;
    Ok(())
}

/// Everything that can refuse, before anything is stopped.
fn plan(m: &Resources, req: &RestoreRequest) -> Result<Plan, Error> {
    let s = m.settings();
    let running = crate::server::version::of_binary(&s.server_binary())?;
    let snapshot = m.snapshots().get(&req.id)?;
    // Data from a newer schema would make the running binary panic at start.
    if classify(&running, &snapshot.server_version).schema_may_move() {
        return Err(Error::Refused(format!(
            "snapshot {} was taken by {} and may hold a newer schema than {running} reads; use `stalwart-upgrade rollback` or upgrade first",
            req.id, snapshot.server_version
        )));
    }
    let unit_state = m.sys()?.state(&s.unit)?;
    let active = unit_state.active_state == crate::os::systemd::ActiveState::Active;
    if active && !req.stop {
        return Err(Error::Refused(format!(
            "{} is running; a restore needs it stopped. Add --stop: it is stopped for the restore and started again",
            s.unit
        )));
    }
    let server_config = m.server_config(&crate::server::lines::server_config_path(s, &running))?;
    let space = rollback::snapshot_with_room(m, &server_config, &running, Some(&req.id))?;
    check_env(m)?;
    let current = Current::read(
        m,
        running,
        server_config.clone(),
        space,
        &unit_state,
        &server_config,
    )?;
    Ok(Plan {
        current,
        id: req.id.clone(),
    })
}
