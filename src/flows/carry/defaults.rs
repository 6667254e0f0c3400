//! The settings a fresh 0.15.5 has without any admin: what separates "left behind" settings an
//! admin changed (listed, with their values, in the crossing's `left-behind.txt`) from 0.15's
//! own defaults (0.16 has its own).
//!
//! Facts (v0.15.5, crates/common/src/manager/boot.rs): at its first start 0.15 writes
//! `DEFAULT_SETTINGS` (copied below verbatim) into the database, generates `oauth.key`, and
//! `--init` writes QUICKSTART_CONFIG (tracer, directory, listeners, stores, fallback admin) into
//! config.toml; creating the first domain sets `report.domain` to it
//! (crates/http/src/management/principal.rs). Checked against the real 0.15.5: a fresh `--init`
//! install lists exactly these (tests/real_crossing.rs).

/// boot.rs `DEFAULT_SETTINGS`, verbatim.
pub(super) const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("queue.quota.size.messages", "100000"),
    ("queue.quota.size.size", "10737418240"),
    ("queue.quota.size.enable", "true"),
    ("queue.limiter.inbound.ip.key", "remote_ip"),
    ("queue.limiter.inbound.ip.rate", "5/1s"),
    ("queue.limiter.inbound.ip.enable", "true"),
    ("queue.limiter.inbound.sender.key.0", "sender_domain"),
    ("queue.limiter.inbound.sender.key.1", "rcpt"),
    ("queue.limiter.inbound.sender.rate", "25/1h"),
    ("queue.limiter.inbound.sender.enable", "true"),
    ("report.analysis.addresses", "postmaster@*"),
    ("queue.virtual.local.threads-per-node", "25"),
    ("queue.virtual.local.description", "Local delivery queue"),
    ("queue.virtual.remote.threads-per-node", "50"),
    ("queue.virtual.remote.description", "Remote delivery queue"),
    ("queue.virtual.dsn.threads-per-node", "5"),
    (
        "queue.virtual.dsn.description",
        "Delivery Status Notification delivery queue",
    ),
    ("queue.virtual.report.threads-per-node", "5"),
    (
        "queue.virtual.report.description",
        "DMARC and TLS report delivery queue",
    ),
    ("queue.schedule.local.queue-name", "local"),
    ("queue.schedule.local.retry.0", "2m"),
    ("queue.schedule.local.retry.1", "5m"),
    ("queue.schedule.local.retry.2", "10m"),
    ("queue.schedule.local.retry.3", "15m"),
    ("queue.schedule.local.retry.4", "30m"),
    ("queue.schedule.local.retry.5", "1h"),
    ("queue.schedule.local.retry.6", "2h"),
    ("queue.schedule.local.notify.0", "1d"),
    ("queue.schedule.local.notify.1", "3d"),
    ("queue.schedule.local.expire-type", "ttl"),
    ("queue.schedule.local.expire", "3d"),
    (
        "queue.schedule.local.description",
        "Local delivery schedule",
    ),
    ("queue.schedule.remote.queue-name", "remote"),
    ("queue.schedule.remote.retry.0", "2m"),
    ("queue.schedule.remote.retry.1", "5m"),
    ("queue.schedule.remote.retry.2", "10m"),
    ("queue.schedule.remote.retry.3", "15m"),
    ("queue.schedule.remote.retry.4", "30m"),
    ("queue.schedule.remote.retry.5", "1h"),
    ("queue.schedule.remote.retry.6", "2h"),
    ("queue.schedule.remote.notify.0", "1d"),
    ("queue.schedule.remote.notify.1", "3d"),
    ("queue.schedule.remote.expire-type", "ttl"),
    ("queue.schedule.remote.expire", "3d"),
    (
        "queue.schedule.remote.description",
        "Remote delivery schedule",
    ),
    ("queue.schedule.dsn.queue-name", "dsn"),
    ("queue.schedule.dsn.retry.0", "15m"),
    ("queue.schedule.dsn.retry.1", "30m"),
    ("queue.schedule.dsn.retry.2", "1h"),
    ("queue.schedule.dsn.retry.3", "2h"),
    ("queue.schedule.dsn.expire-type", "attempts"),
    ("queue.schedule.dsn.max-attempts", "10"),
    (
        "queue.schedule.dsn.description",
        "Delivery Status Notification delivery schedule",
    ),
    ("queue.schedule.report.queue-name", "report"),
    ("queue.schedule.report.retry.0", "30m"),
    ("queue.schedule.report.retry.1", "1h"),
    ("queue.schedule.report.retry.2", "2h"),
    ("queue.schedule.report.expire-type", "attempts"),
    ("queue.schedule.report.max-attempts", "8"),
    (
        "queue.schedule.report.description",
        "DMARC and TLS report delivery schedule",
    ),
    ("queue.tls.invalid-tls.allow-invalid-certs", "true"),
    (
        "queue.tls.invalid-tls.description",
        "Allow invalid TLS certificates",
    ),
    ("queue.tls.default.allow-invalid-certs", "false"),
    ("queue.tls.default.description", "Default TLS settings"),
    ("queue.route.local.type", "local"),
    ("queue.route.local.description", "Local delivery route"),
    ("queue.route.mx.type", "mx"),
    ("queue.route.mx.limits.multihomed", "2"),
    ("queue.route.mx.limits.mx", "5"),
    ("queue.route.mx.ip-lookup", "ipv4_then_ipv6"),
    ("queue.route.mx.description", "MX delivery route"),
    ("queue.connection.default.timeout.connect", "5m"),
    (
        "queue.connection.default.description",
        "Default connection settings",
    ),
];

/// What `--init` writes into config.toml that no conversion consumes (`PREFIX` stands for the
/// directory it was given: the parent of `store.rocksdb.path`).
const INIT: &[(&str, &str)] = &[
    ("directory.internal.type", "internal"),
    ("directory.internal.store", "rocksdb"),
    ("tracer.log.type", "log"),
    ("tracer.log.level", "info"),
    ("tracer.log.path", "PREFIX/logs"),
    ("tracer.log.prefix", "stalwart.log"),
    ("tracer.log.rotate", "daily"),
    ("tracer.log.ansi", "false"),
    ("tracer.log.enable", "true"),
];

/// Keys 0.15 writes itself, whatever their value: a random `oauth.key`, and `report.domain` set
/// from the first domain created.
const GENERATED: &[&str] = &["oauth.key", "report.domain"];

/// Is `key = value` one of 0.15's own (a default, `--init`'s, or generated by 0.15)?
/// `settings` gives `--init`'s prefix (`store.rocksdb.path` is `PREFIX/data`).
pub fn is_default(
    key: &str,
    value: &str,
    settings: &std::collections::BTreeMap<String, String>,
) -> bool {
    if GENERATED.contains(&key) || DEFAULT_SETTINGS.contains(&(key, value)) {
        return true;
    }
    let prefix = settings
        .get("store.rocksdb.path")
        .and_then(|p| p.strip_suffix("/data"));
    INIT.iter().any(|(k, v)| {
        *k == key
            && match (v.strip_prefix("PREFIX"), prefix) {
                (Some(rest), Some(p)) => value == format!("{p}{rest}"),
                (Some(_), None) => false,
                (None, _) => *v == value,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_generated_keys_and_init_values() {
        let s: std::collections::BTreeMap<String, String> = [(
            "store.rocksdb.path".to_string(),
            "/opt/stalwart/data".to_string(),
        )]
        .into();
        assert!(is_default("queue.schedule.remote.expire", "3d", &s));
        assert!(
            !is_default("queue.schedule.remote.expire", "5d", &s),
            "changed"
        );
        assert!(is_default("oauth.key", "anything", &s));
        assert!(is_default("tracer.log.path", "/opt/stalwart/logs", &s));
        assert!(!is_default("tracer.log.path", "/var/log/stalwart", &s));
        assert!(is_default("tracer.log.level", "info", &s));
        assert!(!is_default("tracer.log.level", "trace", &s));
        assert!(
            !is_default("session.rcpt.relay", "true", &s),
            "not a default at all"
        );
    }
}
