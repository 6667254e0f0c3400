//! The step actions shared by the upgrade, the rollback and the crossing: each is what one
//! journaled step does (`Transaction::step` records it), with the note it journals.

use crate::engine::journal::{Begin, Noted};
use crate::engine::resources::Resources;
use crate::server::serverconfig::ServerConfig;
use crate::store::snapshot::{PreHash, SnapshotMeta};
use crate::{server::health, store::swap, Error};

pub(crate) type StepResult = Result<((), Option<Noted>), Error>;

/// Writes what the crossing needs on disk: its record in the state dir (the dump and the
/// converted objects, for the carry and the undo), config.json and the unit's drop-in.
pub(crate) fn cross(
    m: &Resources,
    b: &Begin,
    cfg: &ServerConfig,
    dump: &crate::flows::carry::Dump,
    carried: &crate::flows::carry::Carried,
    json: &str,
) -> StepResult {
    crate::flows::carry::save(&crate::store::carried::dir(m.state, &b.txid), dump, carried)?;
    crate::store::crossing::apply(m.settings(), m.sys()?, cfg, json)?;
    Ok(((), None))
}

/// The recovery-mode start that migrates a 0.15 database: armed, started through the unit,
/// and healthy once the migration is done (the recovery listener answers). It keeps running for
/// the carry step, which stops it.
pub(crate) fn migrate(
    m: &Resources,
    b: &Begin,
    cfg: &ServerConfig,
    admin: &(String, String),
) -> StepResult {
    crate::store::crossing::arm_recovery(m.settings(), m.sys()?, admin)?;
    start(m, b)?;
    healthy(m, cfg, &health::Expect::recovery())?;
    Ok(((), None))
}

/// Creates the carried objects in the recovery-mode server (its own socket, the one-time
/// admin), stops it, and pins the 0.15 admin for the normal start.
pub(crate) fn carry(
    m: &Resources,
    b: &Begin,
    carried: &crate::flows::carry::Carried,
    admin: &(String, String),
) -> StepResult {
    let s = m.settings();
    let endpoint = crate::server::webadmin::Endpoint::Server {
        base: format!("http://127.0.0.1:{}", crate::server::lines::RECOVERY_PORT),
        unit: b.unit.clone(),
        pids: m.sys()?.unit_pids(&b.unit),
    };
    let api = crate::server::webadmin::Api::connect(
        s,
        &endpoint,
        crate::server::webadmin::Login::Basic(admin.0.clone(), admin.1.clone()),
    )?;
    let created = crate::flows::carry::apply::apply(&api, &carried.ops)
        .map_err(crate::flows::carry::CarryError::from)?;
    crate::store::crossing::end_recovery(s, m.sys()?)?;
    if let Some(a) = &carried.admin {
        crate::store::carried::pin_admin(s, &crate::store::carried::dir(m.state, &b.txid), a)?;
    }
    Ok((
        (),
        Some(Noted::Carried {
            objects: created.len(),
        }),
    ))
}

/// Keeps the running binary as a release (dpkg deletes the old package's files), then builds bin.new.
pub(crate) fn stage(m: &Resources, b: &Begin, target: &std::path::Path) -> StepResult {
    swap::keep_release(
        &b.bin_dir.join("stalwart"),
        &m.state.release_binary(&b.from),
    )?;
    let staged_dir = swap::stage(&b.bin_dir, &b.staged_dir, target)?;
    let sha = staged_dir.sha256.clone();
    let staged = b.staged_dir.join("stalwart");
    let v = crate::server::version::of_binary(&staged)?;
    if v != b.to || sha != b.new_sha256 {
        return Err(swap::SwapError::WrongVersion {
            path: staged,
            found: format!("{v} (sha256 {sha})"),
            expected: format!("{} (sha256 {})", b.to, b.new_sha256),
        }
        .into());
    }
    swap::hand_over(&staged_dir)?;
    Ok(((), Some(Noted::Staged { sha256: sha })))
}

/// Holds the unit (`Systemd::hold`: nobody else starts it until our own start), then stops it.
pub(crate) fn stop(m: &Resources, b: &Begin) -> StepResult {
    m.sys()?.hold(&b.unit)?;
    m.sys()?.stop(&b.unit, m.settings().stop_timeout())?;
    Ok(((), None))
}

/// Returns the snapshot's id (also journaled as the step's note).
pub(crate) fn snapshot(
    m: &Resources,
    b: &Begin,
    cfg: &ServerConfig,
    known: &PreHash,
) -> Result<(String, Option<Noted>), Error> {
    let meta = SnapshotMeta {
        server_version: b.from.clone(),
        target_version: Some(b.to.clone()),
        class: Some(b.class),
        server_binary: b.bin_dir.join("stalwart"),
    };
    let manifest = m.snapshots().create_with(cfg, &meta, known)?;
    Ok((
        manifest.id.clone(),
        Some(Noted::Snapshot { id: manifest.id }),
    ))
}

pub(crate) fn exchange(_m: &Resources, b: &Begin) -> StepResult {
    swap::exchange(&b.bin_dir, &b.staged_dir)?;
    Ok(((), None))
}

pub(crate) fn start(m: &Resources, b: &Begin) -> StepResult {
    m.sys()?
        .start_fresh(&b.unit, m.settings().start_timeout())?;
    Ok(((), None))
}

pub(crate) fn healthy(m: &Resources, cfg: &ServerConfig, expect: &health::Expect) -> StepResult {
    let r = health::gate(m.sys()?, m.settings(), Some(cfg), expect)?;
    Ok((
        (),
        Some(Noted::Ready {
            after_ms: r.ready_after_ms,
        }),
    ))
}
