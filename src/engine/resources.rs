//! What the steps of a transaction act on: the settings, the state directory, and a D-Bus
//! connection and the server unit's environment, each made on first use.

use crate::config::Settings;
use crate::os::systemd::Systemd;
use crate::server::serverconfig::ServerConfig;
use crate::server::serverenv::ServerEnv;
use crate::store::snapshot::Snapshots;
use crate::store::state::StateDir;
use crate::{Context, Error};
use std::cell::OnceCell;

/// The resources steps act on: settings, state dir, and a D-Bus connection made on first use.
pub struct Resources<'a> {
    pub ctx: &'a Context,
    pub state: &'a StateDir,
    sys: OnceCell<Systemd>,
    env: OnceCell<ServerEnv>,
}

impl<'a> Resources<'a> {
    pub fn new(ctx: &'a Context, state: &'a StateDir) -> Resources<'a> {
        Resources {
            ctx,
            state,
            sys: OnceCell::new(),
            env: OnceCell::new(),
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
    /// The environment the unit gives the server, read once: the only source of the server
    /// config's `%{env:..}%` macros (the helper's own environment is root's, set by whoever ran
    /// dpkg).
    pub fn server_env(&self) -> Result<&ServerEnv, Error> {
        if let Some(e) = self.env.get() {
            return Ok(e);
        }
        let e = ServerEnv::of(self.sys()?, &self.settings().unit)?;
        Ok(self.env.get_or_init(|| e))
    }
    /// The server config at `path`, its macros expanded from the unit's environment.
    pub fn server_config(&self, path: &std::path::Path) -> Result<ServerConfig, Error> {
        Ok(ServerConfig::load_with_env(path, self.server_env()?)?)
    }
    pub fn snapshots(&self) -> Snapshots {
        // Without the unit's environment (no D-Bus), a snapshot's config that needs a variable
        // is refused with a message that names it; whatever stopped D-Bus is reported by the
        // step that needs systemd.
        let env = match self.server_env() {
            Ok(e) => e.clone(),
            Err(e) => {
                tracing::debug!("the server unit's environment is not available: {e}");
                ServerEnv::default()
            }
        };
        Snapshots::for_settings(self.settings()).with_server_env(env)
    }
}
