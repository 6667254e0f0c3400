//! Versions of the server as the binary (`--version`), dpkg and rpm spell them, and the semver class
//! of a change.
//!
//! Every string is mapped to semver strictly: exactly three numeric components (no leading zeros,
//! none above [`MAX_COMPONENT`]), an optional pre-release, nothing else. Anything else is refused
//! with [`VersionError::Unparseable`] instead of guessed: `0.15`, `latest`, `0.15.5.1`, `""`.
//!
//! Packaging spellings:
//! - dpkg `[epoch:]upstream[-revision]`: the epoch and the revision (after the LAST hyphen, Debian
//!   Policy 5.6.12) are dropped; `~` in upstream starts a pre-release (`0.16.0~rc1` ->
//!   `0.16.0-rc1`; both sort before `0.16.0`).
//! - rpm `[epoch:]version[-release]`: same; `~` is a pre-release, `^` (post-release snapshot) has
//!   no semver equivalent and is refused.
//! - `+suffix` on the upstream part (`+dfsg`, `+ds`, a native `+deb12u1`) marks a repack of the same
//!   upstream release: it is semver build metadata and dropped (it takes no part in precedence).
//!
//! Known difference: dpkg/rpm compare `rc10` > `rc9` numerically, semver compares the identifier
//! `rc10` < `rc9` as text. Classes only look at the numeric core, so this only matters when two
//! pre-releases of one release are compared.

use crate::os::child::Program;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VersionError {
    #[error("cannot read a server version from {what} {input:?}: {reason}; refusing to guess")]
    Unparseable {
        what: &'static str,
        input: String,
        reason: String,
    },
}

/// `BINARY --version` did not give a version.
#[derive(Debug, thiserror::Error)]
#[error("{path} --version failed: {message}; is it a Stalwart server binary for this machine?")]
pub struct CheckError {
    pub path: PathBuf,
    pub message: String,
}

/// An upstream server version (semver; no packaging revision).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(pub semver::Version);

/// The class of a change from one version to another (Stalwart: 0.x -> 0.y is a minor release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Same,
    Patch,
    Minor,
    Major,
    Downgrade,
}

/// The largest accepted version component. Stalwart's numbers are small; a component above this
/// is a date, a build number or garbage, not a release we could classify.
pub const MAX_COMPONENT: u64 = 999_999;

const BINARY: &str = "the output of `stalwart --version`";
const DPKG: &str = "the dpkg version";
const RPM: &str = "the rpm version";
const LINE: &str = "the release line";

fn unparseable(what: &'static str, input: &str, reason: impl Into<String>) -> VersionError {
    VersionError::Unparseable {
        what,
        input: input.trim().to_string(),
        reason: reason.into(),
    }
}

/// Strict semver of an upstream version (epoch/revision already removed, `~` already mapped).
fn strict_semver(what: &'static str, input: &str, upstream: &str) -> Result<Version, VersionError> {
    if upstream.is_empty() {
        return Err(unparseable(what, input, "it is empty"));
    }
    let mut v = semver::Version::parse(upstream).map_err(|e| {
        unparseable(
            what,
            input,
            format!("{upstream:?} is not MAJOR.MINOR.PATCH[-PRERELEASE] ({e})"),
        )
    })?;
    for (name, n) in [("major", v.major), ("minor", v.minor), ("patch", v.patch)] {
        if n > MAX_COMPONENT {
            return Err(unparseable(
                what,
                input,
                format!("the {name} number {n} is implausibly large (limit {MAX_COMPONENT})"),
            ));
        }
    }
    // Build metadata takes no part in precedence (semver 2.0 §10): a repack (`+dfsg`) is the same
    // upstream release.
    v.build = semver::BuildMetadata::EMPTY;
    Ok(Version(v))
}

/// Splits `[epoch:]rest`; the epoch must be digits.
fn strip_epoch<'a>(what: &'static str, input: &'a str) -> Result<&'a str, VersionError> {
    match input.split_once(':') {
        None => Ok(input),
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                Err(unparseable(
                    what,
                    input,
                    format!("the epoch {e:?} is not a number"),
                ))
            } else if rest.contains(':') {
                Err(unparseable(what, input, "it has more than one ':'"))
            } else {
                Ok(rest)
            }
        }
    }
}

/// `0.16.0~rc1` -> `0.16.0-rc1`; at most one `~`, and not together with a `-` pre-release.
fn tilde_to_prerelease(
    what: &'static str,
    input: &str,
    upstream: &str,
) -> Result<String, VersionError> {
    match upstream.split_once('~') {
        None => Ok(upstream.to_string()),
        Some((core, pre)) => {
            if pre.contains('~') {
                return Err(unparseable(what, input, "it has more than one '~'"));
            }
            if core.contains('-') || core.contains('+') {
                return Err(unparseable(
                    what,
                    input,
                    "a '~' pre-release follows another suffix",
                ));
            }
            if pre.is_empty() {
                return Err(unparseable(
                    what,
                    input,
                    "the pre-release after '~' is empty",
                ));
            }
            Ok(format!("{core}-{pre}"))
        }
    }
}

impl Version {
    /// What `stalwart --version` prints: the bare version (maybe prefixed by a program name, maybe
    /// `v0.15.5`). Build metadata is dropped; anything but MAJOR.MINOR.PATCH[-PRE] is refused.
    pub fn parse_binary_output(s: &str) -> Result<Version, VersionError> {
        // One or two words: the version, maybe after the program name. With more (a banner, a
        // warning, "built with rustc 1.80.0") the last word may be another program's version.
        let words: Vec<&str> = s.split_whitespace().collect();
        let t = match words.as_slice() {
            [] => "",
            [v] | [_, v] => v,
            _ => {
                return Err(unparseable(
                    BINARY,
                    s,
                    "expected the version, maybe after the program name, and nothing else",
                ))
            }
        };
        let t = t.strip_prefix('v').unwrap_or(t);
        strict_semver(BINARY, s, t)
    }

    /// A dpkg version (`0.15.5-1`, `1:0.15.5-1`, `0.16.0~rc1-1`, `0.15.5-1ubuntu1`,
    /// `0.15.5-1+deb12u1`): the epoch and the Debian revision are dropped.
    pub fn parse_dpkg(s: &str) -> Result<Version, VersionError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(unparseable(DPKG, s, "it is empty"));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(unparseable(DPKG, s, "it contains whitespace"));
        }
        let rest = strip_epoch(DPKG, t)?;
        let upstream = match rest.rsplit_once('-') {
            None => rest, // a native package: no revision
            Some((_, "")) => return Err(unparseable(DPKG, s, "the revision after '-' is empty")),
            Some((u, _revision)) => u,
        };
        let upstream = tilde_to_prerelease(DPKG, s, upstream)?;
        strict_semver(DPKG, s, &upstream)
    }

    /// An rpm EVR (`0.15.5-1.fc40`, `1:0.15.5-1.el9`, `0.15.5~rc1-1`): epoch and release dropped.
    pub fn parse_rpm(s: &str) -> Result<Version, VersionError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(unparseable(RPM, s, "it is empty"));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(unparseable(RPM, s, "it contains whitespace"));
        }
        let rest = strip_epoch(RPM, t)?;
        // rpm forbids '-' in version and release: at most one, separating them.
        let version = match rest.split_once('-') {
            None => rest,
            Some((_, r)) if r.is_empty() || r.contains('-') => {
                return Err(unparseable(
                    RPM,
                    s,
                    "expected VERSION-RELEASE with one '-' and a non-empty release",
                ))
            }
            Some((v, _release)) => v,
        };
        if version.contains('^') {
            return Err(unparseable(
                RPM,
                s,
                "'^' (a snapshot after a release) has no semver equivalent",
            ));
        }
        let version = tilde_to_prerelease(RPM, s, version)?;
        strict_semver(RPM, s, &version)
    }

    /// The release line (what a hold pins to, what `allow` approves): "0.15" for 0.15.x, "1.1"
    /// for 1.1.x. A 1.x minor release is its own line too: upstream says 1.0's schema is stable
    /// but publishes no rule for 1.x -> 1.y upgrades, so one may still migrate the store in
    /// place at start (facts: stalwart-1x.md) and needs the admin's approval.
    pub fn line(&self) -> String {
        format!("{}.{}", self.0.major, self.0.minor)
    }

    fn line_key(&self) -> (u64, u64) {
        (self.0.major, self.0.minor)
    }

    /// True when `self` and `other` are on the same release line.
    pub fn same_line(&self, other: &Version) -> bool {
        self.line_key() == other.line_key()
    }
}

/// A release line as an admin types it: `0.16`, `0.16.2`, `v0.16.2`, `0.16.0-rc1` -> `"0.16"`;
/// `1.2`, `1.2.3` -> `"1.2"`. Refuses anything else (`latest`, `0`, `1`, `0.x`, `""`).
pub fn parse_line(s: &str) -> Result<String, VersionError> {
    let t = s.trim();
    let t = t.strip_prefix('v').unwrap_or(t);
    if t.is_empty() {
        return Err(unparseable(LINE, s, "it is empty; give e.g. 0.16"));
    }
    // Complete versions (with a pre-release) go through the strict parser.
    if let Ok(v) = strict_semver(LINE, s, t) {
        return Ok(v.line());
    }
    let parts: Vec<&str> = t.split('.').collect();
    let nums: Result<Vec<u64>, _> = parts
        .iter()
        .map(|p| {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                Err(())
            } else {
                p.parse::<u64>().map_err(|_| ())
            }
        })
        .collect();
    let nums = nums.map_err(|()| {
        unparseable(
            LINE,
            s,
            "expected a line like 0.16 or a version like 0.16.2",
        )
    })?;
    if nums.iter().any(|n| *n > MAX_COMPONENT) {
        return Err(unparseable(LINE, s, "a number is implausibly large"));
    }
    match nums.as_slice() {
        [major, minor] => Ok(format!("{major}.{minor}")),
        [0] => Err(unparseable(
            LINE,
            s,
            "\"0\" is not a line; 0.x lines are named 0.MINOR, e.g. 0.16",
        )),
        [_] => Err(unparseable(
            LINE,
            s,
            "lines are named MAJOR.MINOR, e.g. 1.1 (a minor release may migrate the store)",
        )),
        _ => Err(unparseable(
            LINE,
            s,
            "expected a line like 0.16 or a version like 0.16.2",
        )),
    }
}

/// The database schema number upstream stores for a release (facts: 0.12.0-0.12.4 = 1,
/// 0.12.5 = 2, 0.13 = 3, 0.14 = 4, 0.15 = 5, 0.16 = 6); `None` when we don't know it.
pub fn schema_for(v: &Version) -> Option<u32> {
    let s = &v.0;
    if s.major != 0 {
        return None;
    }
    match s.minor {
        12 if s.patch < 5 => Some(1),
        12 => Some(2),
        13 => Some(3),
        14 => Some(4),
        15 => Some(5),
        16 => Some(6),
        _ => None,
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl TryFrom<String> for Version {
    type Error = VersionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Version::parse_binary_output(&s)
    }
}
impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}
impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse_binary_output(s)
    }
}

impl Class {
    /// Minor and major releases bump the schema number (facts: 0.13=3, 0.14=4, 0.15=5, 0.16=6);
    /// the old binary panics on a newer schema, so only these need the data snapshot back.
    pub fn schema_may_move(self) -> bool {
        matches!(self, Class::Minor | Class::Major)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Same => "same",
            Class::Patch => "patch",
            Class::Minor => "minor",
            Class::Major => "major",
            Class::Downgrade => "downgrade",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stalwart is 0.x: a change of the 0.x number is a minor release, of the third number a patch.
pub fn classify(from: &Version, to: &Version) -> Class {
    let (a, b) = (&from.0, &to.0);
    if b < a {
        Class::Downgrade
    } else if a == b {
        Class::Same
    } else if a.major != b.major {
        Class::Major
    } else if a.minor != b.minor {
        Class::Minor
    } else {
        Class::Patch
    }
}

/// Runs `BINARY --version` (upstream prints the bare version and exits 0), bounded in time.
pub fn of_binary(path: &Path) -> Result<Version, CheckError> {
    let prog = Program::open(path).map_err(|e| CheckError {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    of_program(&prog)
}

/// `--version` of an opened binary, executed through its descriptor (what runs is what was
/// opened), never as root: as whoever could change that file, else as nobody. A version check
/// needs no privilege, and the file may be one the service user handed us.
pub fn of_program(prog: &Program) -> Result<Version, CheckError> {
    let path = prog.path();
    let fail = |message: String| CheckError {
        path: path.to_owned(),
        message,
    };
    let run_as = if rustix::process::geteuid().is_root() {
        Some(prog.controller().unwrap_or((crate::NOBODY, crate::NOBODY)))
    } else {
        None
    };
    let mut child = prog
        .command(run_as)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(_) => break,
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail("did not exit within 20 s".into()));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            crate::os::child::printable(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Version::parse_binary_output(text.trim())
        .map_err(|e| fail(crate::os::child::printable(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version(semver::Version::parse(s).unwrap())
    }

    #[test]
    fn dpkg_real_world_strings() {
        let ok = [
            ("0.15.5-1", "0.15.5"),
            ("1:0.15.5-1", "0.15.5"),
            ("0.15.5", "0.15.5"), // native package
            ("0.16.0~rc1-1", "0.16.0-rc1"),
            ("0.16.0~rc.2-1", "0.16.0-rc.2"),
            ("0.15.5-1ubuntu1", "0.15.5"),
            ("0.15.5-1+deb12u1", "0.15.5"),
            ("0.15.5-0ubuntu0.22.04.1", "0.15.5"),
            ("0.15.5+dfsg-2", "0.15.5"),
            ("2:0.13.4-3~bpo12+1", "0.13.4"),
            ("0.16.0-rc1-1", "0.16.0-rc1"),
            ("  0.15.5-1\n", "0.15.5"),
        ];
        for (input, want) in ok {
            assert_eq!(Version::parse_dpkg(input), Ok(v(want)), "{input}");
        }
        let bad = [
            "",
            "latest",
            "0.15",
            "0.15-1",
            "0.15.5.1-1",
            "garbage",
            "a:0.15.5-1",
            ":0.15.5-1",
            "0.15.5-",
            "0.15.05-1",
            "99999999999999999999.0.0-1",
            "0.1000000.0-1",
            "0.16.0~-1",
            "0.16.0~rc1~2-1",
            "1:2:0.15.5-1",
            "0.15.5 -1",
            "v0.15.5-1",
        ];
        for input in bad {
            let e = Version::parse_dpkg(input).unwrap_err();
            assert!(e.to_string().contains("refusing to guess"), "{input}: {e}");
        }
    }

    #[test]
    fn rpm_real_world_strings() {
        let ok = [
            ("0.15.5-1.fc40", "0.15.5"),
            ("0.15.5-1.el9", "0.15.5"),
            ("1:0.15.5-1.el9", "0.15.5"),
            ("0.15.5~rc1-1", "0.15.5-rc1"),
            ("0.16.0~rc1-0.1.fc41", "0.16.0-rc1"),
            ("0.15.5", "0.15.5"),
        ];
        for (input, want) in ok {
            assert_eq!(Version::parse_rpm(input), Ok(v(want)), "{input}");
        }
        for input in [
            "",
            "0.15-1.fc40",
            "0.15.5.1-1",
            "0.15.5^20240101git-1",
            "0.15.5-1-2",
            "latest",
            "0.15.5-",
            "x:0.15.5-1",
        ] {
            assert!(Version::parse_rpm(input).is_err(), "{input}");
        }
    }

    #[test]
    fn binary_output() {
        for (input, want) in [
            ("0.15.5", "0.15.5"),
            ("stalwart 0.15.5\n", "0.15.5"),
            ("v0.15.5", "0.15.5"),
            ("stalwart-mail v0.16.0-rc1", "0.16.0-rc1"),
            ("0.15.5+build.7", "0.15.5"),
        ] {
            assert_eq!(Version::parse_binary_output(input), Ok(v(want)), "{input}");
        }
        for input in [
            "",
            "stalwart",
            "0.15",
            "latest",
            "0.15.5.1",
            "18446744073709551616.0.0",
            "stalwart 0.15.5 rustc 1.80.0",
            "warning: x\nstalwart 0.15.5",
        ] {
            let e = Version::parse_binary_output(input).unwrap_err();
            assert!(e.to_string().contains("--version"), "{e}");
        }
    }

    #[test]
    fn tilde_sorts_before_release_like_dpkg() {
        let rc = Version::parse_dpkg("0.16.0~rc1-1").unwrap();
        let rel = Version::parse_dpkg("0.16.0-1").unwrap();
        assert!(rc < rel);
        assert!(Version::parse_dpkg("0.15.9-1").unwrap() < rc);
    }

    #[test]
    fn classify_cases() {
        let c = |a: &str, b: &str| classify(&v(a), &v(b));
        assert_eq!(c("0.15.5", "0.15.5"), Class::Same);
        assert_eq!(c("0.15.5", "0.15.6"), Class::Patch);
        assert_eq!(c("0.15.5", "0.16.0"), Class::Minor);
        assert_eq!(c("0.15.5", "0.16.0-rc1"), Class::Minor);
        assert_eq!(c("0.14.1", "0.16.2"), Class::Minor);
        assert_eq!(c("0.16.3", "1.0.0"), Class::Major);
        assert_eq!(c("0.16.0", "0.15.5"), Class::Downgrade);
        assert_eq!(c("0.16.0", "0.16.0-rc1"), Class::Downgrade);
        assert!(Class::Minor.schema_may_move() && !Class::Patch.schema_may_move());
    }

    #[test]
    fn lines() {
        assert_eq!(v("0.15.5").line(), "0.15");
        assert_eq!(v("1.2.3").line(), "1.2");
        for (input, want) in [
            ("0.16", "0.16"),
            ("0.16.2", "0.16"),
            ("v0.16.2", "0.16"),
            ("0.16.0-rc1", "0.16"),
            ("1.0", "1.0"),
            ("1.2", "1.2"),
            ("2.0.1", "2.0"),
            ("1.0.0-pre.1", "1.0"),
        ] {
            assert_eq!(parse_line(input).as_deref(), Ok(want), "{input}");
        }
        for input in [
            "",
            "0",
            "1",
            "latest",
            "0.x",
            "0.16.",
            "0.016",
            "0.16.2.1",
            "0.99999999",
        ] {
            assert!(parse_line(input).is_err(), "{input}");
        }
    }

    #[test]
    fn schema_numbers() {
        let s = |x: &str| schema_for(&v(x));
        assert_eq!(s("0.12.0"), Some(1));
        assert_eq!(s("0.12.4"), Some(1));
        assert_eq!(s("0.12.5"), Some(2));
        assert_eq!(s("0.13.2"), Some(3));
        assert_eq!(s("0.14.0"), Some(4));
        assert_eq!(s("0.15.5"), Some(5));
        assert_eq!(s("0.16.0"), Some(6));
        assert_eq!(s("0.11.8"), None);
        assert_eq!(s("1.0.0"), None);
    }

    #[test]
    fn serde_roundtrip_as_string() {
        let x = v("0.16.0-rc1");
        let j = serde_json::to_string(&x).unwrap();
        assert_eq!(j, "\"0.16.0-rc1\"");
        assert_eq!(serde_json::from_str::<Version>(&j).unwrap(), x);
        assert!(serde_json::from_str::<Version>("\"0.15\"").is_err());
    }
}
