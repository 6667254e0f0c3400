//! Versions of the server as the binary (`--version`), dpkg and rpm spell them, and the semver class
//! of a change. OWNER: policy helper. Interface used by the engine — keep these signatures.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VersionError {
    #[error("cannot read a server version from {what} {input:?}: {reason}; refusing to guess")]
    Unparseable {
        what: &'static str,
        input: String,
        reason: String,
    },
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

impl Version {
    /// What `stalwart --version` prints: the bare version (maybe prefixed by a program name).
    pub fn parse_binary_output(s: &str) -> Result<Version, VersionError> {
        let t = s.split_whitespace().last().unwrap_or("");
        let t = t.strip_prefix('v').unwrap_or(t);
        semver::Version::parse(t)
            .map(Version)
            .map_err(|e| VersionError::Unparseable {
                what: "the output of `stalwart --version`",
                input: s.trim().to_string(),
                reason: e.to_string(),
            })
    }
    /// "0.15" for 0.15.x; "1" for 1.x (the line a hold pins to).
    pub fn line(&self) -> String {
        if self.0.major == 0 {
            format!("0.{}", self.0.minor)
        } else {
            format!("{}", self.0.major)
        }
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
