//! Stand-in *releases*: one compiled binary, many releases.
//!
//! A release is a copy of the stand-in binary with a trailer appended. The trailer is the
//! stand-in's "build-time" choice (version, injected fault, migration duration): the same file
//! always behaves the same way, like a real release would, and every release file has its own
//! sha256.
//!
//! Trailer format (other crates rely on it, do not change it): the file ends with
//!
//! ```text
//! <JSON bytes> <u32 little-endian length of the JSON> <8 magic bytes "STNDREL1">
//! ```
//!
//! with JSON like `{"version":"0.15.5","fault":"none","migrate_ms":300}`.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The 8 magic bytes that end a stamped release.
pub const TRAILER_MAGIC: &[u8; 8] = b"STNDREL1";

/// Largest trailer JSON accepted when reading (anything bigger is not a trailer).
const MAX_JSON: u64 = 64 * 1024;

/// Default migration duration of a release, in milliseconds.
pub const DEFAULT_MIGRATE_MS: u64 = 300;

/// A misbehaviour built into a release (for testing the upgrade helper's failure handling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Behaves like a healthy upstream release.
    #[default]
    None,
    /// A needed schema migration fails: logs `ERROR Failed to migrate database: ...` and
    /// exits 0 without touching the data (upstream exits 0 after a failed migration).
    MigrationFails,
    /// Logs an error and exits 1 right after reading the configuration.
    CrashAtStart,
    /// `/healthz/live` answers 200 but `/healthz/ready` answers 503 forever.
    NeverReady,
    /// SIGINT and SIGTERM are ignored; only SIGKILL ends the process.
    IgnoreStop,
    /// The web-admin update (`/api/update/webadmin`, JMAP `UpdateApps`) answers 500.
    WebadminFails,
    /// The web-admin update sleeps 120 s before answering.
    WebadminSlow,
    /// 0.16 in recovery mode refuses every registry object a client creates (`notCreated`
    /// invalidProperties), as the real 0.16 refuses an object it cannot accept.
    RegistryRefuses,
    /// Starts and becomes ready like a healthy release, then crashes (exit 1) 15 s later, at
    /// every start: past the health gate, into `Restart=`'s loop.
    CrashLater,
}

impl Fault {
    /// All faults, in declaration order.
    pub const ALL: [Fault; 9] = [
        Fault::None,
        Fault::MigrationFails,
        Fault::CrashAtStart,
        Fault::NeverReady,
        Fault::IgnoreStop,
        Fault::WebadminFails,
        Fault::WebadminSlow,
        Fault::RegistryRefuses,
        Fault::CrashLater,
    ];

    /// The kebab-case name used in the trailer JSON ("none", "migration-fails", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::MigrationFails => "migration-fails",
            Fault::CrashAtStart => "crash-at-start",
            Fault::NeverReady => "never-ready",
            Fault::IgnoreStop => "ignore-stop",
            Fault::WebadminFails => "webadmin-fails",
            Fault::WebadminSlow => "webadmin-slow",
            Fault::RegistryRefuses => "registry-refuses",
            Fault::CrashLater => "crash-later",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown fault {s:?}"))
    }
}

/// What a stamped release is: its version, its injected fault and how long its migration takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Bare version, e.g. "0.15.5" (printed by `--version`).
    pub version: String,
    /// Injected misbehaviour.
    #[serde(default)]
    pub fault: Fault,
    /// Duration of a schema migration in milliseconds (the store is read-only meanwhile).
    #[serde(default = "default_migrate_ms")]
    pub migrate_ms: u64,
}

fn default_migrate_ms() -> u64 {
    DEFAULT_MIGRATE_MS
}

impl Release {
    /// A healthy release of `version` with the default migration time.
    pub fn new(version: impl Into<String>) -> Self {
        Release {
            version: version.into(),
            fault: Fault::None,
            migrate_ms: DEFAULT_MIGRATE_MS,
        }
    }

    /// Same release with another fault.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Same release with another migration time.
    pub fn with_migrate_ms(mut self, ms: u64) -> Self {
        self.migrate_ms = ms;
        self
    }

    /// The trailer bytes appended by [`stamp`].
    pub fn trailer_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(json.len() + 12);
        out.extend_from_slice(&json);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(TRAILER_MAGIC);
        out
    }
}

/// Length of the trailer at the end of `bytes`, if there is a valid one.
fn trailer_len_in(bytes: &[u8]) -> Option<usize> {
    let n = bytes.len();
    if n < 12 || &bytes[n - 8..] != TRAILER_MAGIC {
        return None;
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[n - 12..n - 8]);
    let json_len = u32::from_le_bytes(len) as usize;
    if json_len as u64 > MAX_JSON || json_len + 12 > n {
        return None;
    }
    serde_json::from_slice::<Release>(&bytes[n - 12 - json_len..n - 12]).ok()?;
    Some(json_len + 12)
}

/// Makes a release: copies `base_binary` to `out` (an existing trailer of the base is replaced,
/// so stamping a stamped file works), appends the trailer of `release`, mode 0755.
///
/// The file is written to a temporary sibling, fsync'd and renamed over `out`, so a running
/// `out` is never modified in place (no ETXTBSY) and `out` is never seen half-written.
pub fn stamp(base_binary: &Path, out: &Path, release: &Release) -> std::io::Result<()> {
    let mut bytes = fs::read(base_binary)?;
    if let Some(t) = trailer_len_in(&bytes) {
        bytes.truncate(bytes.len() - t);
    }
    bytes.extend_from_slice(&release.trailer_bytes());

    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "release".into());
    let tmp = out.with_file_name(format!(".{name}.stamp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.set_permissions(fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, out)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads the trailer of a release file; `None` if the file has no (valid) trailer.
pub fn read_trailer(path: &Path) -> Option<Release> {
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len < 12 {
        return None;
    }
    f.seek(SeekFrom::Start(len - 12)).ok()?;
    let mut tail = [0u8; 12];
    f.read_exact(&mut tail).ok()?;
    if &tail[4..] != TRAILER_MAGIC {
        return None;
    }
    let mut l = [0u8; 4];
    l.copy_from_slice(&tail[..4]);
    let json_len = u64::from(u32::from_le_bytes(l));
    if json_len > MAX_JSON || json_len + 12 > len {
        return None;
    }
    f.seek(SeekFrom::Start(len - 12 - json_len)).ok()?;
    let mut json = vec![0u8; json_len as usize];
    f.read_exact(&mut json).ok()?;
    serde_json::from_slice(&json).ok()
}

/// Parses "0.15.5", "v0.15.5", "0.16" or "0.15.5-rc1" into (major, minor, patch).
pub fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split(['-', '+']).next()?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Database schema number a version uses.
///
/// Upstream (facts file, from Stalwart's source at v0.15.5/v0.16.18): 0.12.0-0.12.4 = 1,
/// 0.12.5+ = 2, 0.13 = 3, 0.14 = 4, 0.15 = 5, 0.16 = 6; patch releases keep the number, minor
/// releases bump it.
///
/// Stand-in extrapolation (NOT upstream facts): 0.x before 0.12 = 0; 0.x for x >= 13 = x - 10
/// (so a hypothetical 0.17 = 7); 1.y = 7 + y (1.0 is assumed to be the next schema after 0.16).
/// Versions >= 2.0 and unparseable strings give `None`.
pub fn schema_for(version: &str) -> Option<u32> {
    let (major, minor, patch) = parse_version(version)?;
    let s = match (major, minor) {
        (0, m) if m < 12 => 0,
        (0, 12) if patch < 5 => 1,
        (0, 12) => 2,
        (0, m) => m.checked_sub(10)?,
        (1, m) => m.checked_add(7)?,
        _ => return None,
    };
    u32::try_from(s).ok()
}

/// True for versions that read `config.json` (>= 0.16); false for the `config.toml` era.
pub fn uses_json_config(version: &str) -> Option<bool> {
    let (major, minor, _) = parse_version(version)?;
    Some((major, minor) >= (0, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_numbers() {
        assert_eq!(schema_for("0.12.4"), Some(1));
        assert_eq!(schema_for("0.12.5"), Some(2));
        assert_eq!(schema_for("0.13.2"), Some(3));
        assert_eq!(schema_for("0.14.3"), Some(4));
        assert_eq!(schema_for("0.15.5"), Some(5));
        assert_eq!(schema_for("v0.16.18"), Some(6));
        assert_eq!(schema_for("0.17.0"), Some(7));
        assert_eq!(schema_for("0.11.8"), Some(0));
        assert_eq!(schema_for("1.0.0"), Some(7));
        assert_eq!(schema_for("2.0.0"), None);
        assert_eq!(schema_for("garbage"), None);
    }

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert_eq!(f.as_str().parse::<Fault>().unwrap(), f);
        }
    }

    #[test]
    fn trailer_layout() {
        let r = Release::new("0.15.5");
        let t = r.trailer_bytes();
        let json = br#"{"version":"0.15.5","fault":"none","migrate_ms":300}"#;
        assert_eq!(&t[..json.len()], json);
        assert_eq!(
            &t[json.len()..json.len() + 4],
            &(json.len() as u32).to_le_bytes()
        );
        assert_eq!(&t[t.len() - 8..], b"STNDREL1");
    }

    #[test]
    fn stamp_and_restamp() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::write(&base, b"\x7fELF pretend binary").unwrap();
        assert_eq!(read_trailer(&base), None);
        let a = dir.path().join("a");
        let r = Release::new("0.14.3")
            .with_fault(Fault::NeverReady)
            .with_migrate_ms(5);
        stamp(&base, &a, &r).unwrap();
        assert_eq!(read_trailer(&a), Some(r));
        let mode = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Restamping a stamped file replaces the trailer instead of stacking one.
        let b = dir.path().join("b");
        let r2 = Release::new("0.15.5");
        stamp(&a, &b, &r2).unwrap();
        assert_eq!(read_trailer(&b), Some(r2.clone()));
        let bytes = std::fs::read(&b).unwrap();
        assert_eq!(
            bytes.len(),
            b"\x7fELF pretend binary".len() + r2.trailer_bytes().len()
        );
    }
}
