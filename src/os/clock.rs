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

/// A monotonic time stamp, `BOOT:MS`: CLOCK_BOOTTIME in ms, tagged with the start of this
/// boot's id. Wall-clock times (`at`) jump when the clock is set (NTP stepping it, an admin, a
/// VM resumed from a snapshot); durations come from these stamps whenever both ends were taken
/// in the same boot. None when the boot id cannot be read.
pub fn mono_stamp() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().chars().take(8).collect())
    });
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let ms = t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000;
    boot.as_ref().map(|b| format!("{b}:{ms}"))
}

/// Milliseconds from stamp `a` to stamp `b` when both are from the same boot.
pub fn mono_elapsed(a: &str, b: &str) -> Option<u64> {
    let (boot_a, ms_a) = a.split_once(':')?;
    let (boot_b, ms_b) = b.split_once(':')?;
    if boot_a != boot_b {
        return None;
    }
    ms_b.parse::<u64>()
        .ok()?
        .checked_sub(ms_a.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_stamps_measure_within_one_boot_only() {
        let a = mono_stamp().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = mono_stamp().unwrap();
        let d = mono_elapsed(&a, &b).unwrap();
        assert!((20..5000).contains(&d), "{a} -> {b}: {d}");
        assert_eq!(mono_elapsed(&b, &a), None, "backwards");
        assert_eq!(mono_elapsed("aaaa:1", "bbbb:5"), None, "another boot");
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
