//! 0.15's config.toml in upstream's flattened key space (`a.b.c`, arrays as `key.0000`), with
//! its `%{env:..}%` / `%{file:..}%` macros.

use super::*;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub(super) fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Upper bound of macro expansions in one config: a real config has a handful; `%{cfg:..}%`
/// macros referring to each other many times over would otherwise take exponential time.
pub(super) const MAX_EXPANSIONS: u32 = 10_000;
/// Upper bound of one value after expansion.
pub(super) const MAX_EXPANDED_LEN: usize = 64 * 1024;

/// The config as flattened dotted keys.
pub(super) struct Flat<'a> {
    pub(super) path: &'a Path,
    /// Whose identity reads the files that macros name.
    pub(super) reader: &'a crate::os::readas::Reader,
    /// Where `%{env:..}%` macros take their values: the server unit's environment.
    pub(super) env: &'a crate::server::serverenv::ServerEnv,
    pub(super) keys: BTreeMap<String, toml::Value>,
    /// What `%{env:..}%` and `%{file:..}%` macros expanded to: never shown in a message (a config
    /// writable by the server's user must not make root print files it may not read).
    pub(super) secrets: RefCell<Vec<String>>,
    /// Macro expansions so far (bounded by [`MAX_EXPANSIONS`]).
    pub(super) expansions: Cell<u32>,
}

impl Flat<'_> {
    pub(super) fn malformed(&self, message: String) -> ServerConfigError {
        ServerConfigError::Malformed {
            path: self.path.to_owned(),
            message: redact(message, &self.secrets.borrow()),
        }
    }

    pub(super) fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.keys
            .range(dotted.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dotted))
            || self.keys.contains_key(prefix)
    }

    /// Sorted direct child names of `prefix` (e.g. listener ids under `server.listener`).
    pub(super) fn children(&self, prefix: &str) -> Vec<String> {
        let dotted = format!("{prefix}.");
        let mut out: Vec<String> = Vec::new();
        for (k, _) in self.keys.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else {
                break;
            };
            let child = rest.split('.').next().unwrap_or(rest).to_string();
            if out.last() != Some(&child) {
                out.push(child);
            }
        }
        out
    }

    /// A scalar as a string, macros expanded.
    pub(super) fn get_str(&self, key: &str) -> Result<Option<String>, ServerConfigError> {
        self.get_str_depth(key, 0)
    }

    pub(super) fn get_str_depth(
        &self,
        key: &str,
        depth: u32,
    ) -> Result<Option<String>, ServerConfigError> {
        let raw = match self.keys.get(key) {
            None => return Ok(None),
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(i)) => i.to_string(),
            Some(toml::Value::Boolean(b)) => b.to_string(),
            Some(toml::Value::Float(f)) => f.to_string(),
            Some(other) => {
                return Err(self.malformed(format!(
                    "`{key}` is a {}, expected a single value",
                    other.type_str()
                )))
            }
        };
        self.expand(key, &raw, depth).map(Some)
    }

    pub(super) fn get_bool(&self, key: &str) -> Result<bool, ServerConfigError> {
        match self.keys.get(key) {
            Some(toml::Value::Boolean(b)) => Ok(*b),
            None => Ok(false),
            Some(_) => Ok(matches!(
                self.get_str(key)?.as_deref(),
                Some("true") | Some("1") | Some("yes")
            )),
        }
    }

    /// A list: a TOML array, a single string, or flattened `key.0000`-style indexed children.
    pub(super) fn get_list(&self, key: &str) -> Result<Vec<String>, ServerConfigError> {
        match self.keys.get(key) {
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => self.expand(key, s, 0),
                    other => Ok(other.to_string()),
                })
                .collect(),
            Some(_) => Ok(self.get_str(key)?.into_iter().collect()),
            None => {
                let mut out = Vec::new();
                for child in self.children(key) {
                    if let Some(v) = self.get_str(&format!("{key}.{child}"))? {
                        out.push(v);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Expands `%{env:VAR}%`, `%{file:/path}%` and `%{cfg:key}%` in a value.
    pub(super) fn expand(
        &self,
        key: &str,
        raw: &str,
        depth: u32,
    ) -> Result<String, ServerConfigError> {
        if depth > 8 {
            return Err(self.malformed(format!(
                "`{key}`: %{{cfg:..}}% macros nest too deep (a loop?)"
            )));
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("%{") {
            let n = self.expansions.get().saturating_add(1);
            self.expansions.set(n);
            if n > MAX_EXPANSIONS {
                return Err(self.malformed(format!(
                    "`{key}`: more than {MAX_EXPANSIONS} macro expansions in the config \
                     (%{{cfg:..}}% macros referring to each other many times over?)"
                )));
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}%") else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let inner = &after[..end];
            let value = match inner.split_once(':') {
                Some(("env", var)) => match self.env.get(var) {
                    Some(v) => {
                        self.secrets.borrow_mut().push(v.to_string());
                        v.to_string()
                    }
                    None => {
                        return Err(self.malformed(format!(
                            "`{key}` uses %{{env:{var}}}%: {}",
                            unset_env_message(var)
                        )))
                    }
                },
                Some(("file", file)) => {
                    let v = read_secret_file(self.path, Path::new(file), self.reader)?;
                    self.secrets.borrow_mut().push(v.clone());
                    v
                }
                Some(("cfg", other)) => self.get_str_depth(other, depth + 1)?.ok_or_else(|| {
                    self.malformed(format!(
                        "`{key}` uses %{{cfg:{other}}}% but `{other}` is not set"
                    ))
                })?,
                _ => {
                    // Not a macro we know: keep it verbatim, the server decides.
                    format!("%{{{inner}}}%")
                }
            };
            out.push_str(&value);
            if out.len() > MAX_EXPANDED_LEN {
                return Err(self.malformed(format!(
                    "`{key}` expands to more than {MAX_EXPANDED_LEN} bytes"
                )));
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub(super) fn store_kind(&self, id: &str, role: &str) -> Result<StoreKind, ServerConfigError> {
        let p = format!("store.{id}");
        let Some(ty) = self.get_str(&format!("{p}.type"))? else {
            return Err(self.malformed(format!(
                "`storage.{role}` names the store \"{id}\" but there is no [store.{id}] with a \
                 `type`; fix the store name or add the store"
            )));
        };
        let path = |what: &str| -> Result<PathBuf, ServerConfigError> {
            self.get_str(&format!("{p}.path"))?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| self.malformed(format!("[store.{id}] ({what}) has no `path`")))
        };
        Ok(match ty.to_ascii_lowercase().as_str() {
            "rocksdb" => StoreKind::RocksDb {
                path: path("rocksdb")?,
            },
            "sqlite" => StoreKind::Sqlite {
                path: path("sqlite")?,
            },
            "fs" => StoreKind::Fs { path: path("fs")? },
            t @ ("postgresql" | "mysql") => {
                let port = match self.get_str(&format!("{p}.port"))? {
                    None => None,
                    Some(s) => Some(s.parse::<u16>().map_err(|_| {
                        self.malformed(format!("[store.{id}] port {s:?} is not a port number"))
                    })?),
                };
                let database = self.get_str(&format!("{p}.database"))?.ok_or_else(|| {
                    self.malformed(format!("[store.{id}] ({t}) has no `database`"))
                })?;
                let conn = SqlConn {
                    host: self
                        .get_str(&format!("{p}.host"))?
                        .unwrap_or_else(|| "localhost".into()),
                    port,
                    database,
                    user: self.get_str(&format!("{p}.user"))?,
                    password: self.get_str(&format!("{p}.password"))?.map(Secret),
                    tls: self.get_bool(&format!("{p}.tls.enable"))?,
                    ca_file: None,
                };
                if t == "postgresql" {
                    StoreKind::PostgreSql(conn)
                } else {
                    StoreKind::MySql(conn)
                }
            }
            other => StoreKind::Other {
                type_name: other.to_string(),
            },
        })
    }

    /// `cluster.node-id` / `cluster.coordinator` (upstream's cluster settings), if set.
    /// The enabled file tracers (`[tracer.<id>] type = "log"`, `path`, `prefix` default
    /// "stalwart.log", `enable` default true).
    pub(super) fn log_files(&self) -> Result<Vec<LogFiles>, ServerConfigError> {
        let mut out = Vec::new();
        for id in self.children("tracer") {
            let key = |k: &str| format!("tracer.{id}.{k}");
            if self.get_str(&key("type"))?.as_deref() != Some("log") {
                continue;
            }
            if self.get_str(&key("enable"))?.as_deref() == Some("false") {
                continue;
            }
            let Some(dir) = self.get_str(&key("path"))? else {
                continue;
            };
            let prefix = self
                .get_str(&key("prefix"))?
                .unwrap_or_else(|| "stalwart.log".into());
            out.push(LogFiles {
                dir: PathBuf::from(dir),
                prefix,
            });
        }
        Ok(out)
    }

    pub(super) fn cluster(&self) -> Option<String> {
        ["cluster.node-id", "cluster.coordinator"]
            .iter()
            .find_map(|key| {
                let shown = match self.keys.get(*key)? {
                    toml::Value::String(s) => format!("{s:?}"),
                    other => other.to_string(),
                };
                Some(format!("{key} = {shown}"))
            })
    }

    /// First `[server.listener.<id>]` with protocol http and (`tls`) or without implicit TLS.
    /// Every `[server.listener.<id>]` with a protocol (upstream's listener.rs finds listeners by
    /// their `.protocol` key; `tls.implicit` defaults to false), with the ports it binds. Only
    /// names ports for the plan: a key that does not parse is skipped, never an error.
    pub(super) fn listeners(&self) -> Vec<crate::server::listener::Declared> {
        let mut out = Vec::new();
        for id in self.children("server.listener") {
            let p = format!("server.listener.{id}");
            let Ok(Some(protocol)) = self.get_str(&format!("{p}.protocol")) else {
                continue;
            };
            let ports = self
                .get_list(&format!("{p}.bind"))
                .unwrap_or_default()
                .iter()
                .filter_map(|b| b.trim().parse::<SocketAddr>().ok())
                .map(|a| a.port())
                .collect();
            out.push(crate::server::listener::Declared {
                id,
                protocol: protocol.to_lowercase(),
                tls: self.get_bool(&format!("{p}.tls.implicit")).unwrap_or(false),
                ports,
            });
        }
        out
    }

    pub(super) fn http_listener(&self, tls: bool) -> Result<Option<SocketAddr>, ServerConfigError> {
        for id in self.children("server.listener") {
            let p = format!("server.listener.{id}");
            if self.get_str(&format!("{p}.protocol"))?.as_deref() != Some("http") {
                continue;
            }
            if self.get_bool(&format!("{p}.tls.implicit"))? != tls {
                continue;
            }
            if let Some(bind) = self.get_list(&format!("{p}.bind"))?.into_iter().next() {
                let addr: SocketAddr = bind.trim().parse().map_err(|_| {
                    self.malformed(format!(
                        "[server.listener.{id}] bind {bind:?} is not an address:port"
                    ))
                })?;
                return Ok(Some(loopback_reachable(addr)));
            }
        }
        Ok(None)
    }
}
