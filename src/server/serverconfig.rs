//! Reads the Stalwart server's own config: config.toml (<= 0.15) or config.json (>= 0.16).
//! The helper never rewrites it (the server rewrites config.toml itself).
//!
//! Upstream facts used here (docs/facts, "Two generations of the server"):
//! - 0.15 declares stores as `[store.<id>] type = ...` and picks them per role with
//!   `storage.data|blob|fts|lookup|directory`; the server may rewrite config.toml itself as
//!   flattened `key = value` lines. We therefore flatten whatever we read into dotted keys, so
//!   nested tables, dotted keys and quoted keys such as `"store.rocksdb.path" = ..` all end up
//!   as the same `store.rocksdb.path`.
//! - 0.15 string values may contain `%{env:VAR}%`, `%{file:/path}%` and `%{cfg:key}%` macros.
//!   `VAR` is looked up in the server unit's environment (`serverenv`), never the helper's.
//! - 0.16 config.json holds one DataStore object, `{"@type":"RocksDb","path":...}`.

mod flat;
mod secret;
use flat::*;
use secret::*;

use crate::server::serverenv::ServerEnv;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    #[error("cannot read the server config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the server config {path} is malformed: {message}; nothing was stopped")]
    Malformed { path: PathBuf, message: String },
}

impl ServerConfigError {
    /// `Malformed` errors about the config at `path`, from a message.
    pub(crate) fn malformed_in(path: &Path) -> impl Fn(String) -> ServerConfigError + '_ {
        move |message| ServerConfigError::Malformed {
            path: path.to_owned(),
            message,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    /// <= 0.15: config.toml, REST management under /api.
    Toml,
    /// >= 0.16: config.json with one DataStore, JMAP management.
    Json,
}

/// A secret from the config; never printed, serialized or logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlConn {
    /// Host name or address; a value starting with `/` is a unix socket (PostgreSQL: the socket
    /// directory; MySQL/MariaDB: the socket file).
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// `tls.enable` (0.15) / `useTls` (0.16): the dump tools use TLS and verify the server.
    pub tls: bool,
    /// The CA file the tools verify the server with: never from the server config (whose
    /// user must not choose whom the store's password goes to), only the helper's
    /// `[snapshots] database_ca_file`, which `Snapshots` sets. None: the system's CAs.
    #[serde(skip)]
    pub ca_file: Option<PathBuf>,
}

#[cfg(test)]
impl SqlConn {
    /// A connection for unit tests (host h, database d, nothing else set).
    pub(crate) fn sample() -> SqlConn {
        SqlConn {
            host: "h".into(),
            port: None,
            database: "d".into(),
            user: None,
            password: None,
            tls: false,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreKind {
    RocksDb {
        path: PathBuf,
    },
    Sqlite {
        path: PathBuf,
    },
    Fs {
        path: PathBuf,
    },
    PostgreSql(SqlConn),
    MySql(SqlConn),
    /// FoundationDB, S3, Redis, ...: only `stalwart --export` can snapshot these.
    Other {
        type_name: String,
    },
}

impl StoreKind {
    /// Short lowercase name, as in `[store.<id>] type = ...`.
    pub fn type_name(&self) -> &str {
        match self {
            StoreKind::RocksDb { .. } => "rocksdb",
            StoreKind::Sqlite { .. } => "sqlite",
            StoreKind::Fs { .. } => "fs",
            StoreKind::PostgreSql(_) => "postgresql",
            StoreKind::MySql(_) => "mysql",
            StoreKind::Other { type_name } => type_name,
        }
    }
    /// The local path of a file-based store.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreKind::RocksDb { path } | StoreKind::Sqlite { path } | StoreKind::Fs { path } => {
                Some(path)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Store {
    pub id: String,
    /// storage.data / blob / fts / lookup / directory roles that point at this store.
    pub roles: Vec<String>,
    pub kind: StoreKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    pub path: PathBuf,
    /// Which of upstream's config formats it is (the server version decides which it reads).
    #[serde(rename = "generation")]
    pub format: ConfigFormat,
    /// Every store the config uses (unused [store.*] tables are left out).
    pub stores: Vec<Store>,
    /// First plain-HTTP listener, as a loopback-reachable address (for /healthz).
    pub http: Option<SocketAddr>,
    /// First HTTP listener with implicit TLS, likewise (used when there is no plain one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<SocketAddr>,
    /// The `[cluster]` keys that make this server a node of a cluster (0.15: `cluster.node-id`,
    /// `cluster.coordinator`), as `key = value` for messages; None for a single server. 0.16 keeps
    /// its cluster settings in the database, out of our sight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Where the server logs (0.15: every enabled `[tracer.<id>] type = "log"`: directory and
    /// file prefix; daily files `<prefix>.<date>`). 0.16 keeps its tracers in the database: empty
    /// here, the helper's `[health] log_dir` says where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_files: Vec<LogFiles>,
    /// 0.15's `[server.listener.<id>]` declarations, which name the probed ports (0.16 keeps its
    /// listeners in the database: empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<crate::server::listener::Declared>,
    /// Who the files the config names were read as (recorded with a snapshot's copy of it).
    #[serde(skip)]
    pub(crate) reader: crate::os::readas::Reader,
}

/// Log files of the server: `dir/<prefix>*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogFiles {
    pub dir: PathBuf,
    pub prefix: String,
}

/// The roles of `[storage]` in the order we report them.
const ROLES: [&str; 5] = ["data", "blob", "fts", "lookup", "directory"];

impl ServerConfig {
    /// Reads the config at `path`: opened once, through its directory (no symlink anywhere on
    /// the way, none at the end), a regular file of at most [`MAX_CONFIG`] bytes (a FIFO or
    /// /dev/zero in its place must not hang or exhaust the helper under dpkg). Files its macros
    /// and secrets name are then read as whoever controls it, decided from that same descriptor
    /// and its directory (`readas::Reader::for_file`).
    ///
    /// `%{env:..}%` macros (0.15) and `EnvironmentVariable` secrets (0.16) take their values from
    /// `env`, the server unit's environment (`systemd::Systemd::server_env`), never from the
    /// helper's own.
    pub fn load_with_env(path: &Path, env: &ServerEnv) -> Result<ServerConfig, ServerConfigError> {
        Self::load_with(path, None, env)
    }

    /// [`ServerConfig::load_with_env`] of a copy root keeps (a snapshot's): the files it names
    /// are read as `reader`, the identity recorded when the original was read, never as the
    /// owner of the copy (root: issue #23, a copy of a config the service user wrote would make
    /// root read `%{file:..}%` and send it to a database host the copy names).
    pub(crate) fn load_copy(
        path: &Path,
        reader: &crate::os::readas::Reader,
        env: &ServerEnv,
    ) -> Result<ServerConfig, ServerConfigError> {
        Self::load_with(path, Some(reader), env)
    }

    fn load_with(
        path: &Path,
        reader: Option<&crate::os::readas::Reader>,
        env: &ServerEnv,
    ) -> Result<ServerConfig, ServerConfigError> {
        let read_err = |e: crate::os::fsutil::FsError| ServerConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(e.source.kind(), e.to_string()),
        };
        let (dir, name) = crate::os::fsutil::Dir::open_parent(path).map_err(read_err)?;
        let (file, meta) = dir.open_file(&name).map_err(read_err)?;
        let dir_meta = dir.meta().map_err(read_err)?;
        let mut bytes = Vec::new();
        use std::io::Read;
        (&file)
            .take(MAX_CONFIG + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ServerConfigError::Read {
                path: path.to_owned(),
                source: e,
            })?;
        if bytes.len() as u64 > MAX_CONFIG {
            return Err(ServerConfigError::Malformed {
                path: path.to_owned(),
                message: format!(
                    "it is larger than {} MiB, which no Stalwart config is",
                    MAX_CONFIG >> 20
                ),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| ServerConfigError::Malformed {
            path: path.to_owned(),
            message: "it is not UTF-8 text".into(),
        })?;
        let reader = match reader {
            Some(r) => r.clone(),
            None => crate::os::readas::Reader::for_file(&meta, &dir_meta),
        };
        let is_json = path.extension().is_some_and(|e| e == "json")
            || (path.extension().is_none() && text.trim_start().starts_with('{'));
        if is_json {
            Self::parse_json_as(path, &text, &reader, env)
        } else {
            Self::parse_toml_as(path, &text, &reader, env)
        }
    }

    /// [`ServerConfig::load_with_env`] with no environment: a config that uses an environment
    /// variable is refused (where the unit's environment is not at hand: status, tests).
    pub fn load(path: &Path) -> Result<ServerConfig, ServerConfigError> {
        Self::load_with_env(path, &ServerEnv::default())
    }

    /// Parses config.toml text (<= 0.15); files it names are read as whoever controls `path`.
    pub fn parse_toml(path: &Path, text: &str) -> Result<ServerConfig, ServerConfigError> {
        Self::parse_toml_with_env(path, text, &ServerEnv::default())
    }

    /// [`ServerConfig::parse_toml`] with the server unit's environment for `%{env:..}%`.
    pub fn parse_toml_with_env(
        path: &Path,
        text: &str,
        env: &ServerEnv,
    ) -> Result<ServerConfig, ServerConfigError> {
        Self::parse_toml_as(
            path,
            text,
            &crate::os::readas::Reader::for_config(path),
            env,
        )
    }

    /// Parses config.json text (>= 0.16); files it names are read as whoever controls `path`.
    pub fn parse_json(path: &Path, text: &str) -> Result<ServerConfig, ServerConfigError> {
        Self::parse_json_with_env(path, text, &ServerEnv::default())
    }

    /// [`ServerConfig::parse_json`] with the server unit's environment for
    /// `EnvironmentVariable` secrets.
    pub fn parse_json_with_env(
        path: &Path,
        text: &str,
        env: &ServerEnv,
    ) -> Result<ServerConfig, ServerConfigError> {
        Self::parse_json_as(
            path,
            text,
            &crate::os::readas::Reader::for_config(path),
            env,
        )
    }

    /// Parses config.toml text (<= 0.15). `path` is only used in messages and for the result.
    fn parse_toml_as(
        path: &Path,
        text: &str,
        reader: &crate::os::readas::Reader,
        env: &ServerEnv,
    ) -> Result<ServerConfig, ServerConfigError> {
        let malformed = ServerConfigError::malformed_in(path);
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| malformed(e.message().to_string()))?;
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        let cfg = Flat {
            path,
            reader,
            env,
            keys: flat,
            secrets: RefCell::new(Vec::new()),
            expansions: Cell::new(0),
        };

        // Roles -> store ids. A role that is not set is left out (the server then has no such
        // store of its own or falls back to the data store, which we snapshot anyway).
        let mut uses: Vec<(String, String)> = Vec::new(); // (store id, role)
        let data = cfg.get_str("storage.data")?;
        // Set but empty (`storage.data = ""`, or a macro expanding to nothing) is no store
        // either: accepting it would mean an upgrade without a data snapshot.
        if data.as_deref().map_or(true, |d| d.trim().is_empty()) {
            return Err(malformed(
                "`storage.data` is not set or empty, so the server has no data store to snapshot; \
                 set it to one of the [store.<id>] tables"
                    .into(),
            ));
        }
        for role in ROLES {
            let Some(name) = cfg.get_str(&format!("storage.{role}"))? else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            if role == "directory" {
                // `storage.directory` names a [directory.<id>] (e.g. "internal"), whose `store`
                // key names the store (facts: `[directory.internal] type="internal"
                // store="rocksdb"`). LDAP/IMAP directories have no store of ours.
                if cfg.has_prefix(&format!("directory.{name}")) {
                    if let Some(store) = cfg.get_str(&format!("directory.{name}.store"))? {
                        uses.push((store, role.to_string()));
                    }
                    continue;
                }
            }
            uses.push((name, role.to_string()));
        }

        let mut stores: Vec<Store> = Vec::new();
        for (id, role) in uses {
            if let Some(s) = stores.iter_mut().find(|s| s.id == id) {
                if !s.roles.contains(&role) {
                    s.roles.push(role);
                }
                continue;
            }
            let kind = cfg.store_kind(&id, &role)?;
            stores.push(Store {
                id,
                roles: vec![role],
                kind,
            });
        }

        Ok(ServerConfig {
            path: path.to_owned(),
            format: ConfigFormat::Toml,
            stores,
            http: cfg.http_listener(false)?,
            https: cfg.http_listener(true)?,
            cluster: cfg.cluster(),
            log_files: cfg.log_files()?,
            listeners: cfg.listeners(),
            reader: reader.clone(),
        })
    }

    fn parse_json_as(
        path: &Path,
        text: &str,
        reader: &crate::os::readas::Reader,
        env: &ServerEnv,
    ) -> Result<ServerConfig, ServerConfigError> {
        let malformed = ServerConfigError::malformed_in(path);
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(format!("not valid JSON: {e}")))?;
        // Facts: config.json is one DataStore object. Accept it wrapped in a `dataStore`/`store`
        // member too, in case a later release nests it.
        let ds = if value.get("@type").is_some() {
            &value
        } else {
            ["dataStore", "DataStore", "store"]
                .iter()
                .find_map(|k| value.get(*k).filter(|v| v.get("@type").is_some()))
                .ok_or_else(|| {
                    malformed(
                        "no DataStore object (with an \"@type\" such as \"RocksDb\") found".into(),
                    )
                })?
        };
        let ty = ds
            .get("@type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| malformed("\"@type\" of the DataStore is not a string".into()))?;
        let get_str = |k: &str| -> Result<Option<String>, ServerConfigError> {
            match ds.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(malformed(format!(
                    "DataStore field \"{k}\" is not a string"
                ))),
            }
        };
        let need_path = || -> Result<PathBuf, ServerConfigError> {
            get_str("path")?
                .map(PathBuf::from)
                .ok_or_else(|| malformed(format!("the {ty} DataStore has no \"path\"")))
        };
        let kind = match ty {
            "RocksDb" => StoreKind::RocksDb { path: need_path()? },
            "Sqlite" => StoreKind::Sqlite { path: need_path()? },
            "PostgreSql" | "MySql" => {
                // Field names from the facts file: host, port, database, authUsername, authSecret.
                let host = get_str("host")?.unwrap_or_else(|| "localhost".into());
                let port = match get_str("port")? {
                    None => None,
                    Some(p) => Some(p.parse::<u16>().map_err(|_| {
                        malformed(format!("DataStore \"port\" {p:?} is not a port number"))
                    })?),
                };
                let database = get_str("database")?
                    .ok_or_else(|| malformed(format!("the {ty} DataStore has no \"database\"")))?;
                let user = get_str("authUsername")?;
                let password = match ds.get("authSecret") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(json_secret(path, v, reader, env)?),
                };
                let tls = ["useTls", "tls", "tlsEnable"]
                    .iter()
                    .any(|k| ds.get(*k).and_then(|v| v.as_bool()) == Some(true));
                let conn = SqlConn {
                    host,
                    port,
                    database,
                    user,
                    password,
                    tls,
                    ca_file: None,
                };
                if ty == "PostgreSql" {
                    StoreKind::PostgreSql(conn)
                } else {
                    StoreKind::MySql(conn)
                }
            }
            other => StoreKind::Other {
                type_name: other.to_string(),
            },
        };
        Ok(ServerConfig {
            path: path.to_owned(),
            format: ConfigFormat::Json,
            // config.json only declares the DataStore; the other roles live in the database
            // (registry) itself, which a data snapshot therefore includes.
            stores: vec![Store {
                id: "data".into(),
                roles: vec!["data".into()],
                kind,
            }],
            // 0.16 keeps listeners in the database, not in config.json; the health module
            // defaults to 127.0.0.1:8080 (upstream's container health check falls back to it).
            http: None,
            https: None,
            cluster: None,
            log_files: Vec::new(),
            listeners: Vec::new(),
            reader: reader.clone(),
        })
    }
}

/// Removes every value a macro read from a message, also as `{:?}` shows it (messages quote
/// values with `{:?}`).
fn redact(mut message: String, secrets: &[String]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let dbg = format!("{s:?}");
        let escaped = &dbg[1..dbg.len() - 1];
        for needle in [s.as_str(), escaped] {
            if message.contains(needle) {
                message = message.replace(needle, "<redacted>");
            }
        }
    }
    message
}

/// A listener bound to the unspecified address (`[::]`, `0.0.0.0`) is reached on 127.0.0.1
/// (with `[::]` Linux accepts IPv4 too unless bindv6only is set, so 127.0.0.1 works for both).
fn loopback_reachable(addr: SocketAddr) -> SocketAddr {
    let ip = addr.ip();
    if ip.is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "/opt/stalwart/etc/config.toml";
    const JSON: &str = "/etc/stalwart/config.json";
    fn toml(text: &str) -> Result<ServerConfig, ServerConfigError> {
        ServerConfig::parse_toml(Path::new(TOML), text)
    }
    fn json(text: &str) -> Result<ServerConfig, ServerConfigError> {
        ServerConfig::parse_json(Path::new(JSON), text)
    }
    /// A unit's environment of `Environment=` lines.
    fn unit_env(lines: &[&str]) -> ServerEnv {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        ServerEnv::from_unit(&lines, &[], &[])
    }

    const DEFAULT_015: &str = r#"
[server.listener.smtp]
bind = ["[::]:25"]
protocol = "smtp"
[server.listener.https]
bind = ["[::]:443"]
protocol = "http"
tls.implicit = true
[server.listener.http]
bind = ["[::]:8080"]
protocol = "http"
[storage]
data = "rocksdb"
fts = "rocksdb"
blob = "rocksdb"
lookup = "rocksdb"
directory = "internal"
[store.rocksdb]
type = "rocksdb"
path = "/opt/stalwart/data"
compression = "lz4"
[store.unused]
type = "sqlite"
path = "/nowhere.db"
[directory.internal]
type = "internal"
store = "rocksdb"
"#;

    /// Issue #23 finding 3: a snapshot's copy of the config is root's, but the files it names
    /// are read as the identity recorded with it (here nobody), not as root; and a symlink the
    /// service user made is not followed even by root.
    #[test]
    fn a_copy_is_read_as_its_recorded_reader_and_foreign_symlinks_are_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = t.path().join("root-only");
        std::fs::write(&secret, "/var/lib/secret-path").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let copy = t.path().join("config.toml");
        let text = |p: &Path| {
            format!(
                "[storage]\ndata = \"db\"\nblob = \"db\"\nfts = \"db\"\nlookup = \"db\"\n\
                 [store.db]\ntype = \"rocksdb\"\npath = \"%{{file:{}}}%\"\n",
                p.display()
            )
        };
        std::fs::write(&copy, text(&secret)).unwrap();
        let as_root = ServerConfig::load(&copy).unwrap();
        assert!(format!("{:?}", as_root.stores).contains("secret-path"));
        let e = ServerConfig::load_copy(
            &copy,
            &crate::os::readas::Reader::nobody(),
            &ServerEnv::default(),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("secret-path"), "{e}");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(crate::NOBODY), Some(crate::NOBODY)).unwrap();
        std::fs::write(&copy, text(&link)).unwrap();
        let e = ServerConfig::load(&copy).unwrap_err().to_string();
        assert!(
            e.contains("not followed") && !e.contains("secret-path"),
            "{e}"
        );
    }

    #[test]
    fn default_015_config() {
        let c = toml(DEFAULT_015).unwrap();
        assert_eq!(c.format, ConfigFormat::Toml);
        assert_eq!(c.stores.len(), 1, "unused store left out: {:?}", c.stores);
        assert_eq!(c.stores[0].id, "rocksdb");
        assert_eq!(
            c.stores[0].roles,
            vec!["data", "blob", "fts", "lookup", "directory"]
        );
        assert_eq!(
            c.stores[0].kind,
            StoreKind::RocksDb {
                path: "/opt/stalwart/data".into()
            }
        );
        assert_eq!(c.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.https, Some("127.0.0.1:443".parse().unwrap()));
        assert_eq!(c.cluster, None);
    }

    #[test]
    fn cluster_node_in_any_spelling() {
        let c = toml(&format!("{DEFAULT_015}\n[cluster]\nnode-id = 1\n")).unwrap();
        assert_eq!(c.cluster.as_deref(), Some("cluster.node-id = 1"));
        let c = toml(&format!(
            "\"cluster.coordinator\" = \"peer-to-peer\"\n{DEFAULT_015}"
        ))
        .unwrap();
        assert_eq!(
            c.cluster.as_deref(),
            Some("cluster.coordinator = \"peer-to-peer\"")
        );
        let c = json(r#"{"@type":"RocksDb","path":"/var/lib/stalwart/"}"#).unwrap();
        assert_eq!(
            c.cluster, None,
            "0.16 keeps cluster settings in its database"
        );
    }

    #[test]
    fn flattened_dotted_and_quoted_keys() {
        let dotted = r#"
storage.data = "rocksdb"
storage.blob = "blobs"
store.rocksdb.type = "rocksdb"
store.rocksdb.path = "/d"
"store.blobs.type" = "fs"
"store.blobs.path" = "/b"
"server.listener.web.bind" = "0.0.0.0:8081"
"server.listener.web.protocol" = "http"
"#;
        let c = toml(dotted).unwrap();
        assert_eq!(c.stores.len(), 2);
        assert_eq!(c.stores[0].kind, StoreKind::RocksDb { path: "/d".into() });
        assert_eq!(c.stores[1].id, "blobs");
        assert_eq!(c.stores[1].roles, vec!["blob"]);
        assert_eq!(c.stores[1].kind, StoreKind::Fs { path: "/b".into() });
        assert_eq!(c.http, Some("127.0.0.1:8081".parse().unwrap()));
    }

    #[test]
    fn indexed_bind_and_specific_address() {
        let c = toml(
            r#"
storage.data = "s"
store.s.type = "sqlite"
store.s.path = "/x.db"
"server.listener.h.bind.0000" = "192.0.2.1:8080"
"server.listener.h.protocol" = "http"
"#,
        )
        .unwrap();
        assert_eq!(c.http, Some("192.0.2.1:8080".parse().unwrap()));
        assert_eq!(
            c.stores[0].kind,
            StoreKind::Sqlite {
                path: "/x.db".into()
            }
        );
    }

    #[test]
    fn only_implicit_tls_listener_means_no_http() {
        let c = toml(
            r#"
storage.data = "s"
store.s.type = "sqlite"
store.s.path = "/x.db"
[server.listener.https]
bind = ["[::]:443"]
protocol = "http"
tls.implicit = true
"#,
        )
        .unwrap();
        assert_eq!(c.http, None);
        assert_eq!(c.https, Some("127.0.0.1:443".parse().unwrap()));
    }

    #[test]
    fn sql_store_with_macros() {
        let env = unit_env(&["SU_TEST_PGPASS=s3cret"]);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dbname");
        std::fs::write(&f, "  maildb\n").unwrap();
        let text = format!(
            r#"
[storage]
data = "pg"
blob = "pg"
[store.pg]
type = "postgresql"
host = "%{{cfg:db.host}}%"
port = 5433
database = "%{{file:{}}}%"
user = "stalwart"
password = "%{{env:SU_TEST_PGPASS}}%"
tls.enable = true
[db]
host = "db.example"
"#,
            f.display()
        );
        let c = ServerConfig::parse_toml_with_env(Path::new(TOML), &text, &env).unwrap();
        let StoreKind::PostgreSql(conn) = &c.stores[0].kind else {
            panic!("{:?}", c.stores)
        };
        assert_eq!(conn.host, "db.example");
        assert_eq!(conn.port, Some(5433));
        assert_eq!(conn.database, "maildb");
        assert_eq!(conn.user.as_deref(), Some("stalwart"));
        assert_eq!(conn.password, Some(Secret("s3cret".into())));
        assert!(conn.tls);
        let dbg = format!("{c:?}");
        let ser = serde_json::to_string(&c).unwrap();
        assert!(
            !dbg.contains("s3cret") && !ser.contains("s3cret"),
            "{dbg} {ser}"
        );
    }

    #[test]
    fn unset_env_var_is_named() {
        let err = toml(
            r#"
storage.data = "m"
store.m.type = "mysql"
store.m.database = "x"
store.m.password = "%{env:SU_TEST_DEFINITELY_UNSET}%"
"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SU_TEST_DEFINITELY_UNSET"),
            "{err}"
        );
    }

    /// Finding 10b: `%{env:..}%` is expanded from the server unit's environment only. The
    /// helper's own (root's, under dpkg) is not a source: a variable set there and not in the
    /// unit is unset, with a message that says where to set it.
    #[test]
    fn env_macros_come_from_the_unit_never_from_the_helper() {
        std::env::set_var("SU_TEST_ROOTS_OWN", "root-only-value");
        let text = r#"
storage.data = "m"
store.m.type = "mysql"
store.m.database = "x"
store.m.host = "%{env:SU_TEST_ROOTS_OWN}%"
"#;
        let path = Path::new(TOML);
        let e = ServerConfig::parse_toml_with_env(path, text, &unit_env(&["OTHER=1"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("SU_TEST_ROOTS_OWN") && msg.contains("server's unit"),
            "{msg}"
        );
        assert!(!msg.contains("root-only-value"), "{msg}");
        let c = ServerConfig::parse_toml_with_env(
            path,
            text,
            &unit_env(&["SU_TEST_ROOTS_OWN=db.unit"]),
        )
        .unwrap();
        assert!(matches!(&c.stores[0].kind, StoreKind::MySql(x) if x.host == "db.unit"));
        // Removed by the unit's UnsetEnvironment=: the server does not see it, nor do we.
        let hidden = crate::server::serverenv::ServerEnv::from_unit(
            &["SU_TEST_ROOTS_OWN=db.unit".into()],
            &[],
            &["SU_TEST_ROOTS_OWN".into()],
        );
        assert!(ServerConfig::parse_toml_with_env(path, text, &hidden).is_err());
        // 0.16's EnvironmentVariable secret alike.
        let json = r#"{"@type":"MySql","database":"m","authSecret":{"@type":"EnvironmentVariable","variableName":"SU_TEST_ROOTS_OWN"}}"#;
        let jpath = Path::new("/etc/stalwart/config.json");
        let e = ServerConfig::parse_json_with_env(jpath, json, &unit_env(&[])).unwrap_err();
        assert!(e.to_string().contains("server's unit"), "{e}");
        let c =
            ServerConfig::parse_json_with_env(jpath, json, &unit_env(&["SU_TEST_ROOTS_OWN=pw"]))
                .unwrap();
        assert!(
            matches!(&c.stores[0].kind, StoreKind::MySql(x) if x.password == Some(Secret("pw".into())))
        );
    }

    #[test]
    fn mysql_and_unknown_types() {
        let c = toml(
            r#"
[storage]
data = "fdb"
blob = "s3"
fts = "es"
lookup = "my"
[store.fdb]
type = "foundationdb"
[store.s3]
type = "s3"
bucket = "b"
[store.es]
type = "elasticsearch"
[store.my]
type = "mysql"
host = "/run/mysqld/mysqld.sock"
database = "st"
"#,
        )
        .unwrap();
        let kinds: Vec<&str> = c.stores.iter().map(|s| s.kind.type_name()).collect();
        assert_eq!(kinds, vec!["foundationdb", "s3", "elasticsearch", "mysql"]);
        assert_eq!(
            c.stores[0].kind,
            StoreKind::Other {
                type_name: "foundationdb".into()
            }
        );
        let c = toml("storage.data = \"x\"\nstore.x.type = \"frobnicate\"\n").unwrap();
        assert_eq!(
            c.stores[0].kind,
            StoreKind::Other {
                type_name: "frobnicate".into()
            }
        );
    }

    #[test]
    fn malformed_inputs() {
        for (text, needle) in [
            ("this is [ not toml", "malformed"),
            ("storage.data = \"missing\"\n", "missing"),
            ("[store.a]\ntype=\"rocksdb\"\npath=\"/a\"\n", "storage.data"),
            ("storage.data = \"a\"\nstore.a.type = \"rocksdb\"\n", "path"),
            (
                "storage.data = \"a\"\nstore.a.type=\"rocksdb\"\nstore.a.path=\"/a\"\n\
                 server.listener.h.protocol=\"http\"\nserver.listener.h.bind=\"nonsense\"\n",
                "nonsense",
            ),
            (
                "storage.data = \"a\"\nstorage.directory = \"internal\"\nstore.a.type=\"rocksdb\"\n\
                 store.a.path=\"/a\"\ndirectory.internal.type=\"internal\"\ndirectory.internal.store=\"gone\"\n",
                "gone",
            ),
        ] {
            let err = toml(text).unwrap_err();
            assert!(
                matches!(err, ServerConfigError::Malformed { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn ldap_directory_has_no_store() {
        let c = toml(
            "storage.data = \"a\"\nstorage.directory = \"ldap\"\nstore.a.type=\"rocksdb\"\n\
             store.a.path=\"/a\"\ndirectory.ldap.type=\"ldap\"\n",
        )
        .unwrap();
        assert_eq!(c.stores.len(), 1);
        assert_eq!(c.stores[0].roles, vec!["data"]);
    }

    #[test]
    fn json_rocksdb() {
        let c = json(r#"{"@type":"RocksDb","path":"/var/lib/stalwart/"}"#).unwrap();
        assert_eq!(c.format, ConfigFormat::Json);
        assert_eq!(c.http, None);
        assert_eq!(
            c.stores[0].kind,
            StoreKind::RocksDb {
                path: "/var/lib/stalwart/".into()
            }
        );
        let c = json(r#"{"@type":"Sqlite","path":"/var/lib/stalwart/db.sqlite"}"#).unwrap();
        assert!(matches!(c.stores[0].kind, StoreKind::Sqlite { .. }));
        let c = json(r#"{"@type":"FoundationDb"}"#).unwrap();
        assert_eq!(
            c.stores[0].kind,
            StoreKind::Other {
                type_name: "FoundationDb".into()
            }
        );
    }

    #[test]
    fn json_sql_secrets() {
        let env = unit_env(&["SU_TEST_JSON_SECRET=envpw"]);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "filepw\n").unwrap();
        for (secret, want) in [
            (r#""plain""#.to_string(), "plain"),
            (r#"{"@type":"Value","value":"v"}"#.to_string(), "v"),
            (
                r#"{"@type":"EnvironmentVariable","variableName":"SU_TEST_JSON_SECRET"}"#
                    .to_string(),
                "envpw",
            ),
            (
                format!(r#"{{"@type":"File","filePath":"{}"}}"#, f.display()),
                "filepw",
            ),
        ] {
            let text = format!(
                r#"{{"@type":"PostgreSql","host":"db","port":5432,"database":"mail",
                     "authUsername":"st","authSecret":{secret}}}"#
            );
            let c = ServerConfig::parse_json_with_env(Path::new(JSON), &text, &env).unwrap();
            let StoreKind::PostgreSql(conn) = &c.stores[0].kind else {
                panic!()
            };
            assert_eq!(conn.password, Some(Secret(want.into())));
            assert_eq!(conn.user.as_deref(), Some("st"));
            assert_eq!(conn.port, Some(5432));
        }
        let c = json(r#"{"@type":"MySql","database":"m"}"#).unwrap();
        assert!(matches!(c.stores[0].kind, StoreKind::MySql(_)));
    }

    #[test]
    fn json_env_file_of_the_unit_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("stalwart.env");
        std::fs::write(&env_file, "# comment\nSU_TEST_ONLY_IN_FILE=\"fromfile\"\n").unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"@type":"MySql","database":"m","authSecret":{"@type":"EnvironmentVariable","variableName":"SU_TEST_ONLY_IN_FILE"}}"#,
        )
        .unwrap();
        // The unit's EnvironmentFile= (0.16's stalwart.env), as systemd reports it.
        let env = crate::server::serverenv::ServerEnv::from_unit(&[], &[(env_file, true)], &[]);
        let c = ServerConfig::load_with_env(&p, &env).unwrap();
        let StoreKind::MySql(conn) = &c.stores[0].kind else {
            panic!()
        };
        assert_eq!(conn.password, Some(Secret("fromfile".into())));
        // A stalwart.env next to the config that the unit does not name is not the server's.
        assert!(ServerConfig::load(&p).is_err());

        for bad in [
            "{not json",
            r#"{"path":"/x"}"#,
            r#"{"@type":"RocksDb"}"#,
            r#"{"@type":"PostgreSql","host":"h"}"#,
            r#"{"@type":"MySql","database":"m","authSecret":{"@type":"EnvironmentVariable","variableName":"SU_TEST_NOPE_UNSET"}}"#,
            r#"{"@type":"MySql","database":"m","authSecret":{"@type":"Weird"}}"#,
        ] {
            let err = json(bad).unwrap_err();
            assert!(matches!(err, ServerConfigError::Malformed { .. }), "{bad}");
        }
    }

    #[test]
    fn load_missing_file_is_read_error() {
        let err = ServerConfig::load(Path::new("/nonexistent/config.toml")).unwrap_err();
        assert!(matches!(err, ServerConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/config.toml"));
    }

    /// Finding 6: the config is opened once, never through a symlink, never a FIFO or device,
    /// never more than 4 MiB; whose identity reads the files it names comes from that open file
    /// and its directory.
    #[test]
    fn the_config_is_read_once_and_safely() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("root-secret");
        std::fs::write(&secret, "root's password").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let real = t.path().join("real.toml");
        std::fs::write(&real, "").unwrap();
        let link = t.path().join("config.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = ServerConfig::load(&link).unwrap_err();
        assert!(matches!(e, ServerConfigError::Read { .. }), "{e}");
        let fifo = t.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = ServerConfig::load(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = ServerConfig::load(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let big = t.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG + 1) as usize]).unwrap();
        let e = ServerConfig::load(&big).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");

        // A root-owned config in a directory the service user owns: they could replace it, so
        // files it names are read as them (here: refused), not as root.
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&etc, Some(crate::NOBODY), Some(crate::NOBODY)).unwrap();
        let cfg = etc.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "storage.data = \"s\"\nstore.s.type = \"postgresql\"\nstore.s.host = \"h\"\nstore.s.database = \"d\"\nstore.s.password = \"%{{file:{}}}%\"\n",
                secret.display()
            ),
        )
        .unwrap();
        let e = ServerConfig::load(&cfg).unwrap_err();
        assert!(e.to_string().contains("Permission denied"), "{e}");
        assert!(!e.to_string().contains("root's password"), "{e}");
        // In a directory of root's, root's own config may name root's files.
        std::os::unix::fs::chown(&etc, Some(0), Some(0)).unwrap();
        let c = ServerConfig::load(&cfg).unwrap();
        assert!(
            matches!(&c.stores[0].kind, StoreKind::PostgreSql(x) if x.password.as_ref().map(|p| p.0.as_str()) == Some("root's password"))
        );
    }
}
