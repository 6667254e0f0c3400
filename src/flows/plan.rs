//! What every flow's plan knows of the server before any downtime (`Current`), and the journal's
//! begin record a transaction carrying out a plan starts with. Each flow has its own plan type
//! around it (`upgrade::Plan`, `rollback::Plan`, `restore::Plan`) with only what that flow
//! decides.

use crate::engine::journal::{Begin, TxKind};
use crate::engine::resources::Resources;
use crate::engine::transaction;
use crate::os::systemd::{ActiveState, UnitState};
use crate::server::serverconfig::ServerConfig;
use crate::server::version::{Class, Version};
use crate::server::{health, listener};
use crate::store::snapshot::SnapshotPlan;
use crate::{Context, Error};
use serde::Serialize;

/// The server as it stands before a transaction, read once before any downtime.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    pub unit: String,
    pub from: Version,
    /// sha256 of the binary in bin/ now (what an undo puts back).
    pub old_sha256: String,
    pub unit_active: bool,
    /// The unit in effect is not the packaged one (install.sh's, in /etc/systemd/system).
    pub unit_warning: Option<String>,
    pub server_config: ServerConfig,
    /// Method, space needed and free for the snapshot of each store.
    pub snapshot: SnapshotPlan,
    /// What the unit listens on now (recorded before the stop, checked after the start).
    pub listeners: Vec<listener::Probe>,
}

/// What a transaction changes, beyond `Current`: the rest of its begin record.
pub struct Change<'a> {
    pub kind: TxKind,
    pub to: &'a Version,
    pub class: Class,
    /// sha256 of the binary that runs afterwards.
    pub new_sha256: &'a str,
    /// An undo puts the data snapshot back (once the new version ran).
    pub restore_data: bool,
    /// The snapshot the transaction itself puts back (a rollback across a schema change, a
    /// `snapshot restore`).
    pub restore_from: Option<String>,
}

impl Current {
    /// What every flow reads of the running server: its unit's state, the listeners `declared`
    /// names (answering now), the installed binary's hash.
    pub fn read(
        m: &Resources,
        from: Version,
        server_config: ServerConfig,
        snapshot: SnapshotPlan,
        unit_state: &UnitState,
        declared: &ServerConfig,
    ) -> Result<Current, Error> {
        let s = m.settings();
        Ok(Current {
            unit: s.unit.clone(),
            from,
            old_sha256: crate::store::swap::sha256_file(&s.server_binary())?,
            unit_active: unit_state.active_state == ActiveState::Active,
            unit_warning: unit_state.override_warning(&s.unit),
            listeners: running_listeners(m, unit_state, declared)?,
            server_config,
            snapshot,
        })
    }

    /// The journal's first record of a transaction that makes `change` to this server.
    pub(crate) fn begin(&self, ctx: &Context, change: Change) -> Begin {
        let s = &ctx.settings;
        Begin {
            txid: transaction::new_txid(&self.from, change.to),
            seq: 0,
            kind: change.kind,
            unit: self.unit.clone(),
            from: self.from.clone(),
            to: change.to.clone(),
            class: change.class,
            was_active: self.unit_active,
            bin_dir: s.bin_dir(),
            staged_dir: s.staged_dir(),
            old_sha256: self.old_sha256.clone(),
            new_sha256: change.new_sha256.to_string(),
            restore_data: change.restore_data,
            restore_from: change.restore_from,
            server_config: self.server_config.path.clone(),
            listeners: self.listeners.clone(),
        }
    }

    /// What the health gate after the start expects: `to` in normal mode, reading `config`, with
    /// `listeners` answering again.
    pub fn expect(
        &self,
        settings: &crate::config::Settings,
        config: &ServerConfig,
        to: &Version,
        listeners: Vec<listener::Probe>,
    ) -> health::Expect {
        health::Expect::normal(settings, Some(config), to, listeners)
            .running(settings.server_binary())
    }
}

/// What the server's environment must not say (`serverenv`): refused before any downtime.
pub(crate) fn check_env(m: &Resources) -> Result<(), Error> {
    let s = m.settings();
    match crate::server::serverenv::ServerEnv::of(m.sys()?, &s.unit)?
        .refusals()
        .first()
    {
        Some(r) => Err(Error::Refused(format!("{r}; nothing was changed"))),
        None => Ok(()),
    }
}

/// The listeners of the running unit, each with its greeting (none when it is not running).
fn running_listeners(
    m: &Resources,
    unit_state: &UnitState,
    cfg: &ServerConfig,
) -> Result<Vec<listener::Probe>, Error> {
    if unit_state.active_state != ActiveState::Active {
        return Ok(Vec::new());
    }
    let pids = m.sys()?.unit_pids(&m.settings().unit);
    Ok(listener::probe_all(&pids, &cfg.listeners))
}
