//! Server configuration of both generations.
//!
//! * <= 0.15: `config.toml` (facts file, "Two generations"): `[server.listener.<id>]` with `bind`
//!   and `protocol`, `[storage] data/blob = "<store id>"`, `[store.<id>] type/path`,
//!   `[authentication.fallback-admin] user/secret`, `%{env:VAR}%` and `%{file:/path}%` macros;
//!   nested tables or upstream's flattened form (`"server.listener.h.bind.0000" = "..."`, what
//!   the server writes when it rewrites its own file) are read alike.
//! * 0.16 and newer: `config.json`, one DataStore object such as `{"@type":"RocksDb","path":"..."}`; a
//!   missing file means bootstrap mode (measured: an in-memory store, ready, a temporary
//!   administrator printed on stderr unless `STALWART_RECOVERY_ADMIN` is set).

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
    /// Ports of the HTTP listeners with implicit TLS (127.0.0.1), served only when a
    /// certificate is configured.
    pub https_ports: Vec<u16>,
    /// `[certificate.<id>]` `cert` and `private-key` (PEM), from `%{file:PATH}%` or inline.
    pub certificate: Option<(Vec<u8>, Vec<u8>)>,
    /// Fallback administrator (user, plain secret).
    pub admin: Option<(String, String)>,
    /// STAND-IN ONLY (not upstream): users who authenticate but lack WebadminUpdate.
    pub unprivileged: BTreeMap<String, String>,
    /// 0.16: which of upstream's start modes this configuration and environment give.
    pub mode: Mode,
    /// 0.15: the config's keys in upstream's flattened form, for `/api/settings/list` (upstream
    /// lists them with their macros unexpanded; the stand-in has expanded them).
    pub settings: BTreeMap<String, String>,
}

/// 0.16's start modes (0.15 is always `Normal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Normal,
    /// `STALWART_RECOVERY_MODE=1`: only the HTTP port, registry access, no mail.
    Recovery,
    /// No config.json: recovery mode on an in-memory store, the setup wizard.
    Bootstrap,
}

/// Upstream's `STALWART_RECOVERY_ADMIN=user:secret` (both trimmed, both non-empty): an
/// administrator in every 0.16 mode.
pub fn recovery_admin() -> Option<(String, String)> {
    let v = std::env::var("STALWART_RECOVERY_ADMIN").ok()?;
    let (u, p) = v.split_once(':')?;
    let (u, p) = (u.trim(), p.trim());
    (!u.is_empty() && !p.is_empty()).then(|| (u.to_string(), p.to_string()))
}

fn recovery_mode_env() -> bool {
    matches!(
        std::env::var("STALWART_RECOVERY_MODE").as_deref(),
        Ok("1") | Ok("true")
    )
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
        (true, None) => ServerConfig {
            mode: Mode::Bootstrap,
            admin: recovery_admin(),
            ..ServerConfig::default()
        },
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
        if cfg.mode == Mode::Normal && recovery_mode_env() {
            cfg.mode = Mode::Recovery;
        }
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
    // Upstream 0.16 keeps accounts in its database (registry), and STALWART_RECOVERY_ADMIN is
    // an administrator in every mode. The stand-in has no accounts: without that variable it
    // takes one from env STALWART_ADMIN_USER / STALWART_ADMIN_SECRET, default admin/admin
    // (STAND-IN ONLY, standing in for an account made through the API).
    let (user, secret) = recovery_admin().unwrap_or_else(|| {
        (
            std::env::var("STALWART_ADMIN_USER").unwrap_or_else(|_| "admin".into()),
            std::env::var("STALWART_ADMIN_SECRET").unwrap_or_else(|_| "admin".into()),
        )
    });
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
        https_ports: Vec::new(),
        certificate: None,
        admin: Some((user, secret)),
        unprivileged,
        mode: Mode::Normal,
        settings: BTreeMap::new(),
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

/// Flattens the TOML into upstream's key space: `a.b.c = value`, arrays as `key.0000`,
/// `key.0001`, ... The server rewrites its own config.toml in this flattened form (quoted keys
/// such as `"server.listener.http.bind.0000" = "[::]:8080"`), so both forms must be read.
/// String values get their `%{env:..}%` / `%{file:..}%` macros expanded.
fn flatten(prefix: &str, v: &toml::Value, out: &mut Flat) -> Result<(), String> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out)?;
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i:04}"), v, out)?;
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), expand(s)?);
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
    Ok(())
}

type Flat = BTreeMap<String, String>;

/// A key's value, or the values of its array form `key.0000`, `key.0001`, ...
fn values<'a>(flat: &'a Flat, key: &str) -> Vec<&'a str> {
    if let Some(v) = flat.get(key) {
        return vec![v.as_str()];
    }
    let prefix = format!("{key}.");
    flat.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, _)| k[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Ids `x` of all keys `<prefix>.x...`.
fn ids(flat: &Flat, prefix: &str) -> Vec<String> {
    let p = format!("{prefix}.");
    let mut out: Vec<String> = flat
        .range(p.clone()..)
        .take_while(|(k, _)| k.starts_with(&p))
        .filter_map(|(k, _)| k[p.len()..].split('.').next().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn load_toml(text: &str) -> Result<ServerConfig, String> {
    let root: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
    let mut flat = Flat::new();
    flatten("", &toml::Value::Table(root), &mut flat)?;
    let get = |k: &str| flat.get(k).map(String::as_str);
    let mut cfg = ServerConfig {
        settings: flat.clone(),
        ..ServerConfig::default()
    };

    for id in ids(&flat, "server.listener") {
        let key = |k: &str| format!("server.listener.{id}.{k}");
        if get(&key("protocol")) != Some("http") {
            continue;
        }
        let tls = get(&key("tls.implicit")) == Some("true");
        let binds = values(&flat, &key("bind"));
        if binds.is_empty() {
            return Err(format!("server.listener.{id}.bind is missing"));
        }
        for b in binds {
            let port = b
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| format!("server.listener.{id}.bind {b:?} has no port"))?;
            let ports = if tls {
                &mut cfg.https_ports
            } else {
                &mut cfg.http_ports
            };
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }

    let store = |id: &str| -> Result<(String, Option<PathBuf>), String> {
        let ty = get(&format!("store.{id}.type"))
            .ok_or_else(|| format!("store.{id}.type is missing"))?;
        let path = get(&format!("store.{id}.path")).map(PathBuf::from);
        Ok((ty.to_string(), path))
    };
    if let Some(id) = get("storage.data") {
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
    if let Some(id) = get("storage.blob") {
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

    if let Some(user) = get("authentication.fallback-admin.user") {
        let secret = get("authentication.fallback-admin.secret")
            .ok_or("authentication.fallback-admin.secret is missing")?;
        // Upstream stores a password hash here (sha512-crypt "$6$..." from --init); the
        // stand-in verifies "$6$" hashes and compares anything else as a plain secret
        // (see crypt.rs).
        cfg.admin = Some((user.to_string(), secret.to_string()));
    }

    // STAND-IN ONLY (not upstream): [standin] unprivileged-users = { "bob" = "pass" }.
    for user in ids(&flat, "standin.unprivileged-users") {
        if let Some(p) = get(&format!("standin.unprivileged-users.{user}")) {
            cfg.unprivileged.insert(user, p.to_string());
        }
    }
    // [certificate.<id>] cert / private-key, PEM text or `%{file:PATH}%` (upstream's usual form).
    if let Some(id) = ids(&flat, "certificate").into_iter().next() {
        let pem = |k: &str| -> Result<Vec<u8>, String> {
            let v = get(&format!("certificate.{id}.{k}"))
                .ok_or_else(|| format!("certificate.{id}.{k} is missing"))?;
            match v.strip_prefix("%{file:").and_then(|r| r.strip_suffix("}%")) {
                Some(path) => std::fs::read(path)
                    .map_err(|e| format!("certificate.{id}.{k}: cannot read {path}: {e}")),
                None => Ok(v.as_bytes().to_vec()),
            }
        };
        cfg.certificate = Some((pem("cert")?, pem("private-key")?));
    }
    if !cfg.https_ports.is_empty() && cfg.certificate.is_none() {
        // Upstream would serve a self-signed certificate; the stand-in serves no TLS then.
        crate::info!("TLS listeners without a [certificate]: not served by the stand-in");
        cfg.https_ports.clear();
    }
    if cfg.http_ports.is_empty() && cfg.https_ports.is_empty() {
        crate::warn!("No HTTP listener configured: nothing will answer HTTP");
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
    fn flattened_toml_config() {
        let cfg = load_toml(
            r#"
storage.data = "s"
store.s.type = "rocksdb"
store.s.path = "/d"
"server.listener.h.bind.0000" = "192.0.2.1:8090"
"server.listener.h.bind.0001" = "[::]:8091"
"server.listener.h.protocol" = "http"
"authentication.fallback-admin.user" = "admin"
"authentication.fallback-admin.secret" = "x"
"#,
        )
        .unwrap();
        assert_eq!(cfg.http_ports, vec![8090, 8091]);
        assert_eq!(cfg.data, Some(StoreSpec::Rocks("/d".into())));
        assert_eq!(cfg.admin, Some(("admin".into(), "x".into())));
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
