//! Semver policy: which upgrades run unattended, approvals, and holds written into apt/dnf's own
//! state: `mod.rs` decides (classify, approvals, the run override), `state` keeps policy.json,
//! `holds` writes the package managers' hold files.
//!
//! Upstream's advice: patch releases are safe to take; a minor release (0.x -> 0.y) may need config
//! changes and a migration and its UPGRADING document must be read first; a major release needs
//! planning. So by default (`[policy] unattended = ["patch"]`) only patch releases run without an
//! admin; a minor/major release needs `stalwart-upgrade allow LINE` first.
//!
//! # Environment override
//! `STALWART_UPGRADE_ALLOW` allows one run without recording anything: a line (`0.16`, or a
//! version `0.16.2` meaning its line) or a class (`patch`, `minor`, `major`); several values may
//! be separated by commas, e.g. `STALWART_UPGRADE_ALLOW=0.16 stalwart-upgrade upgrade --to ...`.
//! An unreadable value is an error, never ignored. It cannot override a refusal (downgrade, or a
//! jump that upstream's migration refuses).
//!
//! # State
//! STATE_DIR/policy.json (root, 0600, written atomically with fsync): approvals, the held line and
//! whether holds are on. Holds are the package managers' own files, under a filesystem root
//! ([`HoldPaths`]; `/` on a real system):
//! - apt: /etc/apt/preferences.d/stalwart-upgrade (the whole file is ours),
//! - dnf 4 (dnf-plugins-core versionlock): our marked block in /etc/dnf/plugins/versionlock.list,
//! - dnf 5: our marked `[[packages]]` entry in /etc/dnf/versionlock.toml.
//!
//! apt files are written when ROOT/etc/apt exists, dnf files when ROOT/etc/dnf exists.
//! The dnf 4 list only takes effect with dnf-plugins-core's versionlock plugin installed and enabled
//! (`python3-dnf-plugin-versionlock`; /etc/dnf/plugins/versionlock.conf `enabled = 1`); dnf 5 reads
//! versionlock.toml itself. Known gap: `dnf versionlock add` (dnf 5) rewrites versionlock.toml
//! without comments; our entry is still found by its `comment` and replaced, but the admin's
//! comments in that file are lost by dnf itself, not by us.

use crate::config::Settings;
use crate::server::version::{classify, parse_line, Class, Version, VersionError};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

mod holds;
mod state;
pub use holds::*;
pub use state::*;

pub use crate::server::version::schema_for;

/// The environment variable of a one-off override (see the module docs).
pub const ENV_ALLOW: &str = "STALWART_UPGRADE_ALLOW";
/// The package whose versions the holds constrain.
pub const PACKAGE: &str = "stalwart";
const STATE_FILE: &str = "policy.json";
const MARK_BEGIN: &str = "# BEGIN stalwart-upgrade hold";
const MARK_END: &str = "# END stalwart-upgrade hold";
const TOML_COMMENT_PREFIX: &str = "stalwart-upgrade hold";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy: {0}")]
    Other(String),
    #[error("{0}")]
    Version(#[from] VersionError),
    #[error("{ENV_ALLOW}={value:?} is not understood: {reason}\n  use a line (0.16), a version (0.16.2) or a class (patch, minor, major), comma-separated")]
    BadOverride { value: String, reason: String },
    #[error("cannot read the policy state {path}: {message}\n  fix or remove the file, then run `stalwart-upgrade policy` to check (approvals in it are lost when removed)")]
    StateCorrupt { path: PathBuf, message: String },
    #[error("cannot {action} {path}: {source}\n  check the permissions (run as root) and run the command again")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("holds are disabled in the helper config (`[policy] manage_holds = false`): nothing written\n  set `manage_holds = true` in /etc/stalwart-upgrade/config.toml, then run `stalwart-upgrade hold` again")]
    HoldsNotManaged,
    #[error("no release line to hold: none given and none recorded\n  run `stalwart-upgrade hold 0.15` naming the running server's line")]
    NoLine,
    #[error(transparent)]
    State(#[from] crate::store::state::StateError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PolicyError {
    let path = path.to_owned();
    move |source| PolicyError::Io {
        action,
        path,
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    /// Minor/major without an approval: the message names `stalwart-upgrade allow LINE` and the
    /// UPGRADING document to read first.
    NeedsApproval {
        line: String,
        message: String,
    },
    /// Downgrades and the like: go through `stalwart-upgrade rollback`.
    Refused {
        message: String,
    },
}

/// One value of `STALWART_UPGRADE_ALLOW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    Line(String),
    Class(Class),
}

/// Parses `STALWART_UPGRADE_ALLOW` (`0.16`, `0.16.2`, `minor`, `patch,0.16`); empty means none.
pub fn parse_override(value: &str) -> Result<Vec<Override>, PolicyError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let o = match item.to_ascii_lowercase().as_str() {
            "patch" => Override::Class(Class::Patch),
            "minor" => Override::Class(Class::Minor),
            "major" => Override::Class(Class::Major),
            _ => Override::Line(parse_line(item).map_err(|e| PolicyError::BadOverride {
                value: value.to_string(),
                reason: e.to_string(),
            })?),
        };
        out.push(o);
    }
    Ok(out)
}

fn run_override(allow: Option<&str>) -> Result<Vec<Override>, PolicyError> {
    allow.map(parse_override).unwrap_or(Ok(Vec::new()))
}

/// What to read before an upgrade to `to`: the UPGRADING document upstream ships for a 0.x line
/// (`UPGRADING/v0_16.md` for 0.16); inside 1.x upstream publishes no such page (facts:
/// stalwart-1x.md), so the release's notes.
pub fn upgrading_doc(to: &Version) -> String {
    if to.0.major == 0 {
        format!(
            "https://github.com/stalwartlabs/stalwart/blob/main/UPGRADING/v0_{}.md",
            to.0.minor
        )
    } else {
        format!("the release notes of {to} (https://github.com/stalwartlabs/stalwart/releases/tag/v{to})")
    }
}

/// The minimum 0.16 patch release upstream's stalwart-migrate copies from.
pub const MIGRATE_FROM: &str = "0.16.27";

/// Why `from` -> `to` (0.x -> 1.x) is never done in place, and the way that is.
fn cross_to_1x_refusal(from: &Version, to: &Version) -> String {
    let first = if from.0.minor < 16 {
        format!(
            "this server runs {from}: cross to 0.16 first (`stalwart-upgrade allow 0.16`, then install the latest 0.16 package), then upgrade to {MIGRATE_FROM}"
        )
    } else if from.0.minor == 16 && from.0.patch < 27 {
        format!(
            "this server runs {from}: upgrade it to {MIGRATE_FROM} first (a 0.16 patch release: install the stalwart {MIGRATE_FROM} package)"
        )
    } else {
        format!("this server runs {from}, which the tool copies from")
    };
    format!(
        "{from} -> {to}: there is no upgrade path in place from 0.x to {major}.x. {major}.x cannot open a 0.x data store, and a {major}.x binary started on one changes it so that {from} cannot open it either. Upstream's way is a copy into a new, empty store with `stalwart-migrate` while {from} keeps serving, then a short stop for its final run (https://stalw.art/docs/migration/upgrade-0-16/); the source must run {MIGRATE_FROM}: {first}. Nothing was changed: {from} keeps running. Keep the package on the {line} line meanwhile (`stalwart-upgrade hold {line}`)",
        major = to.0.major,
        line = from.line()
    )
}

/// Everything [`decide`] looks at; no I/O, so every case is a unit test.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    pub unattended_classes: &'a [String],
    /// Lines with a recorded approval.
    pub approved_lines: &'a [String],
    pub overrides: &'a [Override],
    pub from: &'a Version,
    pub to: &'a Version,
    pub class: Class,
    pub unattended: bool,
}

/// The policy as a pure function (see [`verdict`]).
pub fn decide(d: &Decision<'_>) -> Verdict {
    let (from, to, class) = (d.from, d.to, d.class);
    let line = to.line();
    match class {
        Class::Downgrade => {
            return Verdict::Refused {
                message: format!(
                    "{from} -> {to} is a downgrade: downgrades go through `stalwart-upgrade rollback --to {to}` \
                     (it restores the data snapshot taken before the upgrade), never through the package manager"
                ),
            }
        }
        Class::Same => return Verdict::Allowed, // a reinstall
        Class::Patch | Class::Minor | Class::Major => {}
    }
    // 1.x cannot open a 0.x store, and a 1.x binary started on a 0.16 store changes it before it
    // gives up (measured: four new RocksDB column families, exit 101; 0.16 no longer opens it).
    // Upstream's path is a copy into a new store with stalwart-migrate, from 0.16.27 only
    // (facts: stalwart-1x.md). Told apart by the binary's version, never by a schema number.
    if to.0.major >= 1 && from.0.major == 0 {
        return Verdict::Refused {
            message: cross_to_1x_refusal(from, to),
        };
    }
    // Upstream 0.16 refuses a database of schema 0-4 (anything before 0.15): it must pass 0.15's
    // migration first. Later lines can only be stricter.
    let from_before_015 = from.0.major == 0 && from.0.minor < 15;
    let to_016_or_later = to.0.major > 0 || to.0.minor >= 16;
    if from_before_015 && to_016_or_later {
        let schema = schema_for(from)
            .map(|s| format!("schema {s}"))
            .unwrap_or_else(|| "an older schema".into());
        return Verdict::Refused {
            message: format!(
                "{from} -> {to}: the server's data is at {schema} and 0.16 refuses schema 0-4; \
                 upgrade to 0.15 first (`stalwart-upgrade allow 0.15`, install the latest 0.15.x, \
                 then `stalwart-upgrade allow {line}`); upstream users report corruption with \
                 multi-version jumps"
            ),
        };
    }
    let class_ok = d
        .unattended_classes
        .iter()
        .any(|c| c.eq_ignore_ascii_case(class.as_str()));
    let approved = d.approved_lines.contains(&line);
    let overridden = d.overrides.iter().any(|o| match o {
        Override::Line(l) => *l == line,
        Override::Class(c) => *c == class,
    });
    if class_ok || approved || overridden {
        return Verdict::Allowed;
    }
    let mut message = match class {
        Class::Patch => format!(
            "{from} -> {to} is a patch release, but \"patch\" is not in `[policy] unattended`; \
             approve it with `stalwart-upgrade allow {line}`"
        ),
        _ => format!(
            "{from} -> {to} is a {class} release and needs an admin's approval. Read {} first \
             (config changes and migrations), then run `stalwart-upgrade allow {line}`",
            upgrading_doc(to)
        ),
    };
    if class.schema_may_move() {
        match (schema_for(from), schema_for(to)) {
            (Some(a), Some(b)) if a != b => message.push_str(&format!(
                ". The database schema moves from {a} to {b}: the old binary cannot read it \
                 afterwards, so a rollback restores the data snapshot"
            )),
            (_, None) => message.push_str(&format!(
                ". The database schema of {to} is unknown to this helper; expect a migration"
            )),
            _ => {}
        }
    }
    if from.0.major == 0 && to.0.major == 0 && from.0.minor == 15 && to.0.minor == 16 {
        message.push_str(
            ". 0.15 -> 0.16: upstream's migration runs only in recovery mode and wipes the \
             settings stored in the database; export them first and follow the document step by step",
        );
    }
    let lines_crossed = if from.0.major == to.0.major {
        to.0.minor.saturating_sub(from.0.minor)
    } else {
        2
    };
    if class == Class::Minor && lines_crossed > 1 {
        message.push_str(&format!(
            ". This jumps {lines_crossed} release lines: upstream users report corruption with \
             multi-version jumps; prefer upgrading one line at a time"
        ));
    }
    if !d.unattended {
        message.push_str(&format!(
            ". For this one run only: {ENV_ALLOW}={line} stalwart-upgrade ..."
        ));
    }
    Verdict::NeedsApproval { line, message }
}

/// Decides whether an upgrade from -> to may run. `unattended` is true under package hooks.
///
/// Same -> Allowed (a reinstall); Downgrade -> Refused (use `stalwart-upgrade rollback`); a jump
/// from before 0.15 to 0.16 or later -> Refused (upgrade to 0.15 first); otherwise Allowed when the
/// class is in `[policy] unattended`, an approval for the target line is recorded
/// (`stalwart-upgrade allow LINE`) or `STALWART_UPGRADE_ALLOW` names the line or the class for
/// this run; else NeedsApproval naming the command and the UPGRADING document.
pub fn verdict(
    settings: &Settings,
    from: &Version,
    to: &Version,
    class: Class,
    unattended: bool,
    allow: Option<&str>,
) -> Result<Verdict, PolicyError> {
    let overrides = run_override(allow)?;
    let stored = load(settings)?;
    let approved: Vec<String> = stored.approvals.iter().map(|a| a.line.clone()).collect();
    Ok(decide(&Decision {
        unattended_classes: &settings.policy.unattended,
        approved_lines: &approved,
        overrides: &overrides,
        from,
        to,
        class,
        unattended,
    }))
}

/// May `to` replace `from`? The one check both gates ask (the package hooks' before any file
/// is unpacked, the upgrade's plan): the failure marker first (a release that failed is not
/// tried again unless `retry`), then the policy's [`verdict`].
pub fn admit(
    settings: &Settings,
    state: &crate::store::state::StateDir,
    from: &Version,
    to: &Version,
    retry: bool,
    ctx: (bool, Option<&str>),
) -> Result<Admission, PolicyError> {
    if let Some(f) = state.failed()? {
        if &f.version == to && !retry {
            return Ok(Admission::PreviouslyFailed(f));
        }
    }
    if from == to {
        // A reinstall: nothing to decide (and a policy file that cannot be read does not stop it).
        return Ok(Admission::Decided(Verdict::Allowed));
    }
    let (unattended, allow) = ctx;
    let v = verdict(settings, from, to, classify(from, to), unattended, allow)?;
    Ok(Admission::Decided(v))
}

/// What [`admit`] says.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// `to` failed before (the failure marker names it) and no retry was asked for.
    PreviouslyFailed(crate::store::state::FailedUpgrade),
    /// The policy decided.
    Decided(Verdict),
}

// ---------------------------------------------------------------------------------------------
// What the CLI calls

/// What `stalwart-upgrade policy` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyState {
    /// Classes that run without an approval (`[policy] unattended`).
    pub unattended: Vec<String>,
    /// `[policy] manage_holds`.
    pub manage_holds: bool,
    /// False after `stalwart-upgrade unhold`.
    pub holds_enabled: bool,
    /// The line apt/dnf are held on.
    pub hold_line: Option<String>,
    pub approvals: Vec<Approval>,
    /// STATE_DIR/policy.json.
    pub state_file: PathBuf,
    pub files: Vec<HoldFile>,
    /// `STALWART_UPGRADE_ALLOW`, when set.
    pub env_override: Option<String>,
}

impl fmt::Display for PolicyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "unattended upgrades: {}",
            join_or(&self.unattended, "none")
        )?;
        let approvals: Vec<String> = self.approvals.iter().map(|a| a.line.clone()).collect();
        writeln!(
            f,
            "approved lines:      {}",
            join_or(
                &approvals,
                "none (approve one with `stalwart-upgrade allow 0.16`)"
            )
        )?;
        let hold = match (&self.hold_line, self.holds_enabled, self.manage_holds) {
            (_, _, false) => "not managed (`[policy] manage_holds = false`)".to_string(),
            (_, false, _) => "off (`stalwart-upgrade hold` turns it on)".to_string(),
            (Some(l), true, true) => format!("{l} (apt and dnf only select {l}.x)"),
            (None, true, true) => "none yet (`stalwart-upgrade hold`)".to_string(),
        };
        writeln!(f, "hold:                {hold}")?;
        writeln!(f, "state file:          {}", self.state_file.display())?;
        for h in &self.files {
            let s = match (h.present, h.ours_present) {
                (false, _) => "absent",
                (true, true) => "present, holds",
                (true, false) => "present, no hold of ours",
            };
            writeln!(
                f,
                "{:<20} {} ({s})",
                format!("{}:", h.manager),
                h.path.display()
            )?;
        }
        if let Some(v) = &self.env_override {
            writeln!(f, "{ENV_ALLOW}={v} (this run only)")?;
        }
        Ok(())
    }
}

fn join_or(v: &[String], empty: &str) -> String {
    if v.is_empty() {
        empty.to_string()
    } else {
        v.join(", ")
    }
}

/// The policy as `stalwart-upgrade policy` shows it (hold files on the real system).
pub fn state(settings: &Settings, allow: Option<&str>) -> Result<PolicyState, PolicyError> {
    let mut st = state_at(settings, &HoldPaths::system())?;
    st.env_override = allow.map(String::from);
    Ok(st)
}

pub fn state_at(settings: &Settings, paths: &HoldPaths) -> Result<PolicyState, PolicyError> {
    let p = load(settings)?;
    Ok(PolicyState {
        unattended: settings.policy.unattended.clone(),
        manage_holds: settings.policy.manage_holds,
        holds_enabled: p.holds_enabled,
        hold_line: p.hold_line,
        approvals: p.approvals,
        state_file: state_path(settings),
        files: hold_files(paths)?,
        env_override: None,
    })
}

/// Installs the hold on `line` (the running server's line, given by the caller), or on the
/// recorded line when `None`. Turns holds back on after `unhold`.
pub fn hold(settings: &Settings, line: Option<&str>) -> Result<PolicyState, PolicyError> {
    hold_at(settings, &HoldPaths::system(), line)
}

pub fn hold_at(
    settings: &Settings,
    paths: &HoldPaths,
    line: Option<&str>,
) -> Result<PolicyState, PolicyError> {
    if !settings.policy.manage_holds {
        return Err(PolicyError::HoldsNotManaged);
    }
    let mut p = load(settings)?;
    let line = match line {
        Some(l) => parse_line(l)?,
        None => p.hold_line.clone().ok_or(PolicyError::NoLine)?,
    };
    write_holds(paths, &line)?;
    p.holds_enabled = true;
    p.hold_line = Some(line);
    save(settings, &p)?;
    state_at(settings, paths)
}

/// Removes the hold files and records that holds are off (until the next `hold`).
pub fn unhold(settings: &Settings) -> Result<PolicyState, PolicyError> {
    unhold_at(settings, &HoldPaths::system())
}

pub fn unhold_at(settings: &Settings, paths: &HoldPaths) -> Result<PolicyState, PolicyError> {
    let mut p = load(settings)?;
    remove_holds(paths)?;
    p.holds_enabled = false;
    p.hold_line = None;
    save(settings, &p)?;
    state_at(settings, paths)
}

/// Records an approval for VERSION's line (`0.16` or `0.16.2` -> 0.16) and moves the hold there,
/// so the package manager may now select that line.
pub fn allow(settings: &Settings, version: &str) -> Result<PolicyState, PolicyError> {
    allow_at(settings, &HoldPaths::system(), version)
}

pub fn allow_at(
    settings: &Settings,
    paths: &HoldPaths,
    version: &str,
) -> Result<PolicyState, PolicyError> {
    let line = parse_line(version)?;
    let mut p = load(settings)?;
    if !p.approvals.iter().any(|a| a.line == line) {
        p.approvals.push(Approval {
            line: line.clone(),
            approved_at: crate::os::clock::now_secs(),
        });
    }
    if settings.policy.manage_holds && p.holds_enabled {
        write_holds(paths, &line)?;
        p.hold_line = Some(line);
    }
    save(settings, &p)?;
    state_at(settings, paths)
}

/// After a committed upgrade to `new`: consumes the approval of its line and moves the hold to it
/// (installs it on first use when holds are managed and not turned off).
pub fn after_upgrade(settings: &Settings, new: &Version) -> Result<PolicyState, PolicyError> {
    after_upgrade_at(settings, &HoldPaths::system(), new)
}

pub fn after_upgrade_at(
    settings: &Settings,
    paths: &HoldPaths,
    new: &Version,
) -> Result<PolicyState, PolicyError> {
    let line = new.line();
    let mut p = load(settings)?;
    p.approvals.retain(|a| a.line != line);
    if settings.policy.manage_holds && p.holds_enabled {
        write_holds(paths, &line)?;
        p.hold_line = Some(line);
    }
    save(settings, &p)?;
    state_at(settings, paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version(semver::Version::parse(s).unwrap())
    }

    fn decide_with(
        classes: &[&str],
        approved: &[&str],
        overrides: &[Override],
        from: &str,
        to: &str,
        unattended: bool,
    ) -> Verdict {
        let classes: Vec<String> = classes.iter().map(|s| s.to_string()).collect();
        let approved: Vec<String> = approved.iter().map(|s| s.to_string()).collect();
        let (from, to) = (v(from), v(to));
        decide(&Decision {
            unattended_classes: &classes,
            approved_lines: &approved,
            overrides,
            from: &from,
            to: &to,
            class: classify(&from, &to),
            unattended,
        })
    }

    fn message(v: Verdict) -> String {
        match v {
            Verdict::NeedsApproval { message, .. } | Verdict::Refused { message } => message,
            Verdict::Allowed => panic!("allowed"),
        }
    }

    #[test]
    fn same_and_patch() {
        assert_eq!(
            decide_with(&["patch"], &[], &[], "0.15.5", "0.15.5", true),
            Verdict::Allowed
        );
        assert_eq!(
            decide_with(&[], &[], &[], "0.15.5", "0.15.5", true),
            Verdict::Allowed
        );
        assert_eq!(
            decide_with(&["patch"], &[], &[], "0.15.5", "0.15.6", true),
            Verdict::Allowed
        );
        let v = decide_with(&[], &[], &[], "0.15.5", "0.15.6", true);
        assert!(
            matches!(&v, Verdict::NeedsApproval { line, .. } if line == "0.15"),
            "{v:?}"
        );
        assert!(message(v).contains("stalwart-upgrade allow 0.15"));
        assert_eq!(
            decide_with(&[], &["0.15"], &[], "0.15.5", "0.15.6", true),
            Verdict::Allowed
        );
    }

    #[test]
    fn downgrade_is_refused_naming_rollback() {
        let m = message(decide_with(
            &["patch", "minor", "major"],
            &["0.15"],
            &[Override::Class(Class::Minor)],
            "0.16.0",
            "0.15.5",
            true,
        ));
        assert!(m.contains("stalwart-upgrade rollback"), "{m}");
    }

    #[test]
    fn minor_needs_approval_with_doc_schema_and_recovery_note() {
        let v = decide_with(&["patch"], &[], &[], "0.15.5", "0.16.0", true);
        let Verdict::NeedsApproval { line, message } = v else {
            panic!("{v:?}")
        };
        assert_eq!(line, "0.16");
        assert!(message.contains("stalwart-upgrade allow 0.16"), "{message}");
        assert!(
            message
                .contains("https://github.com/stalwartlabs/stalwart/blob/main/UPGRADING/v0_16.md"),
            "{message}"
        );
        assert!(message.contains("schema moves from 5 to 6"), "{message}");
        assert!(
            message.contains("recovery mode") && message.contains("wipes"),
            "{message}"
        );
        // unattended runs do not suggest the env override; interactive ones do
        assert!(!message.contains(ENV_ALLOW));
        let m = message_of_interactive();
        assert!(m.contains("STALWART_UPGRADE_ALLOW=0.16"), "{m}");
    }

    fn message_of_interactive() -> String {
        message(decide_with(&["patch"], &[], &[], "0.15.5", "0.16.0", false))
    }

    #[test]
    fn minor_allowed_by_class_approval_or_override() {
        assert_eq!(
            decide_with(&["patch", "minor"], &[], &[], "0.15.5", "0.16.0", true),
            Verdict::Allowed
        );
        assert_eq!(
            decide_with(&["patch"], &["0.16"], &[], "0.15.5", "0.16.0", true),
            Verdict::Allowed
        );
        assert_eq!(
            decide_with(
                &["patch"],
                &[],
                &[Override::Line("0.16".into())],
                "0.15.5",
                "0.16.1",
                true
            ),
            Verdict::Allowed
        );
        assert_eq!(
            decide_with(
                &["patch"],
                &[],
                &[Override::Class(Class::Minor)],
                "0.15.5",
                "0.16.1",
                true
            ),
            Verdict::Allowed
        );
        // an approval of another line does not count
        assert!(matches!(
            decide_with(
                &["patch"],
                &["0.17"],
                &[Override::Line("0.17".into())],
                "0.15.5",
                "0.16.0",
                true
            ),
            Verdict::NeedsApproval { .. }
        ));
        // a minor override does not allow a major
        assert!(matches!(
            decide_with(
                &["patch"],
                &[],
                &[Override::Class(Class::Minor)],
                "1.2.0",
                "2.0.0",
                true
            ),
            Verdict::NeedsApproval { .. }
        ));
        assert_eq!(
            decide_with(&["patch"], &["2.0"], &[], "1.2.0", "2.0.0", true),
            Verdict::Allowed
        );
        // 0.x -> 1.x has no published path: refused whatever was approved.
        assert!(matches!(
            decide_with(&["patch"], &["1.0"], &[], "0.16.2", "1.0.0", true),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn jump_past_015_into_016_is_refused() {
        for from in ["0.14.1", "0.13.0", "0.12.3", "0.11.8"] {
            let v = decide_with(
                &["patch", "minor", "major"],
                &["0.16"],
                &[Override::Class(Class::Minor)],
                from,
                "0.16.0",
                true,
            );
            let Verdict::Refused { message } = v else {
                panic!("{from}: {v:?}")
            };
            assert!(message.contains("upgrade to 0.15 first"), "{message}");
            assert!(message.contains("corruption"), "{message}");
        }
        let m = message(decide_with(&["patch"], &[], &[], "0.14.1", "0.16.0", true));
        assert!(m.contains("schema 4"), "{m}");
    }

    #[test]
    fn multi_line_jump_below_016_warns() {
        let m = message(decide_with(&["patch"], &[], &[], "0.13.1", "0.15.5", true));
        assert!(m.contains("corruption") && m.contains("allow 0.15"), "{m}");
        assert!(m.contains("UPGRADING/v0_15.md"), "{m}");
        assert_eq!(
            decide_with(&["patch"], &["0.15"], &[], "0.13.1", "0.15.5", true),
            Verdict::Allowed
        );
    }

    #[test]
    fn override_parsing() {
        assert_eq!(parse_override("").unwrap(), vec![]);
        assert_eq!(
            parse_override("0.16").unwrap(),
            vec![Override::Line("0.16".into())]
        );
        assert_eq!(
            parse_override("0.16.2").unwrap(),
            vec![Override::Line("0.16".into())]
        );
        assert_eq!(
            parse_override("minor").unwrap(),
            vec![Override::Class(Class::Minor)]
        );
        assert_eq!(
            parse_override("patch, 0.16").unwrap(),
            vec![Override::Class(Class::Patch), Override::Line("0.16".into())]
        );
        for bad in ["yes", "latest", "0.x", "all"] {
            let e = parse_override(bad).unwrap_err().to_string();
            assert!(e.contains(ENV_ALLOW), "{e}");
        }
    }

    #[test]
    fn apt_prefs_contents() {
        let t = apt_prefs_text("0.15").unwrap();
        assert!(t.starts_with("# Written by stalwart-upgrade"));
        assert!(t.contains("stalwart-upgrade allow"));
        let stanzas: Vec<&str> = t.split("\n\n").skip(1).collect();
        assert_eq!(
            stanzas[0],
            "Package: stalwart\nPin: version 0.15.*\nPin-Priority: 990"
        );
        assert_eq!(
            stanzas[1],
            "Package: stalwart\nPin: version /^[0-9]+:0\\.15\\./\nPin-Priority: 990"
        );
        assert_eq!(
            stanzas[2].trim_end(),
            "Package: stalwart\nPin: version *\nPin-Priority: -1"
        );
        assert!(apt_prefs_text("latest").is_err());
        assert!(apt_prefs_text("1.1")
            .unwrap()
            .contains("Pin: version 1.1.*\n"));
        assert!(apt_prefs_text("1").is_err(), "a 1.x line names its minor");
        let e = dnf5_entry("1.0").unwrap();
        assert!(
            e.contains("value = \"1.0\"") && e.contains("value = \"1.1~\""),
            "{e}"
        );
    }

    #[test]
    fn dnf_specs() {
        assert_eq!(dnf_spec("0.15").unwrap(), "stalwart-0.15.*");
        assert_eq!(dnf_spec("0.15.5").unwrap(), "stalwart-0.15.*");
        assert!(is_our_dnf_spec("stalwart-0.15.*"));
        assert!(!is_our_dnf_spec("stalwart-0:0.15.5-1.fc40.*"));
        assert!(!is_our_dnf_spec("stalwart-utils-0.15.*"));
        let e = dnf5_entry("0.15").unwrap();
        assert!(
            e.contains("value = \"0.15\"") && e.contains("value = \"0.16~\""),
            "{e}"
        );
    }

    /// Inside 1.x (issue #28): a patch runs unattended; a minor (1.0 -> 1.1) is its own line
    /// and needs `allow 1.1`, which approves only that line.
    #[test]
    fn inside_1_x_a_minor_release_is_a_line_of_its_own() {
        assert_eq!(
            decide_with(&["patch"], &[], &[], "1.0.0-pre.1", "1.0.1-pre.1", true),
            Verdict::Allowed
        );
        let v = decide_with(&["patch"], &[], &[], "1.0.1", "1.1.0", true);
        let Verdict::NeedsApproval { line, message } = v else {
            panic!("{v:?}")
        };
        assert_eq!(line, "1.1");
        assert!(message.contains("stalwart-upgrade allow 1.1"), "{message}");
        assert!(message.contains("releases/tag/v1.1.0"), "{message}");
        assert_eq!(
            decide_with(&["patch"], &["1.1"], &[], "1.0.1", "1.1.0", true),
            Verdict::Allowed
        );
        assert!(matches!(
            decide_with(&["patch"], &["1.1"], &[], "1.1.2", "1.2.0", true),
            Verdict::NeedsApproval { .. }
        ));
    }

    #[test]
    fn a_1_x_target_is_refused_whatever_was_approved() {
        for (from, to) in [
            ("0.16.18", "1.0.0"),
            ("0.15.5", "1.2.3"),
            ("0.16.18", "1.0.0-rc1"),
        ] {
            let (f, t): (Version, Version) = (from.parse().unwrap(), to.parse().unwrap());
            let classes = vec!["patch".to_string(), "minor".into(), "major".into()];
            let approved = vec![t.line()];
            let v = decide(&Decision {
                unattended_classes: &classes,
                approved_lines: &approved,
                overrides: &[],
                from: &f,
                to: &t,
                class: classify(&f, &t),
                unattended: false,
            });
            let Verdict::Refused { message } = v else {
                panic!("{from} -> {to}: {v:?}")
            };
            assert!(message.contains("no upgrade path"), "{message}");
            assert!(message.contains("stalwart-upgrade hold"), "{message}");
            assert!(
                message.contains("stalwart-migrate") && message.contains("0.16.27"),
                "{message}"
            );
        }
    }
}
