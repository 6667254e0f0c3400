//! Time: the wall clock for display and records, CLOCK_BOOTTIME stamps for durations. Order
//! never comes from here (transactions and snapshots carry sequence numbers: the wall clock may
//! be set back between two runs), and durations only from stamps of one boot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch (0 before it).
pub fn now_secs() -> u64 {
    since_epoch(SystemTime::now()).as_secs()
}

pub fn now_ms() -> u64 {
    since_epoch(SystemTime::now()).as_millis() as u64
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// `2026-12-01T12:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `20261201T120000Z`, for ids that sort by time.
pub fn compact(secs: u64) -> String {
    rfc3339(secs).replace(['-', ':'], "")
}

/// `2026-12-01 12:00:00Z`, for tables.
pub fn display(secs: i64) -> String {
    rfc3339(u64::try_from(secs).unwrap_or(0)).replacen('T', " ", 1)
}

/// An RFC 3339 UTC stamp (fractions allowed) as seconds since the epoch.
pub fn parse_rfc3339(ts: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(ts.trim_end_matches('Z'))
        .ok()
        .map(|t| since_epoch(t).as_secs())
}

/// A monotonic time stamp: CLOCK_BOOTTIME in ms, tagged with the start of this boot's id,
/// written `BOOT:MS`. Wall-clock times (`at`) jump when the clock is set (NTP stepping it, an
/// admin, a VM resumed from a snapshot); durations come from these stamps whenever both ends
/// were taken in the same boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonoStamp {
    boot: String,
    ms: u64,
}

impl MonoStamp {
    /// Now; None when the boot id cannot be read.
    pub fn now() -> Option<MonoStamp> {
        static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let boot = BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().chars().take(8).collect())
        });
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
        let ms = t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000;
        boot.as_ref().map(|b| MonoStamp {
            boot: b.clone(),
            ms,
        })
    }

    /// `BOOT:MS` as written; None for anything else.
    pub fn parse(text: &str) -> Option<MonoStamp> {
        let (boot, ms) = text.split_once(':')?;
        if boot.is_empty() {
            return None;
        }
        Some(MonoStamp {
            boot: boot.to_string(),
            ms: ms.parse().ok()?,
        })
    }

    /// Milliseconds from `earlier` to `self` when both are from the same boot (never backwards).
    pub fn ms_since(&self, earlier: &MonoStamp) -> Option<u64> {
        if self.boot != earlier.boot {
            return None;
        }
        self.ms.checked_sub(earlier.ms)
    }
}

impl std::fmt::Display for MonoStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.boot, self.ms)
    }
}

impl serde::Serialize for MonoStamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A record's stamp as written: one that does not read (a damaged journal) is no stamp, never
/// a record that does not read.
pub fn lenient_stamp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<MonoStamp>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(text.as_deref().and_then(MonoStamp::parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_stamps_measure_within_one_boot_only() {
        let a = MonoStamp::now().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = MonoStamp::now().unwrap();
        let d = b.ms_since(&a).unwrap();
        assert!((20..5000).contains(&d), "{a} -> {b}: {d}");
        assert_eq!(a.ms_since(&b), None, "backwards");
        let other = |t: &str| MonoStamp::parse(t).unwrap();
        assert_eq!(
            other("bbbb:5").ms_since(&other("aaaa:1")),
            None,
            "another boot"
        );
        assert_eq!(MonoStamp::parse(&a.to_string()), Some(a));
        for bad in ["", "x", ":5", "aaaa:", "aaaa:-1", "aaaa:1.5"] {
            assert_eq!(MonoStamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_and_parses() {
        let t = 1_796_126_400; // 2026-12-01T12:00:00Z
        assert_eq!(rfc3339(t), "2026-12-01T12:00:00Z");
        assert_eq!(compact(t), "20261201T120000Z");
        assert_eq!(display(t as i64), "2026-12-01 12:00:00Z");
        assert_eq!(parse_rfc3339("2026-12-01T12:00:00Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-12-01T12:00:00.123456Z"), Some(t));
        assert_eq!(parse_rfc3339("not a time"), None);
        assert_eq!(display(0), "1970-01-01 00:00:00Z");
    }
}
