//! Server configuration of both generations.
//!
//! * <= 0.15: `config.toml` (facts file, "Two generations"): `[server.listener.<id>]` with `bind`
//!   and `protocol`, `[storage] data/blob = "<store id>"`, `[store.<id>] type/path`,
//!   `[authentication.fallback-admin] user/secret`, `%{env:VAR}%` and `%{file:/path}%` macros.
//! * 0.16 and newer: `config.json`, one DataStore object such as `{"@type":"RocksDb","path":"..."}`; a
//!   missing file means bootstrap mode (no data store yet).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The data store the stand-in can run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// RocksDB-like directory (upstream `type = "rocksdb"` / `"@type": "RocksDb"`).
    Rocks(PathBuf),
    /// SQLite file (upstream `type = "sqlite"` / `"@type": "Sqlite"`).
    Sqlite(PathBuf),
}

#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// `None`: no data store configured (0.16 bootstrap mode, or a 0.15 file without
    /// `storage.data`): `/healthz/ready` answers 503.
    pub data: Option<StoreSpec>,
    /// Directory of an `fs` blob store (0.15 `storage.blob` pointing to `type = "fs"`).
    pub blob_dir: Option<PathBuf>,
    /// Ports of the plain-HTTP listeners (always bound on 127.0.0.1).
    pub http_ports: Vec<u16>,
    /// Fallback administrator (user, plain secret).
    pub admin: Option<(String, String)>,
    /// STAND-IN ONLY (not upstream): users who authenticate but lack WebadminUpdate.
    pub unprivileged: BTreeMap<String, String>,
}

/// Port the stand-in listens on for >= 0.16, which has no listeners in its config file
/// (upstream's fallback health check uses http://127.0.0.1:8080).
pub const DEFAULT_HTTP_PORT_016: u16 = 8080;

/// Loads the configuration at `path` for a binary of the given generation.
pub fn load(path: &Path, json_generation: bool) -> Result<ServerConfig, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && json_generation => None,
        Err(e) => {
            return Err(format!(
                "Failed to read configuration file {}: {e}",
                path.display()
            ))
        }
    };
    let looks_json = text
        .as_deref()
        .is_some_and(|t| t.trim_start().starts_with('{'));
    let mut cfg = match (json_generation, text) {
        (true, None) => {
            crate::warn!(
                "Configuration file {} not found: bootstrap mode, no data store configured",
                path.display()
            );
            ServerConfig::default()
        }
        (true, Some(_)) if !looks_json => {
            return Err(format!(
                "Configuration file {} is not a config.json DataStore object (it looks like a \
                 0.15 config.toml); this version reads config.json, see UPGRADING/v0_16.md",
                path.display()
            ))
        }
        (true, Some(t)) => load_json(&t).map_err(|e| format!("{}: {e}", path.display()))?,
        (false, Some(_)) if looks_json => {
            return Err(format!(
                "Configuration file {} looks like a 0.16 config.json; this version reads a \
                 TOML config.toml",
                path.display()
            ))
        }
        (false, Some(t)) => load_toml(&t).map_err(|e| format!("{}: {e}", path.display()))?,
        (false, None) => return Err(format!("{} not found", path.display())),
    };
    if json_generation {
        cfg.http_ports = vec![DEFAULT_HTTP_PORT_016];
    }
    // STAND-IN ONLY: lets host tests run several servers at once.
    if let Ok(p) = std::env::var("STANDIN_HTTP_PORT") {
        let port = p
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("STANDIN_HTTP_PORT={p:?} is not a port number"))?;
        cfg.http_ports = vec![port];
    }
    Ok(cfg)
}

fn load_json(text: &str) -> Result<ServerConfig, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("the configuration must be one DataStore object")?;
    let ty = obj
        .get("@type")
        .and_then(|t| t.as_str())
        .ok_or("missing \"@type\" in the DataStore object")?;
    let path = || -> Result<PathBuf, String> {
        obj.get("path")
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("DataStore {ty} needs a \"path\""))
    };
    let data = match ty {
        "RocksDb" => StoreSpec::Rocks(path()?),
        "Sqlite" => StoreSpec::Sqlite(path()?),
        "FoundationDb" | "PostgreSql" | "MySql" => {
            return Err(format!(
                "DataStore {ty} is valid upstream but not supported by the stand-in"
            ))
        }
        other => return Err(format!("unknown DataStore type {other:?}")),
    };
    // Upstream 0.16 keeps accounts in its database (registry); the stand-in takes the
    // administrator from env STALWART_ADMIN_USER / STALWART_ADMIN_SECRET, default admin/admin.
    let user = std::env::var("STALWART_ADMIN_USER").unwrap_or_else(|_| "admin".into());
    let secret = std::env::var("STALWART_ADMIN_SECRET").unwrap_or_else(|_| "admin".into());
    // STAND-IN ONLY: "bob:pass,carol:pw" = users without the update permission.
    let mut unprivileged = BTreeMap::new();
    if let Ok(list) = std::env::var("STANDIN_UNPRIVILEGED_USERS") {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            let (u, p) = item
                .split_once(':')
                .ok_or("STANDIN_UNPRIVILEGED_USERS must look like user:pass,user2:pass2")?;
            unprivileged.insert(u.trim().to_string(), p.to_string());
        }
    }
    Ok(ServerConfig {
        data: Some(data),
        blob_dir: None,
        http_ports: Vec::new(),
        admin: Some((user, secret)),
        unprivileged,
    })
}

/// Replaces `%{env:VAR}%` and `%{file:/path}%` in a string value (upstream config macros).
fn expand(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("%{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}%") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        match inner.split_once(':') {
            Some(("env", var)) => match std::env::var(var) {
                Ok(v) => out.push_str(&v),
                Err(_) => {
                    crate::warn!(
                        "Configuration macro %{{env:{var}}}%: variable not set, using \"\""
                    )
                }
            },
            Some(("file", p)) => {
                let v =
                    std::fs::read_to_string(p).map_err(|e| format!("macro %{{file:{p}}}%: {e}"))?;
                out.push_str(v.trim_end_matches(['\n', '\r']));
            }
            _ => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_value(v: &mut toml::Value) -> Result<(), String> {
    match v {
        toml::Value::String(s) => *s = expand(s)?,
        toml::Value::Array(a) => a.iter_mut().try_for_each(expand_value)?,
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, v)| expand_value(v))?,
        _ => {}
    }
    Ok(())
}

fn get<'a>(root: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let mut cur = root.get(path[0])?;
    for key in &path[1..] {
        cur = cur.as_table()?.get(*key)?;
    }
    Some(cur)
}

fn get_str<'a>(root: &'a toml::Table, path: &[&str]) -> Result<Option<&'a str>, String> {
    match get(root, path) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{} must be a string", path.join("."))),
    }
}

fn load_toml(text: &str) -> Result<ServerConfig, String> {
    let mut root: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
    for (_, v) in root.iter_mut() {
        expand_value(v)?;
    }
    let mut cfg = ServerConfig::default();

    if let Some(listeners) = get(&root, &["server", "listener"]) {
        let listeners = listeners
            .as_table()
            .ok_or("server.listener must be a table")?;
        for (id, l) in listeners {
            let l = l
                .as_table()
                .ok_or_else(|| format!("server.listener.{id} must be a table"))?;
            if l.get("protocol").and_then(|p| p.as_str()) != Some("http") {
                continue;
            }
            let implicit_tls = l
                .get("tls")
                .and_then(|t| t.get("implicit"))
                .and_then(|i| i.as_bool())
                .unwrap_or(false);
            if implicit_tls {
                // The stand-in speaks no TLS; upstream would serve HTTPS here.
                crate::info!("Listener {id}: implicit TLS is not served by the stand-in, skipped");
                continue;
            }
            let binds: Vec<&str> = match l.get("bind") {
                Some(toml::Value::String(s)) => vec![s.as_str()],
                Some(toml::Value::Array(a)) => a.iter().filter_map(|b| b.as_str()).collect(),
                _ => return Err(format!("server.listener.{id}.bind is missing")),
            };
            for b in binds {
                let port = b
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("server.listener.{id}.bind {b:?} has no port"))?;
                if !cfg.http_ports.contains(&port) {
                    cfg.http_ports.push(port);
                }
            }
        }
    }

    let store = |id: &str| -> Result<(String, Option<PathBuf>), String> {
        let ty = get_str(&root, &["store", id, "type"])?
            .ok_or_else(|| format!("store.{id}.type is missing"))?;
        let path = get_str(&root, &["store", id, "path"])?.map(PathBuf::from);
        Ok((ty.to_string(), path))
    };
    if let Some(id) = get_str(&root, &["storage", "data"])? {
        let (ty, path) = store(id)?;
        let path = path.ok_or_else(|| format!("store.{id}.path is missing"))?;
        cfg.data = Some(match ty.as_str() {
            "rocksdb" => StoreSpec::Rocks(path),
            "sqlite" => StoreSpec::Sqlite(path),
            "postgresql" | "mysql" | "foundationdb" => {
                return Err(format!(
                    "store type {ty:?} is valid upstream but not supported by the stand-in"
                ))
            }
            other => return Err(format!("store.{id}: {other:?} cannot be a data store")),
        });
    }
    if let Some(id) = get_str(&root, &["storage", "blob"])? {
        let (ty, path) = store(id)?;
        match ty.as_str() {
            "fs" => {
                cfg.blob_dir = Some(path.ok_or_else(|| format!("store.{id}.path is missing"))?);
            }
            // Blobs kept inside the data store: the stand-in does not model them separately.
            "rocksdb" | "sqlite" => {}
            other => {
                return Err(format!(
                    "blob store type {other:?} is not supported by the stand-in"
                ))
            }
        }
    }

    if let Some(user) = get_str(&root, &["authentication", "fallback-admin", "user"])? {
        let secret = get_str(&root, &["authentication", "fallback-admin", "secret"])?
            .ok_or("authentication.fallback-admin.secret is missing")?;
        // Upstream stores a password hash here (sha512-crypt "$6$..." from --init); the
        // stand-in verifies "$6$" hashes and compares anything else as a plain secret
        // (see crypt.rs).
        cfg.admin = Some((user.to_string(), secret.to_string()));
    }

    // STAND-IN ONLY (not upstream): [standin] unprivileged-users = { "bob" = "pass" }.
    if let Some(users) = get(&root, &["standin", "unprivileged-users"]) {
        let users = users
            .as_table()
            .ok_or("standin.unprivileged-users must be a table")?;
        for (u, p) in users {
            let p = p
                .as_str()
                .ok_or_else(|| format!("standin.unprivileged-users.{u} must be a string"))?;
            cfg.unprivileged.insert(u.clone(), p.to_string());
        }
    }
    Ok(cfg)
}

/// Default configuration written by `--init DIR` (0.15): a reduced version of upstream's
/// (facts file: listeners, `[storage]`, `[store.rocksdb]`, fallback admin).
pub fn default_toml(base: &Path, secret: &str) -> String {
    let b = base.display();
    format!(
        r#"[server.listener.smtp]
bind = "[::]:25"
protocol = "smtp"

[server.listener.imap]
bind = "[::]:143"
protocol = "imap"

[server.listener.https]
protocol = "http"
bind = "[::]:443"
tls.implicit = true

[server.listener.http]
protocol = "http"
bind = "[::]:8080"

[storage]
data = "rocksdb"
fts = "rocksdb"
blob = "rocksdb"
lookup = "rocksdb"
directory = "internal"

[store.rocksdb]
type = "rocksdb"
path = "{b}/data"
compression = "lz4"

[directory.internal]
type = "internal"
store = "rocksdb"

[tracer.log]
type = "log"
level = "info"
path = "{b}/logs"
prefix = "stalwart.log"
rotate = "daily"
ansi = false
enable = true

[authentication.fallback-admin]
user = "admin"
secret = "{secret}"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_config() {
        std::env::set_var("STANDIN_CFG_TEST_SECRET", "s3cret");
        let cfg = load_toml(
            r#"
server.listener.http.bind = ["[::]:8081", "0.0.0.0:8082"]
server.listener.http.protocol = "http"
[server.listener.smtp]
bind = "[::]:25"
protocol = "smtp"
[server.listener.https]
bind = "[::]:443"
protocol = "http"
tls.implicit = true
[storage]
data = "db"
blob = "blobs"
[store.db]
type = "sqlite"
path = "/tmp/x.sqlite"
[store.blobs]
type = "fs"
path = "/tmp/blobs"
[authentication.fallback-admin]
user = "admin"
secret = "%{env:STANDIN_CFG_TEST_SECRET}%"
[standin]
unprivileged-users = { "bob" = "pass" }
"#,
        )
        .unwrap();
        assert_eq!(cfg.http_ports, vec![8081, 8082]);
        assert_eq!(cfg.data, Some(StoreSpec::Sqlite("/tmp/x.sqlite".into())));
        assert_eq!(cfg.blob_dir, Some(PathBuf::from("/tmp/blobs")));
        assert_eq!(cfg.admin, Some(("admin".into(), "s3cret".into())));
        assert_eq!(
            cfg.unprivileged.get("bob").map(String::as_str),
            Some("pass")
        );
    }

    #[test]
    fn json_config() {
        let cfg = load_json(r#"{"@type":"RocksDb","path":"/var/lib/stalwart/"}"#).unwrap();
        assert_eq!(
            cfg.data,
            Some(StoreSpec::Rocks("/var/lib/stalwart/".into()))
        );
        assert!(load_json(r#"{"@type":"Nope"}"#).is_err());
        assert!(load_json(r#"[1]"#).is_err());
    }

    #[test]
    fn macros() {
        assert_eq!(expand("a%{x}%b").unwrap(), "a%{x}%b");
        assert_eq!(expand("plain").unwrap(), "plain");
    }
}
