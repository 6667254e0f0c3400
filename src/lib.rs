//! stalwart-upgrade: a Stalwart server upgrade as a crash-safe transaction.
//! See docs/DESIGN.md for the map of modules.

pub mod cli;
pub mod config;
pub mod engine;
pub mod flows;
pub mod hooks;
pub mod os;
pub mod policy;
pub mod server;
pub mod store;

use std::path::PathBuf;

/// uid and gid of `nobody`: the identity taken for "anybody" when a file that others may write
/// decides what the helper reads or runs (`serverconfig` file macros, `swap` version checks).
pub(crate) const NOBODY: u32 = 65534;
/// The server's user and group (install.sh: `useradd stalwart ... -U`; the packages' sysusers).
pub(crate) const SERVICE_USER: &str = "stalwart";

/// Exit codes (documented in the README and the man page).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The policy refused the upgrade (minor/major without approval, downgrade): nothing changed.
    pub const REFUSED: i32 = 3;
    /// A check before any downtime failed (space, binary, checksum, config): nothing changed.
    pub const PREFLIGHT: i32 = 4;
    /// The upgrade failed and was rolled back: the old version runs healthy.
    pub const ROLLED_BACK: i32 = 5;
    /// Neither version could be brought back healthy: the admin must act (message says how).
    pub const BROKEN: i32 = 6;
    /// Another stalwart-upgrade holds the lock.
    pub const LOCKED: i32 = 7;
    /// `status`: the last upgrade failed or a transaction is unfinished.
    pub const ATTENTION: i32 = 8;
}

/// Everything a command needs: settings, plus how it was invoked.
#[derive(Debug, Clone)]
pub struct Context {
    pub settings: config::Settings,
    /// True under package hooks or without a terminal: never prompt.
    pub unattended: bool,
    /// Boot-time recovery runs ordered before the server's unit: never start or stop units then
    /// (a start job from a unit ordered Before= the server would wait for us: deadlock).
    pub boot: bool,
    /// `STALWART_UPGRADE_ALLOW` (approve a line or class for this run), read once by the CLI.
    pub allow: Option<String>,
}

impl Context {
    pub fn new(settings: config::Settings) -> Context {
        Context {
            settings,
            unattended: false,
            boot: false,
            allow: None,
        }
    }
}

/// What `upgrade` (and the package hooks) ask for.
#[derive(Debug, Clone, Default)]
pub struct UpgradeRequest {
    /// The new server binary.
    pub target: PathBuf,
    /// A SHA256SUMS file that must list the target's checksum (the package payload has one).
    pub sha256sums: Option<PathBuf>,
    /// Try a version again that failed before (otherwise refused until the admin asks).
    pub retry: bool,
    /// The admin says every other node of this server's cluster is stopped (upstream requires it
    /// for an upgrade; a cluster node is refused without it).
    pub cluster_stopped: bool,
}

/// The error of a command, wrapping each module's typed error; `exit_code` maps it for the CLI
/// and the package hooks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    ServerConfig(#[from] server::serverconfig::ServerConfigError),
    #[error(transparent)]
    Version(#[from] server::version::VersionError),
    #[error(transparent)]
    VersionCheck(#[from] server::version::CheckError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Systemd(#[from] os::systemd::SystemdError),
    #[error(transparent)]
    Snapshot(#[from] store::snapshot::SnapshotError),
    #[error(transparent)]
    Swap(#[from] store::swap::SwapError),
    #[error(transparent)]
    Health(#[from] server::health::HealthError),
    #[error(transparent)]
    Journal(#[from] engine::journal::JournalError),
    #[error(transparent)]
    State(#[from] store::state::StateError),
    #[error(transparent)]
    Webadmin(#[from] server::webadmin::WebadminError),
    #[error(transparent)]
    Carry(#[from] flows::carry::CarryError),
    #[error(transparent)]
    Carried(#[from] store::carried::CarriedError),
    /// Whatever failed before anything was stopped (a D-Bus error, a corrupt state file, a
    /// snapshot dir inside a store): nothing changed, so it is a failed preflight (exit 4), not
    /// an error that would leave a package half-configured.
    #[error("{0}; nothing was stopped or changed")]
    BeforeDowntime(Box<Error>),
    /// SIGINT/SIGTERM/SIGHUP during a transaction: it is rolled back (`signals`).
    #[error("interrupted by {signal} (before step {step}); the transaction is rolled back, which a second signal does not stop")]
    Interrupted { signal: String, step: String },
    /// The policy refused: nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A check before any downtime failed: nothing was changed.
    #[error("{0}")]
    Preflight(String),
    /// This version failed before and was rolled back; not retried until the admin asks.
    #[error("the upgrade to {version} failed before (transaction {txid}: {reason}) and was rolled back; it is not retried automatically. Read `stalwart-upgrade history`, then run `stalwart-upgrade upgrade --to PATH --retry` (or reinstall the package) to try again")]
    PreviouslyFailed {
        version: server::version::Version,
        txid: String,
        reason: String,
    },
    /// A system tool the packages rely on (useradd, the server's --init, ...) failed.
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Usage(String),
    /// A flow ran a step it did not declare (a bug of the helper).
    #[error("stalwart-upgrade bug: {0}; please report it with `stalwart-upgrade history --json`")]
    Bug(String),
    #[error("stalwart-upgrade must run as root (it stops services and replaces /opt/stalwart/bin); run it with sudo")]
    NotRoot,
}

impl Error {
    /// The error of a step before the stop, typed by its phase: refusals and preflight errors
    /// keep their type (the hooks act on `PreviouslyFailed`), anything else becomes
    /// `BeforeDowntime`.
    pub fn before_downtime(self) -> Error {
        match self {
            e @ (Error::Refused(_)
            | Error::PreviouslyFailed { .. }
            | Error::Preflight(_)
            | Error::BeforeDowntime(_)
            | Error::Usage(_)) => e,
            e if e.exit_code() == exit::PREFLIGHT => e,
            e => Error::BeforeDowntime(Box::new(e)),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Refused(_) | Error::PreviouslyFailed { .. } => exit::REFUSED,
            Error::BeforeDowntime(inner) if inner.exit_code() == exit::REFUSED => exit::REFUSED,
            Error::BeforeDowntime(_) => exit::PREFLIGHT,
            Error::Preflight(_)
            | Error::ServerConfig(_)
            | Error::Version(_)
            | Error::VersionCheck(_)
            | Error::Config(_)
            // The checks of the new binary run before anything is stopped.
            | Error::Swap(
                store::swap::SwapError::Version(_)
                | store::swap::SwapError::WrongVersion { .. }
                | store::swap::SwapError::Checksum { .. }
                | store::swap::SwapError::NotListed { .. },
            ) => exit::PREFLIGHT,
            Error::State(store::state::StateError::Locked { .. }) => exit::LOCKED,
            Error::Usage(_) => exit::USAGE,
            _ => exit::ERROR,
        }
    }
}
