//! Settings an admin changed in 0.15 that 0.16's registry expresses: carried as registry objects
//! instead of being left behind in `left-behind.txt`.
//!
//! Facts (v0.16.18: crates/registry types and schema, common/src/manager/defaults.rs; v0.15.5:
//! the parsers named per setting below):
//! - a duration is a JSON number of milliseconds, greater than 0 (registry/src/types/
//!   duration.rs); 0.15 takes one number and one unit, `d`, `h`, `m`, `s` or `ms`
//!   (utils/src/config/utils.rs);
//! - a list of objects is a JSON object keyed "0", "1", ...; a set is `{"item": true}`; a
//!   variant is chosen with `@type`; a singleton is updated with the id `singleton`;
//! - recovery mode (where the crossing applies) adds no defaults, and the first normal start
//!   inserts a group of defaults only when the group has no object (defaults.rs: virtual queues
//!   and delivery schedules together). So one changed schedule means creating every virtual
//!   queue and schedule, from 0.15's values (0.15 keeps its own defaults in the database, so
//!   the dump has them all), or 0.16 would run without the others;
//! - a `Custom` notify list needs at least one interval; 0.15 without `notify` keys never
//!   notified (its own fallback is 10000 days), which is carried as one interval of 10000 days;
//! - a virtual queue's name has at most 8 characters.
//!
//! A group that does not convert cleanly (a value 0.15 would take but this helper cannot
//! represent exactly) is not carried at all: it stays in `left-behind.txt`, as before.

use super::convert::Op;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What is carried: the operations, and every 0.15 key they consume (changed or default).
#[derive(Debug, Default)]
pub struct CarriedSettings {
    pub ops: Vec<Op>,
    pub keys: BTreeSet<String>,
}

/// How a value converts.
#[derive(Clone, Copy)]
enum As {
    Bool,
    Count,
}

/// Singleton fields that map one to one: (0.15 key, 0.16 object, field, type).
const SINGLE: &[(&str, &str, &str, As)] = &[
    // 0.15 server/listener.rs `server.max-connections`
    (
        "server.max-connections",
        "SystemSettings",
        "maxConnections",
        As::Count,
    ),
    // 0.15 config/spamfilter.rs `spam-filter.enable`
    ("spam-filter.enable", "SpamSettings", "enable", As::Bool),
    // 0.15 smtp/report.rs `report.analysis.forward`
    (
        "report.analysis.forward",
        "ReportSettings",
        "inboundReportForwarding",
        As::Bool,
    ),
    // 0.15 config/jmap/settings.rs
    ("jmap.email.max-size", "Email", "maxMessageSize", As::Count),
    (
        "jmap.email.max-attachment-size",
        "Email",
        "maxAttachmentSize",
        As::Count,
    ),
    (
        "jmap.mailbox.max-depth",
        "Email",
        "maxMailboxDepth",
        As::Count,
    ),
];

/// 0.15's "never notify" (10000 days), in milliseconds.
const NEVER_MS: u64 = 10_000 * 86_400 * 1000;

/// The settings of `settings` (0.15's, all of them) that an admin changed (`changed(key,
/// value)`) and that 0.16 expresses, as registry operations.
pub fn carry(
    settings: &BTreeMap<String, String>,
    changed: &dyn Fn(&str, &str) -> bool,
) -> CarriedSettings {
    let mut out = CarriedSettings::default();
    let mut updates: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for (key, object, field, kind) in SINGLE {
        let Some(v) = settings.get(*key).filter(|v| changed(key, v)) else {
            continue;
        };
        let value = match kind {
            As::Bool => match v.trim() {
                "true" => json!(true),
                "false" => json!(false),
                _ => continue,
            },
            As::Count => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => json!(n),
                _ => continue,
            },
        };
        updates
            .entry(object)
            .or_default()
            .insert(field.to_string(), value);
        out.keys.insert(key.to_string());
    }
    if let Some((keys, addresses)) = report_addresses(settings, changed) {
        updates
            .entry("ReportSettings")
            .or_default()
            .insert("inboundReportAddresses".into(), addresses);
        out.keys.extend(keys);
    }
    if let Some((keys, mut ops)) = queues_and_schedules(settings, changed) {
        out.ops.append(&mut ops);
        out.keys.extend(keys);
    }
    for (object, value) in updates {
        out.ops.push(Op::Update {
            object: object.into(),
            value: Value::Object(value),
        });
    }
    out
}

/// `report.analysis.addresses` (one value, or `.0`, `.1`, ...: 0.15's `Config::properties`),
/// when any of them changed: 0.16's `ReportSettings.inboundReportAddresses`, a set.
fn report_addresses(
    settings: &BTreeMap<String, String>,
    changed: &dyn Fn(&str, &str) -> bool,
) -> Option<(Vec<String>, Value)> {
    const KEY: &str = "report.analysis.addresses";
    let entries: Vec<(&String, &String)> = settings
        .iter()
        .filter(|(k, _)| {
            *k == KEY
                || k.strip_prefix(KEY)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    if !entries.iter().any(|(k, v)| changed(k, v)) {
        return None;
    }
    let mut set = Map::new();
    for (_, v) in &entries {
        let v = v.trim();
        if v.is_empty() || v.contains(char::is_whitespace) {
            return None;
        }
        set.insert(v.to_string(), json!(true));
    }
    Some((
        entries.iter().map(|(k, _)| k.to_string()).collect(),
        Value::Object(set),
    ))
}

/// A 0.15 duration (`5d`, `2h`, `30m`, `10s`, `500ms`) in milliseconds; None for anything else
/// or 0 (0.16 refuses 0).
pub fn duration_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, unit) = match v.strip_suffix("ms") {
        Some(n) => (n, 1),
        None => {
            let unit = match v.chars().last()? {
                'd' => 86_400_000,
                'h' => 3_600_000,
                'm' => 60_000,
                's' => 1000,
                _ => return None,
            };
            (&v[..v.len() - 1], unit)
        }
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(unit).filter(|ms| *ms > 0)
}

/// The sub-keys of `prefix.<name>.`, per name: {name: {rest: value}}.
fn grouped<'a>(
    settings: &'a BTreeMap<String, String>,
    prefix: &str,
) -> BTreeMap<&'a str, BTreeMap<&'a str, &'a str>> {
    let mut out: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (k, v) in settings {
        if let Some((name, rest)) = k.strip_prefix(prefix).and_then(|r| r.split_once('.')) {
            out.entry(name).or_default().insert(rest, v.as_str());
        }
    }
    out
}

/// `intervals` of `retry.N` / `notify.N` in index order: a `Custom` list.
fn intervals(fields: &BTreeMap<&str, &str>, list: &str) -> Option<Vec<u64>> {
    let mut items: Vec<(u32, u64)> = Vec::new();
    for (k, v) in fields {
        if let Some(n) = k.strip_prefix(list).and_then(|r| r.strip_prefix('.')) {
            items.push((n.parse().ok()?, duration_ms(v)?));
        }
    }
    items.sort();
    Some(items.into_iter().map(|(_, ms)| ms).collect())
}

fn custom(ms: &[u64]) -> Value {
    let intervals: Map<String, Value> = ms
        .iter()
        .enumerate()
        .map(|(i, d)| (i.to_string(), json!({"duration": d})))
        .collect();
    json!({"@type": "Custom", "intervals": intervals})
}

/// Every `queue.virtual.*` and `queue.schedule.*` of 0.15 as 0.16's `MtaVirtualQueue` and
/// `MtaDeliverySchedule` objects, when an admin changed any of them; None when they are all at
/// 0.15's defaults (0.16 brings its own) or one does not convert exactly.
fn queues_and_schedules(
    settings: &BTreeMap<String, String>,
    changed: &dyn Fn(&str, &str) -> bool,
) -> Option<(Vec<String>, Vec<Op>)> {
    let keys: Vec<String> = settings
        .keys()
        .filter(|k| k.starts_with("queue.virtual.") || k.starts_with("queue.schedule."))
        .cloned()
        .collect();
    if !keys.iter().any(|k| changed(k, &settings[k])) {
        return None;
    }
    let mut queues = Vec::new();
    for (name, fields) in grouped(settings, "queue.virtual.") {
        if name.is_empty() || name.len() > 8 {
            return None;
        }
        let mut q = json!({"name": name});
        for (k, v) in fields {
            match k {
                "threads-per-node" => {
                    q["threadsPerNode"] = json!(v.trim().parse::<u64>().ok().filter(|n| *n >= 1)?)
                }
                "description" if !v.trim().is_empty() => q["description"] = json!(v),
                "description" => {}
                _ => return None,
            }
        }
        queues.push((format!("vq-{name}"), q));
    }
    let mut schedules = Vec::new();
    for (name, fields) in grouped(settings, "queue.schedule.") {
        let queue = fields.get("queue-name")?;
        if !queues.iter().any(|(cid, _)| *cid == format!("vq-{queue}")) {
            return None;
        }
        let mut s = json!({"name": name, "queueId": format!("#vq-{queue}")});
        s["expiry"] = match fields.get("expire-type").copied().unwrap_or("ttl") {
            "ttl" => json!({"@type": "Ttl", "expire": duration_ms(fields.get("expire")?)?}),
            "attempts" => json!({
                "@type": "Attempts",
                "maxAttempts": fields.get("max-attempts")?.trim().parse::<u64>().ok().filter(|n| *n >= 1)?
            }),
            _ => return None,
        };
        let retry = intervals(&fields, "retry")?;
        if !retry.is_empty() {
            s["retry"] = custom(&retry);
        }
        let notify = intervals(&fields, "notify")?;
        s["notify"] = custom(if notify.is_empty() {
            &[NEVER_MS]
        } else {
            &notify
        });
        for (k, v) in &fields {
            let known = ["queue-name", "expire-type", "expire", "max-attempts"].contains(k)
                || k.starts_with("retry.")
                || k.starts_with("notify.");
            match *k {
                "description" if !v.trim().is_empty() => s["description"] = json!(v),
                "description" => {}
                _ if known => {}
                _ => return None,
            }
        }
        schedules.push((format!("schedule-{name}"), s));
    }
    let ops = vec![
        Op::Create {
            object: "MtaVirtualQueue".into(),
            items: queues,
        },
        Op::Create {
            object: "MtaDeliverySchedule".into(),
            items: schedules,
        },
    ];
    Some((keys, ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults_with(changes: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut s: BTreeMap<String, String> = super::super::defaults::DEFAULT_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in changes {
            s.insert(k.to_string(), v.to_string());
        }
        s
    }

    fn changed(s: &BTreeMap<String, String>) -> impl Fn(&str, &str) -> bool + '_ {
        move |k, v| !super::super::defaults::is_default(k, v, s)
    }

    #[test]
    fn durations_as_0_15_writes_them() {
        assert_eq!(duration_ms("5d"), Some(432_000_000));
        assert_eq!(duration_ms("2m"), Some(120_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("10s"), Some(10_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        for bad in ["0d", "5", "5w", "", "d", "-1h", "1.5h"] {
            assert_eq!(duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn nothing_changed_nothing_carried() {
        let s = defaults_with(&[]);
        let c = carry(&s, &changed(&s));
        assert!(c.ops.is_empty() && c.keys.is_empty(), "{:?}", c.ops);
    }

    /// One changed schedule brings every queue and schedule (0.16 adds none of its defaults
    /// once one exists), with 0.15's values; the report schedule without notify keys gets 0.15's
    /// "never" as its one interval.
    #[test]
    fn a_changed_schedule_carries_every_queue_and_schedule() {
        let s = defaults_with(&[("queue.schedule.remote.expire", "5d")]);
        let c = carry(&s, &changed(&s));
        let Op::Create { object, items } = &c.ops[0] else {
            panic!("{:?}", c.ops)
        };
        assert_eq!(object, "MtaVirtualQueue");
        assert_eq!(items.len(), 4);
        let remote_q = &items.iter().find(|(id, _)| id == "vq-remote").unwrap().1;
        assert_eq!(
            remote_q,
            &json!({"name": "remote", "threadsPerNode": 50, "description": "Remote delivery queue"})
        );
        let Op::Create { object, items } = &c.ops[1] else {
            panic!("{:?}", c.ops)
        };
        assert_eq!(object, "MtaDeliverySchedule");
        assert_eq!(items.len(), 4);
        let get = |n: &str| &items.iter().find(|(id, _)| id == n).unwrap().1;
        let remote = get("schedule-remote");
        assert_eq!(remote["queueId"], "#vq-remote");
        assert_eq!(
            remote["expiry"],
            json!({"@type": "Ttl", "expire": 432_000_000u64})
        );
        assert_eq!(remote["retry"]["intervals"]["0"]["duration"], 120_000);
        assert_eq!(remote["retry"]["intervals"]["6"]["duration"], 7_200_000);
        assert_eq!(
            remote["notify"]["intervals"]["1"]["duration"],
            259_200_000u64
        );
        let report = get("schedule-report");
        assert_eq!(
            report["expiry"],
            json!({"@type": "Attempts", "maxAttempts": 8})
        );
        assert_eq!(
            report["notify"],
            json!({"@type": "Custom", "intervals": {"0": {"duration": NEVER_MS}}})
        );
        assert!(c.keys.contains("queue.schedule.remote.expire"));
        assert!(c.keys.contains("queue.virtual.dsn.description"));
    }

    #[test]
    fn a_schedule_that_does_not_convert_leaves_the_group_behind() {
        for bad in [
            ("queue.schedule.remote.expire", "5 days"),
            ("queue.schedule.remote.queue-name", "nowhere"),
            ("queue.schedule.remote.unknown", "x"),
            ("queue.virtual.verylongname.threads-per-node", "4"),
        ] {
            let s = defaults_with(&[("queue.schedule.local.expire", "4d"), bad]);
            let c = carry(&s, &changed(&s));
            assert!(c.ops.is_empty(), "{bad:?}: {:?}", c.ops);
            assert!(!c.keys.iter().any(|k| k.starts_with("queue.")), "{bad:?}");
        }
    }

    #[test]
    fn singletons_merge_per_object_and_report_addresses_form_a_set() {
        let s = defaults_with(&[
            ("report.analysis.addresses", "postmaster@example.org"),
            ("report.analysis.addresses.1", "dmarc@*"),
            ("report.analysis.forward", "false"),
            ("server.max-connections", "100"),
            ("spam-filter.enable", "maybe"),
        ]);
        let c = carry(&s, &changed(&s));
        let find = |o: &str| {
            c.ops.iter().find_map(|op| match op {
                Op::Update { object, value } if object == o => Some(value.clone()),
                _ => None,
            })
        };
        assert_eq!(
            find("ReportSettings").unwrap(),
            json!({"inboundReportAddresses": {"postmaster@example.org": true, "dmarc@*": true},
                   "inboundReportForwarding": false})
        );
        assert_eq!(
            find("SystemSettings").unwrap(),
            json!({"maxConnections": 100})
        );
        assert!(
            find("SpamSettings").is_none(),
            "not a boolean: stays behind"
        );
        assert!(!c.keys.contains("spam-filter.enable"));
        assert!(c.keys.contains("report.analysis.addresses.1"));
    }
}
