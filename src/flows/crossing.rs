//! Crossing upstream's 0.16 line (facts: stalwart.md). 0.16 reads config.json (one DataStore
//! object) instead of config.toml, and migrates a 0.15 database (schema 5 -> 6) only when started
//! with `STALWART_RECOVERY_MODE=1` — a migration that wipes settings, directory, reports, tasks and
//! quotas (e-mail is kept).
//!
//! The helper never rewrites config.toml (the 0.15 server owns it) and never edits the unit file:
//! it writes config.json next to config.toml, points the unit at it with a drop-in, and runs the
//! one recovery-mode start through the unit itself (its user, capabilities and sandbox) with a
//! runtime drop-in that a reboot would discard. Undo removes exactly these files, so a rollback
//! leaves config.toml, the unit and (with the data snapshot) the data as they were.
//!
//! Going back below the line later (`rollback` from 0.16 to the kept 0.15 release) sets the same
//! two files aside into the state dir (`set_aside`), so the unit runs config.toml again; the data
//! comes from the snapshot taken before the upgrade (schema 5: 0.15 panics on schema 6).

use crate::config::Settings;
use crate::os::fsutil::Dir;
use crate::os::systemd::Systemd;
use crate::server::lines::{is_json, RECOVERY_PORT};
use crate::server::serverconfig::{ServerConfig, StoreKind};
use crate::server::version::Version;
use crate::Error;
use std::path::{Path, PathBuf};

pub fn crosses(from: &Version, to: &Version) -> bool {
    !is_json(from) && is_json(to)
}

/// The server config the installed server binary reads (its version decides; see
/// `server::lines::server_config_path`). Every "which config does the server read" goes through
/// here or there.
pub fn current_server_config(s: &Settings) -> PathBuf {
    match crate::store::swap::binary_version(&s.server_binary()) {
        Ok(v) => crate::server::lines::server_config_path(s, &v),
        Err(_) => s.server_config_path(),
    }
}

pub struct Paths {
    pub config_json: PathBuf,
    /// Persistent drop-in: ExecStart with config.json.
    pub dropin: PathBuf,
    /// Runtime drop-in (/run): recovery mode for the one migrating start.
    pub recovery_dropin: PathBuf,
    /// Its root-only env file (the one-time recovery administrator).
    pub recovery_env: PathBuf,
}

pub fn paths(s: &Settings) -> Paths {
    let name = "50-stalwart-upgrade-0.16.conf";
    Paths {
        config_json: s.prefix.join("etc/config.json"),
        dropin: PathBuf::from(format!("/etc/systemd/system/{}.d/{name}", s.unit)),
        recovery_env: PathBuf::from(format!("/run/stalwart-upgrade/{}-recovery.env", s.unit)),
        recovery_dropin: PathBuf::from(format!(
            "/run/systemd/system/{}.d/50-stalwart-upgrade-recovery.conf",
            s.unit
        )),
    }
}

/// The 0.16 DataStore object for config.toml's `storage.data` store. SQL stores take their
/// connection from 0.15's own settings (`raw`, the dump: values as written, macros unexpanded),
/// so that a password given as `%{env:VAR}%` or `%{file:PATH}%` stays a reference
/// (`EnvironmentVariable` / `File` secret) instead of being copied into config.json.
pub fn data_store_json(
    cfg: &ServerConfig,
    raw: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<String, Error> {
    let store = cfg
        .stores
        .iter()
        .find(|s| s.roles.iter().any(|r| r == "data"))
        .ok_or_else(|| Error::Preflight(format!("{} names no data store", cfg.path.display())))?;
    let v = match &store.kind {
        StoreKind::RocksDb { path } => serde_json::json!({"@type": "RocksDb", "path": path}),
        StoreKind::Sqlite { path } => serde_json::json!({"@type": "Sqlite", "path": path}),
        StoreKind::PostgreSql(_) | StoreKind::MySql(_) => {
            let raw = raw.ok_or_else(|| {
                Error::Preflight("the SQL data store's settings were not read".into())
            })?;
            sql_store_json(&store.id, &store.kind, raw)?
        }
        other => {
            return Err(Error::Refused(format!(
                "the data store `{}` is a {} store: 0.16's config.json holds RocksDB, SQLite, PostgreSQL, MySQL or FoundationDB data stores, and this helper carries the first four; write config.json by hand (see UPGRADING/v0_16.md) and upgrade with upstream's procedure",
                store.id,
                other.type_name()
            )))
        }
    };
    serde_json::to_string_pretty(&v).map_err(|e| Error::Preflight(e.to_string()))
}

/// 0.16's `PostgreSql` / `MySql` DataStore from 0.15's `store.<id>.*` (facts: crossing.md 5).
fn sql_store_json(
    id: &str,
    kind: &StoreKind,
    raw: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Value, Error> {
    let get = |k: &str| raw.get(&format!("store.{id}.{k}")).map(String::as_str);
    let (ty, default_port) = match kind {
        StoreKind::PostgreSql(_) => ("PostgreSql", 5432),
        _ => ("MySql", 3306),
    };
    let refuse = |what: &str| {
        Error::Refused(format!(
            "store.{id}.{what} is a %{{..}}% macro 0.16's config.json cannot express: write the value there, then run the upgrade again; nothing was changed"
        ))
    };
    let plain = |k: &str| -> Result<Option<String>, Error> {
        match get(k) {
            Some(v) if v.contains("%{") => Err(refuse(k)),
            other => Ok(other.map(String::from)),
        }
    };
    let mut v = serde_json::json!({"@type": ty});
    v["host"] = serde_json::json!(plain("host")?.unwrap_or_default());
    let port = plain("port")?
        .map(|p| p.parse::<u16>().map_err(|_| refuse("port")))
        .transpose()?
        .unwrap_or(default_port);
    v["port"] = serde_json::json!(port);
    if let Some(db) = plain("database")? {
        v["database"] = serde_json::json!(db);
    }
    if let Some(u) = plain("user")?.filter(|u| !u.is_empty()) {
        v["authUsername"] = serde_json::json!(u);
    }
    v["authSecret"] = match get("password") {
        None | Some("") => serde_json::json!({"@type": "None"}),
        Some(p) => secret_json(p).ok_or_else(|| refuse("password"))?,
    };
    if let Some(t) = plain("tls.enable")? {
        v["useTls"] = serde_json::json!(t == "true");
    }
    if let Some(t) = plain("tls.allow-invalid-certs")? {
        v["allowInvalidCerts"] = serde_json::json!(t == "true");
    }
    Ok(v)
}

/// A 0.15 secret value as a 0.16 secret object: `%{env:NAME}%` and `%{file:PATH}%` stay
/// references (0.16 reads them from its own environment / the file); other macros: None.
fn secret_json(v: &str) -> Option<serde_json::Value> {
    let inner = v
        .trim()
        .strip_prefix("%{")
        .and_then(|r| r.strip_suffix("}%"));
    match inner {
        Some(m) => {
            if let Some(name) = m.strip_prefix("env:").filter(|n| !n.contains("%{")) {
                Some(serde_json::json!({"@type": "EnvironmentVariable", "variableName": name}))
            } else {
                m.strip_prefix("file:")
                    .filter(|p| !p.contains("%{"))
                    .map(|p| serde_json::json!({"@type": "File", "filePath": p}))
            }
        }
        None if v.contains("%{") => None,
        None => Some(serde_json::json!({"@type": "Value", "secret": v})),
    }
}

/// The drop-in that makes the unit run >= 0.16: config.json, the env file (install.sh's 0.16
/// unit reads it; its 0.15 unit, which the crossing of an adopted installation keeps, does not;
/// the empty `EnvironmentFile=` drops install.sh's PREFIX/etc/stalwart.env, in the service
/// user's directory, which PID 1 would read as root),
/// the dangerous variables unset, and no ConditionPathExists (a missing config.json is upstream's
/// setup wizard, not a reason not to start).
fn dropin_text(s: &Settings, config_json: &std::path::Path) -> String {
    let bin = s.server_binary();
    format!(
        "# Written by stalwart-upgrade: Stalwart >= 0.16 reads config.json and its environment file.\n\
         # Removed again when the server goes back below the 0.16 line.\n\
         [Unit]\nConditionPathExists=\n\
         [Service]\nEnvironmentFile=\nEnvironmentFile=-{env}\nUnsetEnvironment=DANGER_FORCE_MIGRATE CONFIG_PATH\n\
         ExecStart=\nExecStart={bin} --config={json}\n",
        json = config_json.display(),
        env = s.server_env.display(),
        bin = bin.display()
    )
}

/// Points the unit at the generation of `version`: the 0.16 drop-in written for >= 0.16, removed
/// below. Returns whether anything changed (then systemd was reloaded).
pub fn point_unit(s: &Settings, sys: &Systemd, version: &Version) -> Result<bool, Error> {
    let changed = write_unit_dropin(s, version)?;
    if changed {
        sys.daemon_reload()?;
    }
    Ok(changed)
}

/// [`point_unit`] without the reload (a first install without a running systemd).
pub fn write_unit_dropin(s: &Settings, version: &Version) -> Result<bool, Error> {
    let p = paths(s);
    let want = is_json(version).then(|| dropin_text(s, &p.config_json));
    let have = std::fs::read_to_string(&p.dropin).ok();
    if want == have {
        return Ok(false);
    }
    match want {
        Some(text) => {
            mkdir_parent(&p.dropin)?;
            crate::store::state::write_atomic(&p.dropin, text.as_bytes(), 0o644)?;
        }
        None => remove_nofollow(&p.dropin)?,
    }
    Ok(true)
}

/// Writes `path` (in a directory the server's user may write: etc/) with the owner and mode of
/// `like` (config.toml), set on the new file's descriptor before it is renamed into place:
/// nothing is ever done through the name, which that user could point elsewhere.
fn write_owned_like(path: &Path, text: &str, like: &Path) -> Result<(), Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(crate::store::swap::SwapError::from(e));
    let (dir, name) = Dir::open_parent(path).map_err(fs)?;
    let like_meta = Dir::open_parent(like)
        .ok()
        .and_then(|(d, n)| d.stat(n).ok().flatten())
        .filter(|m| m.kind == crate::os::fsutil::Kind::File);
    let (owner, mode) = match like_meta {
        Some(m) => (Some((m.uid, m.gid)), m.mode & 0o777),
        None => (None, 0o640),
    };
    dir.write_atomic(name, text.as_bytes(), mode, owner)
        .map_err(fs)?;
    Ok(())
}

/// Reads `path` (regular file, not followed through a symlink) or None when it is missing.
fn read_nofollow(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(crate::store::swap::SwapError::from(e));
    let (dir, name) = match Dir::open_parent(path) {
        Ok(x) => x,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(fs(e)),
    };
    match dir.read_file(&name, 4 << 20) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(fs(e)),
    }
}

/// Removes the file `path` through its directory (a missing one is fine).
fn remove_nofollow(path: &Path) -> Result<(), Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(crate::store::swap::SwapError::from(e));
    match Dir::open_parent(path) {
        Ok((dir, name)) => {
            dir.remove_file(name).map_err(fs)?;
            // Power loss must not bring the file back (a config.json or drop-in of the other
            // server generation next to a server that must not read it).
            dir.fsync().map_err(fs)
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(fs(e)),
    }
}

fn mkdir_parent(p: &std::path::Path) -> Result<(), Error> {
    if let Some(d) = p.parent() {
        // Durably: power loss must not drop a new drop-in directory with the file in it.
        crate::store::state::create_dir_all_durable(d).map_err(|source| {
            crate::store::state::StateError::Io {
                path: d.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Writes config.json (owned like config.toml) and the unit drop-in, then reloads systemd.
pub fn apply(s: &Settings, sys: &Systemd, cfg: &ServerConfig, json: &str) -> Result<(), Error> {
    let p = paths(s);
    write_owned_like(&p.config_json, json, &cfg.path)?;
    mkdir_parent(&p.dropin)?;
    crate::store::state::write_atomic(&p.dropin, dropin_text(s, &p.config_json).as_bytes(), 0o644)?;
    sys.daemon_reload()?;
    Ok(())
}

/// Removes what `apply` and `migrate` wrote; idempotent.
pub fn undo(s: &Settings, sys: &Systemd) -> Result<(), Error> {
    let p = paths(s);
    for f in [
        &p.recovery_dropin,
        &p.recovery_env,
        &p.dropin,
        &p.config_json,
    ] {
        remove_nofollow(f)?;
    }
    sys.daemon_reload()?;
    Ok(())
}

/// The recovery-mode start: through the unit, with a runtime drop-in whose root-only env file
/// sets STALWART_RECOVERY_MODE=1, the recovery port and `admin` (a one-time recovery
/// administrator, so the carry step can log in), until the server is ready (the migration done).
/// It keeps running for the carry step; `end_recovery` stops it. The env file is listed after
/// the persistent drop-in's stalwart.env, so its values win (systemd reads EnvironmentFile=
/// in order), and its content never shows in `systemctl show` as Environment= would.
pub fn start_recovery(
    s: &Settings,
    sys: &Systemd,
    start: impl FnOnce() -> Result<(), Error>,
    cfg: &ServerConfig,
    admin: &(String, String),
) -> Result<(), Error> {
    let p = paths(s);
    mkdir_parent(&p.recovery_env)?;
    crate::store::state::write_atomic(
        &p.recovery_env,
        format!(
            "STALWART_RECOVERY_MODE=1\nSTALWART_RECOVERY_MODE_PORT={RECOVERY_PORT}\nSTALWART_RECOVERY_ADMIN='{}:{}'\n",
            admin.0, admin.1
        )
        .as_bytes(),
        0o600,
    )?;
    mkdir_parent(&p.recovery_dropin)?;
    crate::store::state::write_atomic(
        &p.recovery_dropin,
        format!(
            "# stalwart-upgrade: the one start that migrates a 0.15 database (upstream's recovery mode)\n[Service]\nEnvironmentFile={}\n",
            p.recovery_env.display()
        )
        .as_bytes(),
        0o644,
    )?;
    sys.daemon_reload()?;
    let expect = crate::server::health::Expect::recovery();
    start()?;
    crate::server::health::gate(sys, s, Some(cfg), &expect)?;
    Ok(())
}

/// Stops the recovery-mode server and removes the runtime drop-in and its env file, so the
/// normal start that follows runs without them. Idempotent.
pub fn end_recovery(s: &Settings, sys: &Systemd) -> Result<(), Error> {
    let p = paths(s);
    let stopped = sys.stop(&s.unit, s.stop_timeout());
    remove_nofollow(&p.recovery_dropin)?;
    remove_nofollow(&p.recovery_env)?;
    sys.daemon_reload()?;
    stopped?;
    Ok(())
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        crate::store::state::StateError::Io {
            path: path.to_owned(),
            source,
        }
        .into()
    }
}

/// The files `set_aside` moves: (live path, name in the aside dir).
fn aside_files(s: &Settings) -> [(PathBuf, &'static str); 2] {
    let p = paths(s);
    [
        (p.config_json, "config.json"),
        (p.dropin, "unit-drop-in.conf"),
    ]
}

/// Rolling back below 0.16: moves config.json and the unit drop-in into `aside` (a copy made
/// durable before the live file goes: the two may be on different file systems), removes a
/// leftover recovery drop-in, reloads systemd. Idempotent: a file already moved is skipped.
pub fn set_aside(s: &Settings, sys: &Systemd, aside: &std::path::Path) -> Result<(), Error> {
    // Durably (each new directory's parent fsync'd): power loss after the live file's removal
    // must still find the copy, whose own fsyncs cover only the file and `aside` itself.
    crate::store::state::create_dir_all_durable(aside).map_err(io_err(aside))?;
    for (live, name) in aside_files(s) {
        let kept = aside.join(name);
        if let Some(bytes) = read_nofollow(&live)? {
            crate::store::state::write_atomic(&kept, &bytes, 0o600)?;
            remove_nofollow(&live)?;
        }
    }
    remove_nofollow(&paths(s).recovery_dropin)?;
    sys.daemon_reload()?;
    Ok(())
}

/// Undo of `set_aside`: config.json back (owned like config.toml, as `apply` wrote it), the
/// drop-in back, systemd reloaded. Idempotent.
pub fn put_back(s: &Settings, sys: &Systemd, aside: &std::path::Path) -> Result<(), Error> {
    for (live, name) in aside_files(s) {
        let kept = aside.join(name);
        let bytes = match std::fs::read(&kept) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&kept)(e)),
        };
        if name == "config.json" {
            let text = String::from_utf8_lossy(&bytes);
            write_owned_like(&live, &text, &s.server_config_path())?;
        } else {
            mkdir_parent(&live)?;
            crate::store::state::write_atomic(&live, &bytes, 0o644)?;
        }
        std::fs::remove_file(&kept).map_err(io_err(&kept))?;
    }
    sys.daemon_reload()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::serverconfig::SqlConn;

    #[test]
    fn a_removed_crossing_file_stays_removed_after_a_power_loss() {
        use crate::os::fsutil::trace;
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("config.json");
        std::fs::write(&f, b"{}").unwrap();
        trace::start();
        remove_nofollow(&f).unwrap();
        remove_nofollow(&f).unwrap(); // missing: fine
        let log = trace::take();
        assert!(!f.exists());
        assert_eq!(
            log[..2],
            [
                format!("remove {}", f.display()),
                format!("fsync {}", t.path().display()),
            ],
            "{log:#?}"
        );
    }

    fn raw(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("store.pg.{k}"), v.to_string()))
            .collect()
    }

    fn pg() -> StoreKind {
        StoreKind::PostgreSql(SqlConn {
            host: "h".into(),
            port: None,
            database: "d".into(),
            user: None,
            password: None,
            tls: false,
            ca_file: None,
        })
    }

    #[test]
    fn sql_data_stores_keep_their_secrets_as_references() {
        let r = raw(&[
            ("host", "db.local"),
            ("database", "mail"),
            ("user", "st"),
            ("password", "%{env:PGPW}%"),
            ("tls.enable", "true"),
        ]);
        let v = sql_store_json("pg", &pg(), &r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"@type": "PostgreSql", "host": "db.local", "port": 5432,
                "database": "mail", "authUsername": "st", "useTls": true,
                "authSecret": {"@type": "EnvironmentVariable", "variableName": "PGPW"}})
        );
        let file = sql_store_json("pg", &pg(), &raw(&[("password", "%{file:/run/pw}%")])).unwrap();
        assert_eq!(
            file["authSecret"],
            serde_json::json!({"@type": "File", "filePath": "/run/pw"})
        );
        let value = sql_store_json("pg", &pg(), &raw(&[("password", "s3cret")])).unwrap();
        assert_eq!(value["authSecret"]["secret"], "s3cret");
        assert!(sql_store_json("pg", &pg(), &raw(&[("password", "a%{env:X}%b")])).is_err());
        assert!(sql_store_json("pg", &pg(), &raw(&[("host", "%{env:H}%")])).is_err());
        let my = StoreKind::MySql(match pg() {
            StoreKind::PostgreSql(c) => c,
            _ => unreachable!(),
        });
        assert_eq!(sql_store_json("pg", &my, &raw(&[])).unwrap()["port"], 3306);
    }
}
