//! Reads the Stalwart server's own config: config.toml (<= 0.15) or config.json (>= 0.16).
//! The helper never rewrites it (the server rewrites config.toml itself). OWNER: snapshot helper.
//! Interface used by the engine — keep these signatures.

use serde::Serialize;
use std::net::SocketAddr;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
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
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreKind {
    RocksDb { path: PathBuf },
    Sqlite { path: PathBuf },
    Fs { path: PathBuf },
    PostgreSql(SqlConn),
    MySql(SqlConn),
    /// FoundationDB, S3, Redis, ...: only `stalwart --export` can snapshot these.
    Other { type_name: String },
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
    pub generation: Generation,
    /// Every store the config uses (unused [store.*] tables are left out).
    pub stores: Vec<Store>,
    /// First plain-HTTP listener, as a loopback-reachable address (for /healthz).
    pub http: Option<SocketAddr>,
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig, ServerConfigError> {
        Err(ServerConfigError::Malformed {
            path: path.to_owned(),
            message: "not implemented yet".into(),
        })
    }
}
