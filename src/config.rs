//! The helper's own settings: /etc/stalwart-upgrade/config.toml.
//!
//! Every key is optional and defaults to upstream's install.sh layout (/opt/stalwart), so a package
//! can ship this file commented out. Tests point `STALWART_UPGRADE_CONFIG` at their own file.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/stalwart-upgrade/config.toml";
pub const ENV_PATH: &str = "STALWART_UPGRADE_CONFIG";
/// Upper bound of every `*_secs` setting: 30 days.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Default bound of one dump, restore or export tool run (`[timeouts] tool_secs`).
pub const DEFAULT_TOOL_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the helper config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the helper config {path} is not valid: {message}\n  fix the file (every key is optional; see `man stalwart-upgrade`) and run the command again")]
    Parse { path: PathBuf, message: String },
}

/// Where the packages keep the server's environment file (`Settings::server_env`).
pub const SERVER_ENV: &str = "/etc/stalwart-upgrade/stalwart.env";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// systemd unit of the server.
    pub unit: String,
    /// Upstream's install prefix: bin/, etc/, data/, logs/ live under it.
    pub prefix: PathBuf,
    /// The server's config file; default: PREFIX/etc/config.toml, else PREFIX/etc/config.json.
    pub server_config: Option<PathBuf>,
    /// Root-only state: journal, lock, history, kept releases, snapshots.
    pub state_dir: PathBuf,
    /// Where the `stalwart` package puts the release binary and its SHA256SUMS.
    pub payload_dir: PathBuf,
    /// The server's environment file (>= 0.16: STALWART_RECOVERY_ADMIN, STALWART_HOSTNAME, ...),
    /// read by systemd as root for the unit. In a directory only root can write: PID 1 follows
    /// symlinks there, so in the server's own etc/ (install.sh's PREFIX/etc/stalwart.env) the
    /// service user could feed it any root-only KEY=VALUE file.
    pub server_env: PathBuf,
    pub timeouts: Timeouts,
    pub health: HealthSettings,
    pub snapshots: SnapshotSettings,
    pub policy: PolicySettings,
    pub webadmin: WebadminSettings,
    pub install: InstallSettings,
    /// The file these settings were read from (its config.d/ holds the drop-ins).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// What a first install of the `stalwart` package sets up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct InstallSettings {
    /// From 0.16 on: leave config.json unwritten, so the server starts upstream's setup
    /// wizard (bootstrap mode, a temporary password in `journalctl -u stalwart`) instead of
    /// a normal server with the administrator pinned in PREFIX/etc/stalwart.env.
    pub bootstrap: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Upper bound for a stop job plus the main process to be gone.
    pub stop_secs: u64,
    pub start_secs: u64,
    /// Upper bound for /healthz/ready after start: a 0.15 migration can take long.
    pub ready_secs: u64,
    /// How long the unit must stay active after it first answered ready.
    pub settle_secs: u64,
    /// How long a second helper waits for the lock before it refuses.
    pub lock_wait_secs: u64,
    /// Upper bound for /healthz/ready when a rollback starts the old version again: longer than
    /// `ready_secs`, since a wrong "STALWART IS DOWN" leaves the package half-configured and the
    /// admin paged; the old version gets `undo_start_attempts` starts (a transient exit is what
    /// the unit's Restart= would retry too).
    pub undo_ready_secs: u64,
    pub undo_start_attempts: u32,
    /// Upper bound of one run of a dump/restore tool (pg_dump, pg_restore + psql, mariadb-dump,
    /// mariadb, the server's --export/--import): past it the tool is killed and the step fails
    /// (undone like any other), instead of the server staying stopped with the lock held.
    pub tool_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Base URL of the server's plain-HTTP listener; default: read from the server config.
    pub url: Option<String>,
    /// Log lines (substrings, case-insensitive) that mean the start failed although the process
    /// may exit 0: upstream exits 0 after a failed migration.
    pub failure_patterns: Vec<String>,
    /// Where >= 0.16 writes its log files (its default tracer's path, which the packaged unit
    /// creates with LogsDirectory=); 0.15's come from config.toml's `[tracer.*]`.
    pub log_dir: PathBuf,
    /// After an upgrade's commit, how long a crash of the new release still rolls it back
    /// (`probation`); 0: no probation.
    pub probation_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    /// Snapshots kept by the retention policy (the one a rollback needs is never pruned, nor
    /// set-aside data: `snapshot::Manifest::set_aside`).
    pub keep: usize,
    /// Default: STATE_DIR/snapshots.
    pub dir: Option<PathBuf>,
    /// Directories besides PREFIX/data and /var/lib/stalwart where the server config may put a
    /// store (RocksDB, SQLite, file-system blobs) that root snapshots and restores. The config
    /// is the service user's to write: without this list, a store path could point root's
    /// snapshot and restore at another service's data, /var/lib/dpkg or /proc.
    pub store_paths: Vec<PathBuf>,
    /// CA certificate (PEM) that the database tools verify a PostgreSQL/MySQL server with when
    /// the server config asks for TLS. Here, not in the server config: the server's user writes
    /// that one, and must not choose whom the store's password is sent to.
    pub database_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Classes of upgrade that run without an approval: "patch", "minor", "major".
    pub unattended: Vec<String>,
    /// Write apt preferences / dnf versionlock so package managers never select another line.
    pub manage_holds: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebadminSettings {
    pub enabled: bool,
    /// Base URL of the management API; default: the health URL.
    pub url: Option<String>,
    /// Root-only (0600/0400) file with `user:password` or `api_<key>`.
    pub credentials_file: Option<PathBuf>,
    /// CA certificate (PEM) for a self-signed server certificate.
    pub ca_file: Option<PathBuf>,
    /// Upstream waits up to 60 s for the bundle download; leave room above that.
    pub timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            unit: "stalwart.service".into(),
            prefix: PathBuf::from("/opt/stalwart"),
            server_config: None,
            state_dir: PathBuf::from("/var/lib/stalwart-upgrade"),
            payload_dir: PathBuf::from("/usr/lib/stalwart"),
            server_env: PathBuf::from(SERVER_ENV),
            timeouts: Timeouts::default(),
            health: HealthSettings::default(),
            snapshots: SnapshotSettings::default(),
            policy: PolicySettings::default(),
            webadmin: WebadminSettings::default(),
            install: InstallSettings::default(),
            source: None,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stop_secs: 120,
            start_secs: 60,
            ready_secs: 300,
            settle_secs: 2,
            lock_wait_secs: 30,
            undo_ready_secs: 600,
            undo_start_attempts: 3,
            tool_secs: DEFAULT_TOOL_SECS,
        }
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            url: None,
            failure_patterns: vec![
                "migration failed".into(),
                "failed to migrate".into(),
                "migration aborted".into(),
                "unknown database schema version".into(),
            ],
            log_dir: PathBuf::from("/var/log/stalwart"),
            probation_secs: 180,
        }
    }
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            keep: 3,
            dir: None,
            store_paths: Vec::new(),
            database_ca_file: None,
        }
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            unattended: vec!["patch".into()],
            manage_holds: true,
        }
    }
}

impl Default for WebadminSettings {
    fn default() -> Self {
        WebadminSettings {
            enabled: true,
            url: None,
            credentials_file: None,
            ca_file: None,
            timeout_secs: 90,
        }
    }
}

impl Settings {
    /// Loads `STALWART_UPGRADE_CONFIG`, else the default path; a missing default file means defaults.
    pub fn load() -> Result<Settings, ConfigError> {
        match std::env::var_os(ENV_PATH) {
            Some(p) => Self::load_from(Path::new(&p)),
            None if Path::new(DEFAULT_PATH).exists()
                || Path::new(DEFAULT_PATH).with_file_name("config.d").is_dir() =>
            {
                Self::load_from(Path::new(DEFAULT_PATH))
            }
            None => Ok(Settings::default()),
        }
    }

    /// Reads `path`, then merges every `config.d/*.toml` next to it in name order (later files
    /// win, tables merge key by key). Admins put their changes in a drop-in so the packaged
    /// config.toml (a conffile) stays unmodified: dpkg then never asks a conffile question on a
    /// helper upgrade, which would make unattended-upgrades skip it.
    pub fn load_from(path: &Path) -> Result<Settings, ConfigError> {
        let dir = path.with_file_name("config.d");
        // Drop-ins alone (no main file) are fine too.
        let mut merged = if !path.exists() && dir.is_dir() {
            toml::Table::new()
        } else {
            read_table(path)?
        };
        let mut dropins: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        dropins.sort();
        for d in &dropins {
            let overlay = read_table(d)?;
            merge(&mut merged, overlay);
            // Validate each drop-in on its own so an unknown key names the file it is in.
            toml::Value::Table(read_table(d)?)
                .try_into::<Settings>()
                .map_err(|e| ConfigError::Parse {
                    path: d.clone(),
                    message: e.to_string(),
                })?;
        }
        let mut settings = toml::Value::Table(merged)
            .try_into::<Settings>()
            .map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        settings.validate().map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        settings.source = Some(path.to_owned());
        Ok(settings)
    }

    pub fn parse(text: &str) -> Result<Settings, String> {
        let s: Settings = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Refuses values that parse but cannot be meant: a timeout so large that adding it to the
    /// clock overflows (a panic deep inside an upgrade), an unattended class nobody can match
    /// (a typo that would silently hold every upgrade back), an empty failure pattern (it
    /// matches every log line, so every start would count as failed).
    fn validate(&self) -> Result<(), String> {
        let t = &self.timeouts;
        for (name, secs) in [
            ("timeouts.stop_secs", t.stop_secs),
            ("timeouts.start_secs", t.start_secs),
            ("timeouts.ready_secs", t.ready_secs),
            ("timeouts.settle_secs", t.settle_secs),
            ("timeouts.lock_wait_secs", t.lock_wait_secs),
            ("timeouts.tool_secs", t.tool_secs),
            ("webadmin.timeout_secs", self.webadmin.timeout_secs),
            ("health.probation_secs", self.health.probation_secs),
        ] {
            if secs > MAX_TIMEOUT_SECS {
                return Err(format!(
                    "`{name}` = {secs} is larger than {MAX_TIMEOUT_SECS} (30 days)"
                ));
            }
        }
        if t.tool_secs == 0 {
            return Err(
                "`timeouts.tool_secs` = 0 would stop every dump and restore at once; give the \
                 longest a dump or restore of the database may take (default 3600)"
                    .into(),
            );
        }
        for c in &self.policy.unattended {
            if !["patch", "minor", "major"]
                .iter()
                .any(|k| c.eq_ignore_ascii_case(k))
            {
                return Err(format!(
                    "`policy.unattended` contains {c:?}; the classes are \"patch\", \"minor\" and \"major\""
                ));
            }
        }
        if let Some(p) = &self.snapshots.database_ca_file {
            // The database tools run in another working directory, as another user.
            if !p.is_absolute() {
                return Err(format!(
                    "`snapshots.database_ca_file` = \"{}\" is not an absolute path",
                    p.display()
                ));
            }
        }
        if self
            .health
            .failure_patterns
            .iter()
            .any(|p| p.trim().is_empty())
        {
            return Err(
                "`health.failure_patterns` contains an empty pattern, which matches every log line"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.prefix.join("bin")
    }
    /// The staging directory exchanged with bin/ (spec: /opt/stalwart/bin.new).
    pub fn staged_dir(&self) -> PathBuf {
        self.prefix.join("bin.new")
    }
    /// install.sh's env file, next to the config it writes (PREFIX/etc/stalwart.env, or
    /// /etc/stalwart/stalwart.env in its FHS layout), in the server's own directory: moved to
    /// `server_env` by the packages, never read by the unit again.
    pub fn legacy_server_env(&self) -> PathBuf {
        self.server_config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.prefix.join("etc"))
            .join("stalwart.env")
    }
    pub fn server_binary(&self) -> PathBuf {
        self.bin_dir().join("stalwart")
    }
    /// The drop-in directory next to the helper's config (`config.d/`).
    pub fn dropin_dir(&self) -> PathBuf {
        self.source
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_PATH))
            .with_file_name("config.d")
    }
    /// Where >= 0.16 reads its config: the configured config.json (install.sh's FHS layout
    /// records /etc/stalwart/config.json), else upstream's PREFIX/etc/config.json (the crossing
    /// writes it there).
    pub fn config_json_path(&self) -> PathBuf {
        match &self.server_config {
            Some(p) if p.extension().is_some_and(|x| x == "json") => p.clone(),
            _ => self.prefix.join("etc/config.json"),
        }
    }
    /// The server config actually in use: the configured one, else config.toml, else config.json.
    pub fn server_config_path(&self) -> PathBuf {
        if let Some(p) = &self.server_config {
            return p.clone();
        }
        let toml = self.prefix.join("etc/config.toml");
        let json = self.config_json_path();
        if !toml.exists() && json.exists() {
            json
        } else {
            toml
        }
    }
    pub fn snapshot_dir(&self) -> PathBuf {
        self.snapshots
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("snapshots"))
    }
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.stop_secs)
    }
    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.start_secs)
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_install_sh_layout() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(
            s.server_binary(),
            PathBuf::from("/opt/stalwart/bin/stalwart")
        );
        assert_eq!(s.staged_dir(), PathBuf::from("/opt/stalwart/bin.new"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Settings::parse("unti = \"x\"").unwrap_err();
        assert!(e.contains("unti"), "{e}");
    }

    #[test]
    fn drop_ins_merge_in_name_order_and_name_their_file_on_error() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("config.toml");
        std::fs::write(&base, "# all defaults\n[timeouts]\nstop_secs = 10\n").unwrap();
        let d = t.path().join("config.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("10-site.toml"),
            "[timeouts]\nready_secs = 7\n[snapshots]\nkeep = 5\n",
        )
        .unwrap();
        std::fs::write(d.join("20-host.toml"), "[snapshots]\nkeep = 9\n").unwrap();
        std::fs::write(d.join("README"), "not toml").unwrap();
        let s = Settings::load_from(&base).unwrap();
        assert_eq!(s.timeouts.stop_secs, 10);
        assert_eq!(s.timeouts.ready_secs, 7);
        assert_eq!(s.snapshots.keep, 9);
        std::fs::write(d.join("30-typo.toml"), "[snapshots]\nkepe = 1\n").unwrap();
        let e = Settings::load_from(&base).unwrap_err().to_string();
        assert!(e.contains("30-typo.toml") && e.contains("kepe"), "{e}");
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let s = Settings::parse("[timeouts]\nstop_secs = 5\n[snapshots]\nkeep = 7\n").unwrap();
        assert_eq!(s.timeouts.stop_secs, 5);
        assert_eq!(s.timeouts.ready_secs, 300);
        assert_eq!(s.snapshots.keep, 7);
        assert_eq!(
            s.snapshot_dir(),
            PathBuf::from("/var/lib/stalwart-upgrade/snapshots")
        );
    }

    #[test]
    fn database_ca_file_is_an_absolute_path() {
        let s =
            Settings::parse("[snapshots]\ndatabase_ca_file = \"/etc/ssl/db-ca.pem\"\n").unwrap();
        assert_eq!(
            s.snapshots.database_ca_file,
            Some(PathBuf::from("/etc/ssl/db-ca.pem"))
        );
        let e = Settings::parse("[snapshots]\ndatabase_ca_file = \"db-ca.pem\"\n").unwrap_err();
        assert!(e.contains("database_ca_file"), "{e}");
    }
}
