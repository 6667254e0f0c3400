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

use crate::server::lines::is_json;
use crate::server::serverconfig::{ServerConfig, StoreKind};
use crate::server::version::Version;
use crate::Error;

pub fn crosses(from: &Version, to: &Version) -> bool {
    !is_json(from) && is_json(to)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::serverconfig::SqlConn;

    fn raw(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("store.pg.{k}"), v.to_string()))
            .collect()
    }

    fn pg() -> StoreKind {
        StoreKind::PostgreSql(SqlConn::sample())
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
