//! One line per event on stderr (systemd's journal captures it), upstream-like:
//! `2025-01-01T12:00:00Z INFO Stalwart Server v0.15.5 starting`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// UTC timestamp "YYYY-MM-DDTHH:MM:SSZ" without a date library.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

pub fn line(level: &str, msg: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    // A closed stderr must not kill the server.
    let _ = writeln!(err, "{} {level} {msg}", timestamp());
}

#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::line("INFO", format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::line("WARN", format_args!($($t)*)) };
}
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::line("ERROR", format_args!($($t)*)) };
}
