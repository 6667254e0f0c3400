//! The real-server tier's scenarios (tests/real_*.rs): a container with upstream's real binaries
//! bound at /real, one installed as install.sh installs its generation, the fixture's accounts
//! and mail, and the host-built helper run inside. See `crate::real`.

use super::{Builder, Scenario, Server, REAL_HELPER_CONFIG};
use crate::real::{Backend, RealRelease};
use crate::real_server::{alice, bob, RealServer};
use crate::{Container, Halted};
use std::ops::Deref;
use std::process::Output;
use std::time::Duration;

impl Builder {
    /// The real-server scenario: `release` installed like install.sh on `backend`, the
    /// fixture's accounts, one mail each ("before-alice", "before-bob"), and the helper
    /// configured with the admin's credentials.
    pub fn real(release: &RealRelease, backend: Backend) -> Builder {
        Self::real_server(Server::Real {
            release: release.clone(),
            backend,
        })
    }

    /// `real` on upstream's default installation (`RealServer::install_init`).
    pub fn real_init(release: &RealRelease) -> Builder {
        Self::real_server(Server::RealInit(release.clone()))
    }

    fn real_server(server: Server) -> Builder {
        Builder::default()
            .server(server)
            .real_bins()
            .helper_config(REAL_HELPER_CONFIG)
            .webadmin_cred(format!(
                "{}:{}",
                crate::real_server::ADMIN,
                crate::real_server::ADMIN_SECRET
            ))
            .helper_timeout(Some(Duration::from_secs(300)))
            .pause_polls(1200)
            .pause_timeout(Some(Duration::from_secs(300)))
    }
}

/// A [`Scenario`] with a real server, as the real-server tests drive it.
pub struct Real {
    inner: Scenario,
    pub server: RealServer,
}

impl Deref for Real {
    type Target = Scenario;
    fn deref(&self) -> &Scenario {
        &self.inner
    }
}

/// The releases and their common store, or None after a loud skip line.
pub fn releases(test: &str, versions: &[&str]) -> Option<(Vec<&'static RealRelease>, Backend)> {
    let rels = crate::real::require(test, versions)?;
    match Backend::common(&rels) {
        Some(b) => Some((rels, b)),
        None => {
            crate::real::skip(
                test,
                "the releases have no store backend in common (SQLite or RocksDB)",
            );
            None
        }
    }
}

/// The crossing's two releases: the real 0.15.5 and the newest 0.16, or None after a loud skip
/// line.
pub fn crossing_releases(test: &str) -> Option<[&'static RealRelease; 2]> {
    let Some(new) = crate::real::newest("0.16") else {
        crate::real::skip(test, "no 0.16 release in the real-server tier");
        return None;
    };
    let rels = crate::real::require(test, &["0.15.5", &new.version.clone()])?;
    Some([rels[0], rels[1]])
}

/// `crossing_releases` and the store backend both have, or None after a loud skip line.
pub fn crossing(test: &str) -> Option<(&'static RealRelease, &'static RealRelease, Backend)> {
    let [old, new] = crossing_releases(test)?;
    let (rels, backend) = releases(test, &[&old.version, &new.version])?;
    Some((rels[0], rels[1], backend))
}

/// A booted container with /real bound, nothing installed.
pub fn real_container() -> Container {
    Builder::default().real_bins().fixture(false).boot().ct
}

impl Real {
    /// `release` installed like install.sh, the fixture's accounts, one mail each
    /// ("before-alice", "before-bob"), and the helper configured with the admin's credentials.
    pub fn new(release: &RealRelease, backend: Backend) -> Real {
        Self::from_scenario(Builder::real(release, backend).boot())
    }

    /// `new` on upstream's default installation: `release` (a 0.15 with RocksDB) installed
    /// the install.sh way with the config its own `--init` writes (`RealServer::install_init`).
    pub fn with_init(release: &RealRelease) -> Real {
        Self::from_scenario(Builder::real_init(release).boot())
    }

    /// A scenario the caller made (`Builder::real(..)...boot()`): it must have a real server.
    pub fn from_scenario(inner: Scenario) -> Real {
        let server = inner
            .real
            .clone()
            .expect("a scenario with a real server (Builder::real)");
        Real { inner, server }
    }

    pub fn into_inner(self) -> Scenario {
        self.inner
    }

    pub fn helper(&self, args: &[&str]) -> Output {
        self.inner.run_helper(args, &[])
    }

    /// `upgrade --to` the real binary of `to`.
    pub fn upgrade(&self, to: &RealRelease) -> Output {
        let p = to.in_container();
        self.helper(&["upgrade", "--to", &p, "--yes"])
    }

    /// The server answers, runs exactly `release`'s bytes (the running process's executable),
    /// and alice and bob log in with their passwords and see `alice_sees` and "before-bob".
    #[track_caller]
    pub fn serves(&self, release: &RealRelease, generation016: bool, alice_sees: &[&str]) {
        self.server.wait_ready(&self.ct).expect("ready");
        assert_eq!(
            RealServer::running_sha256(&self.ct).expect("running binary"),
            release.sha256,
            "the server does not run the bytes of {}",
            release.version
        );
        RealServer::sees(&self.ct, generation016, &alice(), alice_sees)
            .unwrap_or_else(|e| panic!("after {}: {e:#}", release.version));
        RealServer::sees(&self.ct, generation016, &bob(), &["before-bob"])
            .unwrap_or_else(|e| panic!("after {}: {e:#}", release.version));
    }

    /// An upgrade that stops itself (SIGSTOP) once the journal has `pause_at`, runs `meanwhile`
    /// (a shell script) while it is stopped, then lets it go on (as `Standin` does).
    pub fn upgrade_pausing(&self, to: &RealRelease, pause_at: &str, meanwhile: &str) -> Output {
        self.inner
            .upgrade_pausing_inside(&to.in_container(), &[], pause_at, meanwhile)
    }

    /// Power loss (no shutdown), then `boot` boots the halted container again.
    pub fn crash_then(self, boot: impl FnOnce(Halted) -> Container) -> Real {
        let Real { inner, server } = self;
        Real {
            inner: inner.crash_then(boot),
            server,
        }
    }

    /// Power loss (no shutdown), then a boot on the same disk.
    pub fn crash_and_boot(self) -> Real {
        self.crash_then(|h| h.boot_again().expect("boot again"))
    }
}
