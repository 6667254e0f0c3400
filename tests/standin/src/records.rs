//! The logical data: records `key -> value`, like a mail server's items.
//!
//! * Keys are UTF-8 strings `<family>/<id>`; the first byte of the key is the record's
//!   *subspace* (used by `--export`): `mail/...` -> `m`, `settings/...` -> `s`.
//! * "Settings" records are the keys starting with [`SETTINGS_PREFIX`]: the 0.16 recovery-mode
//!   migration wipes them and keeps everything else (upstream wipes settings, directory,
//!   reports, tasks and quotas; the stand-in models all of those as `settings/`).
//! * Values are stored encoded with the schema that wrote them: `s<schema>:<payload>`.
//!   A migration re-encodes every value with the new schema tag (so every stored byte changes),
//!   while the payload (what a user cares about) stays the same.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub type Records = BTreeMap<String, String>;

pub const SETTINGS_PREFIX: &str = "settings/";
pub const MAIL_PREFIX: &str = "mail/";
/// Number of records in a freshly initialised store.
pub const SEED_RECORDS: usize = 50;

pub fn encode(schema: u32, payload: &str) -> String {
    format!("s{schema}:{payload}")
}

/// The payload of a stored value (the value itself if it carries no schema tag).
pub fn decode(value: &str) -> &str {
    match value.split_once(':') {
        Some((tag, payload))
            if tag.len() > 1
                && tag.starts_with('s')
                && tag[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            payload
        }
        _ => value,
    }
}

pub fn mail_key(n: u64) -> String {
    format!("{MAIL_PREFIX}{n:08}")
}

pub fn mail_payload(n: u64) -> String {
    format!("From: sender{n}@example.org\r\nSubject: message {n}\r\n\r\nBody of message {n}.\r\n")
}

/// Deterministic seed of a fresh store: 45 mail records and 5 settings records.
pub fn seed(schema: u32) -> Records {
    let mut r = Records::new();
    for n in 1..=45u64 {
        r.insert(mail_key(n), encode(schema, &mail_payload(n)));
    }
    for (k, v) in [
        ("server.hostname", "mail.example.org"),
        ("lookup.default.domain", "example.org"),
        ("queue.outbound.hostname", "mail.example.org"),
        ("session.rcpt.directory", "'internal'"),
        ("webadmin.auto-update", "false"),
    ] {
        r.insert(format!("{SETTINGS_PREFIX}{k}"), encode(schema, v));
    }
    debug_assert_eq!(r.len(), SEED_RECORDS);
    r
}

/// Next free mail number.
pub fn next_mail(records: &Records) -> u64 {
    records
        .range(MAIL_PREFIX.to_string()..)
        .take_while(|(k, _)| k.starts_with(MAIL_PREFIX))
        .filter_map(|(k, _)| k[MAIL_PREFIX.len()..].parse::<u64>().ok())
        .max()
        .map_or(1, |m| m + 1)
}

/// sha256 (hex) over the sorted records' keys and decoded payloads (the schema tag is left out,
/// so a migration that keeps the data keeps the digest).
pub fn digest(records: &Records) -> String {
    let mut h = Sha256::new();
    for (k, v) in records {
        let p = decode(v);
        h.update((k.len() as u32).to_le_bytes());
        h.update(k.as_bytes());
        h.update((p.len() as u32).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `len:u32 LE` + bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads one `len:u32 LE` + bytes item at `*pos`; `None` when incomplete.
pub fn take_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len_end = pos.checked_add(4)?;
    let len_bytes: [u8; 4] = buf.get(*pos..len_end)?.try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let end = len_end.checked_add(len)?;
    let item = buf.get(len_end..end)?;
    *pos = end;
    Some(item)
}

/// Reads one record (key, value) at `*pos`.
pub fn take_record(buf: &[u8], pos: &mut usize) -> Option<Result<(String, String), String>> {
    let start = *pos;
    let k = take_bytes(buf, pos)?;
    let v = match take_bytes(buf, pos) {
        Some(v) => v,
        None => {
            *pos = start;
            return None;
        }
    };
    Some(match (std::str::from_utf8(k), std::str::from_utf8(v)) {
        (Ok(k), Ok(v)) => Ok((k.to_string(), v.to_string())),
        _ => Err("record is not UTF-8".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_and_digest() {
        let a = seed(4);
        let b = seed(5);
        assert_eq!(a.len(), SEED_RECORDS);
        assert_ne!(a, b);
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(next_mail(&a), 46);
        assert_eq!(decode(&encode(12, "x:y")), "x:y");
    }
}
