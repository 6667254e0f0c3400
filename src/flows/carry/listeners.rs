//! 0.15's `[server.listener.<id>]` as 0.16 NetworkListener objects.
//!
//! 0.16 keeps its listeners in the registry; its first normal start after the migration binds
//! seven defaults (25, 465, 993, 995, 4190, 443, 8080; no 143, 110 or 587) unless listeners
//! exist. Carrying 0.15's keeps every port that answered before answering (what the health gate
//! checks). Facts (measured with the real 0.16.18, notes real-0.16.md): an object looks like
//! `{"name":"imap","protocol":"imap","bind":{"[::]:143":true},"tlsImplicit":false}`.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// 0.15 protocol names -> 0.16's.
fn protocol(p: &str) -> Option<&'static str> {
    Some(match p {
        "smtp" => "smtp",
        "lmtp" => "lmtp",
        "http" => "http",
        "imap" => "imap",
        "pop3" => "pop3",
        "managesieve" | "manageSieve" | "sieve" => "manageSieve",
        _ => return None,
    })
}

/// Each listener id with its object, or why it cannot be carried.
pub fn from_settings(settings: &BTreeMap<String, String>) -> Vec<(String, Result<Value, String>)> {
    let mut by_id: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (k, v) in settings {
        let Some(rest) = k.strip_prefix("server.listener.") else {
            continue;
        };
        let Some((id, field)) = rest.split_once('.') else {
            continue;
        };
        by_id.entry(id).or_default().insert(field, v.as_str());
    }
    by_id
        .into_iter()
        .map(|(id, f)| (id.to_string(), listener(id, &f, settings)))
        .collect()
}

/// The values of `field` (a bare key, or the array forms `field.0000` from config.toml and
/// `field.0` from the database: measured).
fn values<'a>(f: &BTreeMap<&str, &'a str>, field: &str) -> Vec<&'a str> {
    f.iter()
        .filter(|(k, _)| {
            **k == field
                || k.strip_prefix(field)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|(_, v)| *v)
        .collect()
}

/// 0.15 listener keys -> 0.16 fields (facts: carry-facts.md, listener.rs at both tags). Each
/// falls back to its `server.<key>` global, as 0.15 did.
const FIELDS: &[(&str, &str, Kind)] = &[
    ("tls.enable", "useTls", Kind::Bool),
    (
        "tls.ignore-client-order",
        "tlsIgnoreClientOrder",
        Kind::Bool,
    ),
    ("max-connections", "maxConnections", Kind::Number),
    ("socket.backlog", "socketBacklog", Kind::Number),
    ("socket.nodelay", "socketNoDelay", Kind::Bool),
    ("socket.reuse-addr", "socketReuseAddress", Kind::Bool),
    ("socket.reuse-port", "socketReusePort", Kind::Bool),
    (
        "socket.send-buffer-size",
        "socketSendBufferSize",
        Kind::Number,
    ),
    (
        "socket.recv-buffer-size",
        "socketReceiveBufferSize",
        Kind::Number,
    ),
    ("socket.tos", "socketTosV4", Kind::Number),
    ("socket.ttl", "socketTtl", Kind::Number),
    (
        "proxy.trusted-networks",
        "overrideProxyTrustedNetworks",
        Kind::Set,
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Number,
    Set,
}

fn listener(
    id: &str,
    f: &BTreeMap<&str, &str>,
    all: &BTreeMap<String, String>,
) -> Result<Value, String> {
    if f.values().any(|v| v.contains("%{")) {
        return Err("a %{..}% macro in its settings".into());
    }
    let proto = f.get("protocol").copied().unwrap_or("smtp");
    let proto = protocol(proto).ok_or_else(|| format!("protocol {proto:?} unknown to 0.16"))?;
    let mut bind = Map::new();
    for v in values(f, "bind") {
        v.parse::<std::net::SocketAddr>()
            .map_err(|_| format!("bind {v:?} is not an address:port"))?;
        bind.insert(v.to_string(), json!(true));
    }
    if bind.is_empty() {
        return Err("no bind address".into());
    }
    let implicit = matches!(f.get("tls.implicit").copied(), Some("true"));
    let mut obj = json!({"name": id, "protocol": proto, "bind": bind, "tlsImplicit": implicit});
    let globals: BTreeMap<&str, &str> = all
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("server.")?, v.as_str())))
        .collect();
    for (key, field, kind) in FIELDS {
        let mut vals = values(f, key);
        if vals.is_empty() {
            vals = values(&globals, key);
        }
        let Some(first) = vals.first() else {
            continue;
        };
        obj[*field] = match kind {
            Kind::Bool => json!(*first == "true"),
            Kind::Number => json!(first
                .parse::<u64>()
                .map_err(|_| format!("{key} = {first:?} is not a number"))?),
            Kind::Set => Value::Object(vals.iter().map(|v| (v.to_string(), json!(true))).collect()),
        };
    }
    // 0.15 did not reuse the port unless told to; 0.16 does by default.
    if obj.get("socketReusePort").is_none() {
        obj["socketReusePort"] = json!(false);
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_of_both_toml_forms() {
        let s: BTreeMap<String, String> = [
            ("server.listener.imap.bind", "127.0.0.1:143"),
            ("server.listener.imap.protocol", "imap"),
            (
                "server.listener.imap.proxy.trusted-networks.0",
                "10.0.0.0/8",
            ),
            ("server.max-connections", "500"),
            ("server.listener.smtp.bind.0000", "[::]:25"),
            ("server.listener.smtp.bind.0001", "0.0.0.0:2525"),
            ("server.listener.smtp.protocol", "smtp"),
            ("server.listener.sub.bind", "[::]:465"),
            ("server.listener.sub.protocol", "smtp"),
            ("server.listener.sub.tls.implicit", "true"),
            ("server.listener.odd.bind", "%{env:ADDR}%"),
            ("server.listener.odd.protocol", "http"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l: BTreeMap<String, Result<Value, String>> = from_settings(&s).into_iter().collect();
        assert_eq!(
            l["imap"],
            Ok(
                json!({"name": "imap", "protocol": "imap", "bind": {"127.0.0.1:143": true},
                      "tlsImplicit": false, "socketReusePort": false, "maxConnections": 500,
                      "overrideProxyTrustedNetworks": {"10.0.0.0/8": true}})
            )
        );
        assert_eq!(
            l["smtp"].as_ref().unwrap()["bind"]
                .as_object()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(l["sub"].as_ref().unwrap()["tlsImplicit"], true);
        assert!(l["odd"].is_err());
    }
}
