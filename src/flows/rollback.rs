//! `stalwart-upgrade rollback`: back to the previous (or a kept) release. A rollback is itself a
//! transaction — it snapshots the current data first, so a rollback that fails is undone too.

use crate::engine::ending::Report;
use crate::engine::journal::{Begin, Step, TxKind};
use crate::engine::resources::Resources;
use crate::engine::transaction::Transaction;
use crate::flows::plan::{check_env, Change, Current};
use crate::flows::steps;
use crate::flows::upgrade;
use crate::server::serverconfig::ServerConfig;
use crate::server::version::{classify, Class, Version};
use crate::store::state::StateDir;
use crate::{engine::history, store::swap, Context, Error};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct RollbackRequest {
    /// A kept release; default: the version the last committed upgrade came from.
    pub to: Option<String>,
    /// Only the binary: refused when the schema may have moved (the old binary would panic).
    pub binary_only: bool,
    /// Every other node of this server's cluster is stopped (see `upgrade::cluster_gate`).
    pub cluster_stopped: bool,
    /// Start the old version afterwards even if the unit is not active now (the probation's
    /// rollback of a release `Restart=` keeps crashing and bringing back).
    pub start: bool,
}

pub fn run(ctx: &Context, req: &RollbackRequest) -> Result<Report, Error> {
    crate::flows::after_recovery(ctx, |m| run_recovered(m, req))
}

fn run_recovered(m: &Resources, req: &RollbackRequest) -> Result<Report, Error> {
    let plan = plan(m, req).map_err(Error::before_downtime)?;
    let c = &plan.current;
    let known = m.snapshots().prehash(&c.server_config, &c.snapshot);
    let mut tx = Transaction::begin(m, plan.begin(m.ctx), STEPS).map_err(Error::before_downtime)?;
    match steps(&mut tx, &plan, &known) {
        Ok(()) => tx.commit(),
        Err(e) => tx.abort(&e),
    }
}

/// What `rollback` would do, for the admin before it runs (takes the lock to see a settled state).
pub fn preview(ctx: &Context, req: &RollbackRequest) -> Result<String, Error> {
    let state = StateDir::open(&ctx.settings.state_dir)?;
    let _lock = state.lock(Duration::from_secs(ctx.settings.timeouts.lock_wait_secs))?;
    let m = Resources::new(ctx, &state);
    let plan = plan(&m, req)?;
    let mut out = format!(
        "rollback:      {} from {} to the kept release {}\n",
        plan.current.unit, plan.current.from, plan.to
    );
    if let Some(id) = &plan.restore_from {
        let taken = m
            .snapshots()
            .get(id)
            .map(|s| s.created_at)
            .unwrap_or_else(|_| "?".into());
        out += &format!(
            "data:          snapshot {id} (taken {taken}, while {} ran) is put back: the schema moved since. Everything since then, mail included, is first kept in a new snapshot of the current data, not deleted\n",
            plan.to
        );
    } else {
        out += "data:          kept as it is (the schema did not move)\n";
    }
    if let Some(toml) = &plan.below_016 {
        out += &format!(
            "config:        config.json and the unit drop-in are set aside: {} runs {} again\n",
            plan.to,
            toml.path.display()
        );
    }
    Ok(out)
}

/// A rollback's steps: the 0.16 files set aside only when it goes below the 0.16 line, the
/// older data put back only when the schema moved since `to` ran.
pub const STEPS: &[Step] = &[
    Step::Stage,
    Step::Stop,
    Step::Snapshot,
    Step::Swap,
    Step::CrossingBack,
    Step::Restore,
    Step::Start,
    Step::Health,
];

/// What a rollback would do.
pub struct Plan {
    pub current: Current,
    /// The kept release going back in, and its binary's hash.
    pub to: Version,
    pub target: std::path::PathBuf,
    pub target_sha256: String,
    /// The snapshot to put back (the schema moved since `to` ran).
    pub restore_from: Option<String>,
    /// Going below the 0.16 line: config.toml, which `to` reads again (and the snapshot's stores
    /// are named after).
    pub below_016: Option<ServerConfig>,
}

impl Plan {
    /// Its undo puts the data back only when the rollback itself restored a snapshot (the
    /// schema moved): otherwise the data never changed hands.
    fn begin(&self, ctx: &Context) -> Begin {
        self.current.begin(
            ctx,
            Change {
                kind: TxKind::Rollback,
                to: &self.to,
                class: Class::Downgrade,
                new_sha256: &self.target_sha256,
                restore_data: self.restore_from.is_some(),
                restore_from: self.restore_from.clone(),
            },
        )
    }

    /// The server config `to` reads: config.toml again below the 0.16 line.
    fn to_config(&self) -> &ServerConfig {
        self.below_016
            .as_ref()
            .unwrap_or(&self.current.server_config)
    }
}

/// The same steps as an upgrade, plus, between swap and start: the 0.16 files set aside (below
/// the 0.16 line) and the older data put back.
fn steps(
    tx: &mut Transaction,
    plan: &Plan,
    known: &crate::store::snapshot::PreHash,
) -> Result<(), Error> {
    let to_config = plan.to_config();
    tx.step(Step::Stage, |m, b| steps::stage(m, b, &plan.target))?;
    tx.step(Step::Stop, steps::stop)?;
    let taken = tx.step(Step::Snapshot, |m, b| {
        steps::snapshot(m, b, &plan.current.server_config, known)
    })?;
    tx.step(Step::Swap, steps::exchange)?;
    if plan.below_016.is_some() {
        tx.step(Step::CrossingBack, |m, b| {
            let aside = m.state.aside_dir(&b.txid);
            crate::store::crossing::set_aside(m.settings(), m.sys()?, &aside)?;
            Ok((
                (),
                Some(crate::engine::journal::Noted::Aside { dir: aside }),
            ))
        })?;
    }
    if let Some(id) = &plan.restore_from {
        tx.step(Step::Restore, |m, b| {
            // The data being replaced was just snapshotted (`taken`, server stopped since):
            // only what is not proven to be that tree is kept besides.
            let displaced = crate::store::snapshot::Displaced::Discard {
                covered_by: taken.clone(),
                origin: format!(
                    "the data {} ran on, replaced by rollback {}",
                    b.from, b.txid
                ),
                version: b.from.clone(),
            };
            m.snapshots().restore(id, Some(to_config), &displaced)?;
            Ok((
                (),
                Some(crate::engine::journal::Noted::Restored {
                    snapshot: id.to_string(),
                }),
            ))
        })?;
    }
    tx.step(Step::Start, steps::start)?;
    // Below the 0.16 line the 0.15 listeners come back with config.toml, not 0.16's.
    let listeners = if plan.below_016.is_some() {
        Vec::new()
    } else {
        plan.current.listeners.clone()
    };
    let expect = plan
        .current
        .expect(tx.machine().settings(), to_config, &plan.to, listeners);
    tx.step(Step::Health, |m, _| steps::healthy(m, to_config, &expect))?;
    Ok(())
}

/// Picks the release and, when the schema may have moved since it ran, the snapshot taken
/// before the upgrade away from it.
fn plan(m: &Resources, req: &RollbackRequest) -> Result<Plan, Error> {
    let s = m.settings();
    let current = crate::server::version::of_binary(&s.server_binary())?;
    let kept = m.state.releases()?;
    let target: Version = match &req.to {
        Some(v) => v.parse()?,
        None => history::committed_upgrade(m.state, &current, None)?
            .map(|e| e.from)
            .or_else(|| kept.iter().find(|v| **v < current).cloned())
            .ok_or_else(|| {
                Error::Refused(format!(
                    "no earlier release is kept to roll back to from {current}; kept: {}",
                    list(&kept)
                ))
            })?,
    };
    let release = m.state.release_binary(&target);
    if !release.is_file() {
        return Err(Error::Refused(format!(
            "release {target} is not kept in {}; kept releases: {}",
            m.state.releases_dir().display(),
            list(&kept)
        )));
    }
    // The class of the change being undone (target -> current) says whether the data moved.
    let forward = classify(&target, &current);
    let restore_from = if forward.schema_may_move() {
        if req.binary_only {
            return Err(Error::Refused(format!(
                "--binary-only refused: {target} -> {current} is a {forward} change, the schema may have moved and {target} would refuse (panic on) the newer data; roll back with the data snapshot (omit --binary-only)"
            )));
        }
        Some(snapshot_before(m, &target, &current)?)
    } else {
        None
    };
    let below_016 = below_016(m, &current, &target, restore_from.as_deref())?;
    if let Some(toml) = &below_016 {
        upgrade::cluster_gate(toml, &target, req.cluster_stopped)?;
    }
    let server_config = m.server_config(&crate::server::lines::server_config_path(s, &current))?;
    upgrade::cluster_gate(&server_config, &target, req.cluster_stopped)?;
    let snapshot = snapshot_with_room(m, &server_config, &current, restore_from.as_deref())?;
    let unit_state = m.sys()?.state(&s.unit)?;
    check_env(m)?;
    // The 0.15 config names the ports when the rollback goes below the line (0.16 declares none).
    let declared = below_016.as_ref().unwrap_or(&server_config);
    let mut current = Current::read(
        m,
        current,
        server_config.clone(),
        snapshot,
        &unit_state,
        declared,
    )?;
    // The probation's rollback starts the old version even if `Restart=` has it down now.
    current.unit_active |= req.start;
    Ok(Plan {
        current,
        to: target,
        target_sha256: swap::sha256_file(&release)?,
        target: release,
        restore_from,
        below_016,
    })
}

/// The snapshot a transaction that puts data back (a rollback, `snapshot restore`) takes of the
/// live data first, checked before the stop: the stores lie where a restore may write, and the
/// snapshot and its undo fit, counting the room pruning could free (never `restore_from`, the
/// snapshot to be put back, nor the one a rollback of `running` needs).
pub(crate) fn snapshot_with_room(
    m: &Resources,
    server_config: &ServerConfig,
    running: &Version,
    restore_from: Option<&str>,
) -> Result<crate::store::snapshot::SnapshotPlan, Error> {
    crate::store::snapshot::check_store_paths(m.settings(), server_config)
        .map_err(|e| Error::Preflight(e.to_string()))?;
    let snapshots = m.snapshots();
    let snapshot = snapshots.plan(server_config)?;
    if !snapshot.fits_with_undo() {
        let protect = history::protected_snapshots(m.state, running, restore_from)?;
        if let Some(advice) = snapshots.space_refusal(&snapshot, &protect) {
            return Err(Error::Preflight(format!("{advice}; nothing was stopped")));
        }
    }
    Ok(snapshot)
}

/// From >= 0.16 back to <= 0.15: config.toml (never changed by the upgrade) must still be there
/// and the snapshot to restore must be one taken with it (schema 5, stores named as in it).
/// Returns config.toml's reading; None when the rollback stays on one side of the line.
fn below_016(
    m: &Resources,
    current: &Version,
    target: &Version,
    restore_from: Option<&str>,
) -> Result<Option<ServerConfig>, Error> {
    use crate::server::lines::is_json;
    match (is_json(current), is_json(target)) {
        (true, false) => {}
        (false, true) => {
            return Err(Error::Refused(format!(
                "{current} -> {target} crosses the 0.16 line upwards: that is an upgrade (config.json, recovery-mode migration); run `stalwart-upgrade upgrade --to PATH` instead. Nothing was changed"
            )))
        }
        _ => return Ok(None),
    }
    let toml_path = m.settings().server_config_path();
    let toml = m.server_config(&toml_path).map_err(|e| {
        Error::Refused(format!(
            "going back to {target} needs the config.toml it ran with, which the upgrade left in place: {e}. Nothing was changed"
        ))
    })?;
    let id = restore_from.ok_or_else(|| {
        Error::Refused(format!("going back to {target} needs the data snapshot from before the upgrade to {current}; nothing was changed"))
    })?;
    let snap = m.snapshots().get(id)?;
    if snap.config_format != crate::server::serverconfig::ConfigFormat::Toml {
        return Err(Error::Refused(format!(
            "snapshot {id} was taken with {} ({:?} generation), not with config.toml; {target} cannot use it. Nothing was changed",
            snap.config_path.display(),
            snap.config_format
        )));
    }
    Ok(Some(toml))
}

fn list(v: &[Version]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The last committed upgrade that led to `current` (from `from`, when given).
/// The snapshot to put back when going from `current` back to `version`: the one the last
/// committed upgrade `version` -> `current` took (its journal names it), else the newest
/// snapshot taken while `version` ran. Newest by sequence, never by the wall clock: after the
/// clock was set back, an older failed attempt's snapshot could look newer and its stale data
/// would be restored.
fn snapshot_before(m: &Resources, version: &Version, current: &Version) -> Result<String, Error> {
    let all = m.snapshots().list()?;
    let upgrade_took = history::committed_upgrade(m.state, current, Some(version))?
        .and_then(|e| e.snapshot)
        .filter(|id| all.iter().any(|s| &s.id == id));
    upgrade_took
        .or_else(|| {
            all.into_iter()
                .rev()
                .find(|s| &s.server_version == version)
                .map(|s| s.id)
        })
        .ok_or_else(|| {
            Error::Refused(format!(
                "no data snapshot taken while {version} ran exists in {}; without it {version} would refuse the newer schema. Nothing was changed (see `stalwart-upgrade snapshot list`)",
                m.settings().snapshot_dir().display()
            ))
        })
}
