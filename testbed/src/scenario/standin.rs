//! The stand-in server's scenarios (tests/common): a stand-in release installed the way
//! install.sh does, with 20 mail records delivered, and the host-built helper run inside.

use super::{data_of, Builder, Scenario, Server, STANDIN_HELPER_CONFIG};
use crate::stalwart::{self, ServerLayout};
use crate::{Container, Halted};
use serde_json::Value;
use std::ops::Deref;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

impl Builder {
    /// The stand-in scenario: `from` installed with `layout` and ready, the helper configured
    /// with `helper_config` and the fallback admin's credentials, 20 mail records delivered.
    pub fn standin(from: &Path, layout: ServerLayout, helper_config: &str) -> Builder {
        Builder::default()
            .server(Server::Standin {
                binary: from.to_path_buf(),
                layout,
            })
            .helper_config(helper_config)
            .webadmin_cred(format!("admin:{}", stalwart::DEFAULT_ADMIN_SECRET))
            .helper_timeout(Some(Duration::from_secs(240)))
            .pause_polls(600)
            .pause_timeout(None)
    }
}

/// A [`Scenario`] with the stand-in server, as the stand-in tests drive it.
pub struct Standin {
    inner: Scenario,
}

impl Deref for Standin {
    type Target = Scenario;
    fn deref(&self) -> &Scenario {
        &self.inner
    }
}

impl Standin {
    /// Boots a container, installs `from` and waits until it is ready, with 20 mail records
    /// delivered so the data is not just the seed.
    pub fn new(from: &Path) -> Standin {
        Self::with(from, ServerLayout::rocksdb(), STANDIN_HELPER_CONFIG)
    }

    pub fn with(from: &Path, layout: ServerLayout, helper_config: &str) -> Standin {
        Standin {
            inner: Builder::standin(from, layout, helper_config).boot(),
        }
    }

    /// `with` in a container the caller booted (e.g. with file systems of its own bound in).
    pub fn on(ct: Container, from: &Path, layout: ServerLayout, helper_config: &str) -> Standin {
        Standin {
            inner: Builder::standin(from, layout, helper_config).on(ct),
        }
    }

    /// A scenario the caller made (`Builder::standin(..)...boot()`).
    pub fn from_scenario(inner: Scenario) -> Standin {
        Standin { inner }
    }

    pub fn into_inner(self) -> Scenario {
        self.inner
    }

    /// Runs the helper inside the container (outside any unit, like an admin's shell).
    pub fn helper(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.inner.run_helper(args, env)
    }

    pub fn upgrade(&self, to: &Path, env: &[(&str, &str)]) -> Output {
        let p = self.inside(to);
        self.helper(&["upgrade", "--to", &p, "--yes"], env)
    }

    /// Runs an upgrade that stops itself (SIGSTOP) once the journal has `pause_at`
    /// (`step:started|done`), runs `meanwhile` (a shell script) while it is stopped, then lets it
    /// go on: a change to the world past every preflight check, at a known step.
    pub fn upgrade_pausing(&self, to: &Path, pause_at: &str, meanwhile: &str) -> Output {
        self.upgrade_pausing_with(to, &[], pause_at, meanwhile)
    }

    /// `upgrade_pausing` with more environment for the helper.
    pub fn upgrade_pausing_with(
        &self,
        to: &Path,
        env: &[(&str, &str)],
        pause_at: &str,
        meanwhile: &str,
    ) -> Output {
        self.inner
            .upgrade_pausing_inside(&self.inside(to), env, pause_at, meanwhile)
    }

    /// Ready, running `version` (the binary says so), on the same data as `before`.
    #[track_caller]
    pub fn serves(&self, version: &str, before: &Value) {
        self.ready();
        assert_eq!(self.binary_version(), version);
        assert_eq!(data_of(&self.digest()), data_of(before), "data differs");
    }

    /// Power loss (no shutdown), then `boot` boots the halted container again.
    pub fn crash_then(self, boot: impl FnOnce(Halted) -> Container) -> Standin {
        Standin {
            inner: self.inner.crash_then(boot),
        }
    }

    /// Power loss (no shutdown), then a boot on the same disk.
    pub fn crash_and_boot(self) -> Standin {
        Standin {
            inner: self.inner.crash_and_boot(),
        }
    }
}
