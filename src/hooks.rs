//! dpkg maintainer-script and rpm scriptlet entry points (`stalwart-upgrade hook deb|rpm`).
//!
//! The scripts in debian/ and rpm/ are one-liners calling these. Two parts:
//! - [`deb_action`] / [`rpm_action`]: pure functions from (script, arguments) to an [`Action`];
//! - [`execute`]: carries an action out through an [`Engine`] (the real one is
//!   [`system::System`]: first install, adoption, purge; tests use a fake) and maps the result to
//!   the script's exit code.
//!
//! Facts the decisions rest on (facts/packaging.md, from Debian Policy 6.5-6.7, deb-preinst(5),
//! deb-postrm(5), rpm-scriptlets(7)):
//! - dpkg upgrade order: old `prerm upgrade NEW`, new `preinst upgrade OLD NEW`, unpack, old
//!   `postrm upgrade NEW`, new `postinst configure OLD`. A failing preinst is unwound (new
//!   `postrm abort-upgrade`, old `postinst abort-upgrade`) and the old version stays installed: the
//!   gate (policy, no downtime) belongs there. A failing postinst leaves the package
//!   Half-Configured, and every later apt run (and unattended-upgrades' AutoFixInterruptedDpkg)
//!   runs `postinst configure OLD` again: the transaction belongs in postinst, it must be
//!   idempotent, and it exits non-zero only when neither version runs healthy (spec.md).
//! - rpm upgrade order: new %pre(2), unpack, new %post(2), old %preun(1), old files erased, old
//!   %postun(1), new %posttrans. The transaction runs in %posttrans (the old package's scriptlets
//!   and file removal are over by then); %pre is the gate (a failing %pre skips this package).
//!   `$1` of %posttrans says nothing useful, so install vs upgrade is read from the system.

pub mod system;

use crate::engine::ending::{Outcome, Report};
use crate::engine::transaction::RecoverReport;
use crate::server::version::Version;
use crate::{exit, Context, Error, UpgradeRequest};
use std::io::Write;

/// Environment variable through which the rpm scriptlets pass the package's own version
/// (`%pre` only gets the instance count in `$1`).
pub const ENV_PACKAGE_VERSION: &str = "STALWART_PACKAGE_VERSION";

/// What a maintainer script must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing (the server keeps running as it is).
    Nothing,
    /// Finish or undo an interrupted transaction (idempotent); nothing else.
    Recover,
    /// A first install (preinst install / %pre 1): recover, and refuse, before any file is
    /// unpacked, to install a second server beside one the package cannot adopt.
    InstallGate,
    /// `postinst abort-remove`: our `prerm remove` stopped the server and the removal was
    /// abandoned: recover and start it again.
    RecoverAndStart,
    /// Recover, then the policy gate for the incoming version, without any downtime; a refusal
    /// exits non-zero so the package manager keeps the old package.
    Gate { to: Version },
    /// Make the system run the payload: a first install, the adoption of an install.sh
    /// installation, or the upgrade transaction. `previous` is dpkg's last configured version;
    /// `rpm`: run from %posttrans (its messages name rpm's commands, not dpkg's).
    Converge { previous: Option<String>, rpm: bool },
    /// The package is being removed: stop the server.
    Stop,
    /// The package was removed: configuration and data stay; say where, and how to purge
    /// (`dpkg`: `apt purge`; rpm has no purge).
    Removed { rpm: bool },
    /// Remove what the packages created (never the data unless the admin opted in).
    Purge,
    /// A script or argument we do not know: fail, as Debian's templates do.
    Unknown { what: String },
}

/// The decision for a dpkg maintainer script and its arguments (deb-preinst(5) etc.).
pub fn deb_action(script: &str, args: &[String]) -> Action {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let unknown = || Action::Unknown {
        what: format!("{script} {}", args.join(" "))
            .trim_end()
            .to_string(),
    };
    match (script, a.as_slice()) {
        // First install, or reinstall after a removal that kept the config files.
        ("preinst", ["install", ..]) => Action::InstallGate,
        ("preinst", ["upgrade", old, new, ..]) => match Version::parse_dpkg(new) {
            // A reinstall of the same version changes nothing: no gate.
            _ if old == new => Action::Recover,
            Ok(to) => Action::Gate { to },
            // Not a version we can judge: postinst's preflight will (it reads the binary).
            Err(_) => Action::Recover,
        },
        // Old dpkg without NEW: postinst's preflight judges.
        ("preinst", ["upgrade", ..]) => Action::Recover,
        ("preinst", ["abort-upgrade", ..]) => Action::Recover,

        ("postinst", ["configure"]) => Action::Converge {
            previous: None,
            rpm: false,
        },
        ("postinst", ["configure", old, ..]) => Action::Converge {
            previous: (!old.is_empty()).then(|| old.to_string()),
            rpm: false,
        },
        ("postinst", ["abort-upgrade", ..]) | ("postinst", ["abort-deconfigure", ..]) => {
            Action::Recover
        }
        ("postinst", ["abort-remove", ..]) => Action::RecoverAndStart,
        ("postinst", ["triggered", ..]) => Action::Nothing,

        // The server keeps running until the new postinst's transaction.
        ("prerm", ["upgrade", ..])
        | ("prerm", ["failed-upgrade", ..])
        | ("prerm", ["deconfigure", ..]) => Action::Nothing,
        ("prerm", ["remove", ..]) => Action::Stop,

        ("postrm", ["remove", ..]) => Action::Removed { rpm: false },
        ("postrm", ["purge", ..]) => Action::Purge,
        ("postrm", ["upgrade", ..]) | ("postrm", ["disappear", ..]) => Action::Nothing,
        ("postrm", ["failed-upgrade", ..])
        | ("postrm", ["abort-install", ..])
        | ("postrm", ["abort-upgrade", ..]) => Action::Recover,

        _ => unknown(),
    }
}

/// The decision for an rpm scriptlet, its `$1` and the package's own version (from
/// [`ENV_PACKAGE_VERSION`]).
pub fn rpm_action(scriptlet: &str, arg: &str, version: Option<&str>) -> Action {
    let unknown = || Action::Unknown {
        what: format!("{scriptlet} {arg}").trim_end().to_string(),
    };
    let count: Option<u32> = arg.trim().parse().ok();
    match (scriptlet, count) {
        ("pretrans", _) | ("post", _) => Action::Nothing,
        ("pre", Some(1)) => Action::InstallGate,
        ("pre", Some(n)) if n >= 2 => match version.map(Version::parse_rpm) {
            Some(Ok(to)) => Action::Gate { to },
            // No version to judge: %posttrans's preflight will.
            _ => Action::Recover,
        },
        ("preun", Some(0)) => Action::Stop,
        ("preun", Some(_)) => Action::Nothing,
        ("postun", Some(0)) => Action::Removed { rpm: true },
        ("postun", Some(_)) => Action::Nothing,
        ("posttrans", _) => Action::Converge {
            previous: None,
            rpm: true,
        },
        _ => unknown(),
    }
}

/// The side effects the hooks need. [`system::System`] is the real system.
pub trait Engine {
    /// `transaction::recover`.
    fn recover(&self, ctx: &Context) -> Result<RecoverReport, Error>;
    /// Policy verdict for the currently running version -> `to` (no downtime, no binary of `to`
    /// needed: in preinst/%pre the new files are not unpacked yet). Ok when nothing is
    /// installed, for a reinstall, and for a version that failed before (postinst reports that).
    fn gate(&self, ctx: &Context, to: &Version) -> Result<(), Error>;
    /// `upgrade::run`.
    fn upgrade(&self, ctx: &Context, req: &UpgradeRequest) -> Result<Report, Error>;
    /// Version of the package payload's binary.
    fn payload_version(&self, ctx: &Context) -> Result<Version, Error>;
    /// The full version (with revision) of the package being configured, as dpkg knows it.
    fn package_version(&self) -> Option<String>;
    /// Is there a server binary in PREFIX/bin?
    fn server_installed(&self, ctx: &Context) -> bool;
    /// Was this installation set up or adopted by a package already?
    fn managed(&self, ctx: &Context) -> bool;
    /// First install: user, directories, binary, config, unit enabled and started. Returns
    /// what was done, one line each.
    fn install_fresh(&self, ctx: &Context) -> Result<Vec<String>, Error>;
    /// Take over an existing (install.sh) installation without touching config or data.
    fn adopt(&self, ctx: &Context) -> Result<Vec<String>, Error>;
    /// What an installation managed by an earlier version of the packages needs brought to
    /// this version's layout (the server's env file moved out of the service user's
    /// directory, the unit's drop-in rewritten). Returns what was done.
    fn migrate_layout(&self, _ctx: &Context) -> Vec<String> {
        Vec::new()
    }
    /// A server the package cannot adopt runs here: why, and what to do. None when there is
    /// none.
    fn foreign_installation(&self, ctx: &Context) -> Option<String>;
    /// An installation in another layout (install.sh's FHS one) brought under PREFIX where it
    /// stands: the settings from now on, and what was done. None when there is none.
    fn relocate(
        &self,
        _ctx: &Context,
    ) -> Result<Option<(crate::config::Settings, Vec<String>)>, Error> {
        Ok(None)
    }
    /// May the hooks start and stop units? Not when systemd is not the running init, inside a
    /// chroot (a bind-mounted /run would reach the host's systemd), or when policy-rc.d forbids
    /// it (image builds): Err says which.
    fn units_controllable(&self, ctx: &Context) -> Result<(), String>;
    fn daemon_reload(&self, ctx: &Context) -> Result<(), Error>;
    fn stop(&self, ctx: &Context) -> Result<(), Error>;
    fn start(&self, ctx: &Context) -> Result<(), Error>;
    /// The package is gone: its holds (apt pin, dnf versionlock entries) go with it, or they
    /// would pin a package that is not installed. Returns what was done.
    fn drop_holds(&self, ctx: &Context) -> Result<Vec<String>, Error>;
    /// Did the admin ask for config and data to go on purge?
    fn purge_data_requested(&self) -> bool;
    fn purge(&self, ctx: &Context, with_data: bool) -> Result<Vec<String>, Error>;
}

/// `hook deb SCRIPT ARGS...`
pub fn deb(ctx: &Context, script: &str, args: &[String]) -> i32 {
    let action = deb_action(script, args);
    execute(&system::System, ctx, &action, &mut std::io::stderr())
}

/// `hook rpm SCRIPTLET ARG` (the package version comes from [`ENV_PACKAGE_VERSION`]).
pub fn rpm(ctx: &Context, scriptlet: &str, arg: &str) -> i32 {
    let version = std::env::var(ENV_PACKAGE_VERSION).ok();
    let action = rpm_action(scriptlet, arg, version.as_deref());
    execute(&system::System, ctx, &action, &mut std::io::stderr())
}

/// Carries out `action`; messages for the admin go to `out` (stderr under dpkg/rpm, which ends
/// up in apt's term.log and in the mail unattended-upgrades sends). Returns the exit code.
pub fn execute(engine: &dyn Engine, ctx: &Context, action: &Action, out: &mut dyn Write) -> i32 {
    let mut say = |text: &str| {
        // Server and tool output reaches apt's terminal and term.log through here.
        for line in crate::os::child::printable(text).lines() {
            let _ = writeln!(out, "stalwart-upgrade: {line}");
        }
    };
    match action {
        Action::Nothing => exit::OK,
        Action::InstallGate => {
            if let Err(code) = recover(engine, ctx, &mut say) {
                return code;
            }
            match engine.foreign_installation(ctx) {
                None => exit::OK,
                Some(why) => {
                    banner(&mut say, &[format!("NOT INSTALLING stalwart: {why}")]);
                    exit::ERROR
                }
            }
        }
        Action::Recover => match recover(engine, ctx, &mut say) {
            Ok(()) => exit::OK,
            Err(code) => code,
        },
        Action::RecoverAndStart => {
            if let Err(code) = recover(engine, ctx, &mut say) {
                return code;
            }
            if engine.units_controllable(ctx).is_ok() && engine.server_installed(ctx) {
                if let Err(e) = engine.start(ctx) {
                    say(&format!(
                        "could not start {} again after the removal was abandoned: {e}",
                        ctx.settings.unit
                    ));
                }
            }
            exit::OK
        }
        Action::Gate { to } => {
            if let Err(code) = recover(engine, ctx, &mut say) {
                return code;
            }
            match engine.gate(ctx, to) {
                Ok(()) => exit::OK,
                Err(e) => {
                    crate::engine::announce::refused(
                        &ctx.settings.unit,
                        &to.to_string(),
                        &e.to_string(),
                    );
                    say(&format!(
                        "not installing stalwart {to}: {e}\n  nothing was changed; {} keeps running the current version",
                        ctx.settings.unit
                    ));
                    match e.exit_code() {
                        exit::OK => exit::ERROR,
                        code => code,
                    }
                }
            }
        }
        Action::Converge { previous, rpm } => {
            converge(engine, ctx, previous.as_deref(), *rpm, &mut say)
        }
        Action::Stop => {
            if engine.units_controllable(ctx).is_ok() {
                if let Err(e) = engine.stop(ctx) {
                    // Like debhelper's `deb-systemd-invoke stop ... || true`: a removal must not
                    // get stuck on a unit that is already gone.
                    say(&format!("could not stop {}: {e}", ctx.settings.unit));
                }
            }
            exit::OK
        }
        Action::Removed { rpm } => {
            match engine.drop_holds(ctx) {
                Ok(lines) => lines.iter().for_each(|l| say(l)),
                Err(e) => say(&format!("warning: could not remove the holds: {e}")),
            }
            let p = ctx.settings.prefix.display();
            let state = ctx.settings.state_dir.display();
            say(&format!(
                "the server was removed; its configuration and data stay in {p}/etc, {p}/data and {p}/logs, the binary in {p}/bin, the upgrade state in {state}"
            ));
            if *rpm {
                say(&format!(
                    "to remove the binary and the upgrade state too: rm -rf {p}/bin {state}"
                ));
            } else {
                say("purging the package (`apt purge stalwart`) removes the binary, the upgrade state and the snapshots, except those holding set-aside data (removed only by `stalwart-upgrade snapshot remove ID`), and keeps configuration and data unless /etc/stalwart-upgrade/purge-data exists or STALWART_PURGE_DATA=yes is set");
            }
            exit::OK
        }
        Action::Purge => {
            let with_data = engine.purge_data_requested();
            match engine.purge(ctx, with_data) {
                Ok(lines) => {
                    for l in &lines {
                        say(l);
                    }
                    exit::OK
                }
                Err(e) => {
                    say(&format!("purge incomplete: {e}"));
                    e.exit_code().max(exit::ERROR)
                }
            }
        }
        Action::Unknown { what } => {
            say(&format!("hook called with unknown arguments: {what}"));
            exit::USAGE
        }
    }
}

/// Recover; Err(exit code) when the state is not settled.
fn recover(engine: &dyn Engine, ctx: &Context, say: &mut dyn FnMut(&str)) -> Result<(), i32> {
    match engine.recover(ctx) {
        Ok(RecoverReport::Nothing) => Ok(()),
        Ok(RecoverReport::Finished { report }) => {
            say(&format!(
                "finished the interrupted upgrade {} -> {}: {}",
                report.from, report.to, report.message
            ));
            Ok(())
        }
        Ok(RecoverReport::RolledBack { report }) => {
            say(&format!(
                "undid the interrupted upgrade {} -> {}: {}",
                report.from, report.to, report.message
            ));
            Ok(())
        }
        Ok(RecoverReport::Failed { report }) => {
            broken(say, &ctx.settings.unit, &report);
            Err(exit::BROKEN)
        }
        Err(e) => {
            say(&format!("could not recover the interrupted upgrade: {e}"));
            Err(e.exit_code().max(exit::ERROR))
        }
    }
}

/// How the admin re-runs an interrupted or failed hook: dpkg re-runs postinst on
/// `dpkg --configure -a`; rpm never re-runs %posttrans, reinstalling the package does.
fn rerun_hint(rpm: bool) -> &'static str {
    if rpm {
        "`dnf reinstall stalwart`"
    } else {
        "`dpkg --configure -a`"
    }
}

fn converge(
    engine: &dyn Engine,
    ctx: &Context,
    previous: Option<&str>,
    rpm: bool,
    say: &mut dyn FnMut(&str),
) -> i32 {
    let unit = ctx.settings.unit.as_str();
    let payload = ctx.settings.payload_dir.join("stalwart");
    if engine.units_controllable(ctx).is_ok() {
        // The package may have brought a new unit file.
        if let Err(e) = engine.daemon_reload(ctx) {
            say(&format!("systemctl daemon-reload failed: {e}"));
        }
    }
    if let Err(code) = recover(engine, ctx, say) {
        return code;
    }
    let relocated;
    let ctx = match engine.relocate(ctx) {
        Ok(None) => ctx,
        Ok(Some((settings, lines))) => {
            for l in &lines {
                say(l);
            }
            relocated = Context {
                settings,
                ..ctx.clone()
            };
            &relocated
        }
        Err(e) => {
            say(&format!("could not adopt the existing installation: {e}"));
            return e.exit_code().max(exit::ERROR);
        }
    };
    if !engine.server_installed(ctx) {
        return match engine.install_fresh(ctx) {
            Ok(lines) => {
                for l in &lines {
                    say(l);
                }
                exit::OK
            }
            Err(e) => {
                say(&format!("first installation failed: {e}"));
                e.exit_code().max(exit::ERROR)
            }
        };
    }
    if previous.is_none() && !engine.managed(ctx) {
        match engine.adopt(ctx) {
            Ok(lines) => {
                for l in &lines {
                    say(l);
                }
            }
            Err(e) => {
                say(&format!("could not adopt the existing installation: {e}"));
                return e.exit_code().max(exit::ERROR);
            }
        }
    }
    for l in engine.migrate_layout(ctx) {
        say(&l);
    }
    if let Err(why) = engine.units_controllable(ctx) {
        say(&format!(
            "{why}: {unit} was not upgraded; once the system runs, run `stalwart-upgrade upgrade --to {}`",
            payload.display()
        ));
        return exit::OK;
    }
    // Reinstalling the very package that failed before is the admin's way to retry it (the
    // engine's refusal message says so). The full dpkg versions are compared: a new revision of
    // the same upstream release (0.15.6-2 after 0.15.6-1 failed) arriving through
    // unattended-upgrades carries the same binary and must not be retried on its own; a
    // `dpkg --configure -a` re-run still has the OLD version here.
    let retry = match (previous, engine.package_version()) {
        (Some(prev), Some(now)) => prev == now,
        _ => false,
    };
    let req = UpgradeRequest {
        target: payload.clone(),
        sha256sums: Some(ctx.settings.payload_dir.join("SHA256SUMS")),
        retry,
        // Unattended: nobody can have stopped the other nodes of a cluster.
        cluster_stopped: false,
    };
    match engine.upgrade(ctx, &req) {
        Ok(report) => outcome(say, unit, &payload, &report),
        Err(e @ Error::PreviouslyFailed { .. }) => {
            // Already handled: rolled back when it failed, recorded, reported by `status`.
            say(&format!(
                "REMINDER: {unit} still runs the previous version. {e}"
            ));
            exit::OK
        }
        Err(e) if matches!(e.exit_code(), exit::REFUSED | exit::PREFLIGHT) => {
            // Refused by the policy or a check before any downtime (versions, server config):
            // nothing changed and the old version runs. Exiting non-zero would leave the package
            // Half-Configured and make every later apt run fail on it (spec.md).
            crate::engine::announce::refused(unit, &payload.display().to_string(), &e.to_string());
            banner(
                say,
                &[
                    format!("STALWART WAS NOT UPGRADED: {e}"),
                    format!("nothing was changed: {unit} keeps running the current version, although the package now carries {}.", payload.display()),
                    format!("when the cause is fixed, run `stalwart-upgrade upgrade --to {}`", payload.display()),
                ],
            );
            exit::OK
        }
        Err(e) => {
            say(&format!(
                "the upgrade could not run: {e}\n  fix the cause, then run {} (or `stalwart-upgrade upgrade --to {}`)",
                rerun_hint(rpm),
                payload.display()
            ));
            e.exit_code().max(exit::ERROR)
        }
    }
}

fn outcome(say: &mut dyn FnMut(&str), unit: &str, payload: &std::path::Path, r: &Report) -> i32 {
    match &r.outcome {
        Outcome::Committed => {
            let downtime = r
                .downtime_ms
                .map(|ms| format!(" (downtime {ms} ms)"))
                .unwrap_or_default();
            say(&format!(
                "{unit} upgraded {} -> {}{downtime}: {}",
                r.from, r.to, r.message
            ));
            for w in &r.warnings {
                say(&format!("warning: {w}"));
            }
            exit::OK
        }
        Outcome::NothingToDo => {
            say(&r.message);
            exit::OK
        }
        Outcome::RolledBack { .. } => {
            // The engine's message says why, what was undone and how to retry; it has also
            // logged the failure to the journal.
            let mut lines = vec![
                format!(
                    "UPGRADE OF STALWART ROLLED BACK: {} -> {} failed; {unit} runs {} again, healthy.",
                    r.from, r.to, r.from
                ),
                r.message.clone(),
            ];
            lines.extend(r.warnings.iter().map(|w| format!("WARNING: {w}")));
            lines.push(format!(
                "The package stays installed (apt and unattended-upgrades are not blocked), but {} is NOT running; `stalwart-upgrade status` reports this until it is resolved. To try it again: `stalwart-upgrade upgrade --to {} --retry`.",
                r.to,
                payload.display()
            ));
            banner(say, &lines);
            exit::OK
        }
        Outcome::Failed { .. } => {
            broken(say, unit, r);
            exit::BROKEN
        }
    }
}

fn broken(say: &mut dyn FnMut(&str), unit: &str, r: &Report) {
    let reason = match &r.outcome {
        Outcome::Failed { reason } | Outcome::RolledBack { reason, .. } => reason.as_str(),
        _ => "",
    };
    banner(
        say,
        &[
            format!(
                "STALWART IS DOWN: the upgrade {} -> {} failed and the rollback did not bring {} back healthy: {reason}",
                r.from, r.to, r.from
            ),
            r.message.clone(),
            format!("see `stalwart-upgrade status` and `journalctl -u {unit} -u stalwart-upgrade-recover`; after fixing, run `stalwart-upgrade recover`, then let the package manager finish its step: `dpkg --configure -a` (apt) or `dnf reinstall stalwart` (dnf: rpm never runs %posttrans again by itself)"),
        ],
    );
}

fn banner(say: &mut dyn FnMut(&str), lines: &[String]) {
    let rule = "*".repeat(72);
    say(&rule);
    for l in lines {
        say(l);
    }
    say(&rule);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::journal::TxKind;
    use crate::server::version::Class;
    use std::cell::RefCell;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    fn v(x: &str) -> Version {
        Version(semver::Version::parse(x).unwrap())
    }

    #[test]
    fn deb_table() {
        use Action::*;
        let gate = |x: &str| Gate { to: v(x) };
        let table: Vec<(&str, Vec<&str>, Action)> = vec![
            ("preinst", vec!["install"], InstallGate),
            ("preinst", vec!["install", "0.15.4-1"], InstallGate),
            (
                "preinst",
                vec!["upgrade", "0.15.4-1", "0.15.5-1"],
                gate("0.15.5"),
            ),
            (
                "preinst",
                vec!["upgrade", "1:0.15.4-1", "1:0.16.0~rc1-1"],
                gate("0.16.0-rc1"),
            ),
            ("preinst", vec!["upgrade", "0.15.5-1", "0.15.5-1"], Recover),
            ("preinst", vec!["upgrade", "0.15.4-1"], Recover),
            ("preinst", vec!["upgrade", "0.15.4-1", "garbage"], Recover),
            ("preinst", vec!["abort-upgrade", "0.15.5-1"], Recover),
            (
                "postinst",
                vec!["configure"],
                Converge {
                    previous: None,
                    rpm: false,
                },
            ),
            (
                "postinst",
                vec!["configure", ""],
                Converge {
                    previous: None,
                    rpm: false,
                },
            ),
            (
                "postinst",
                vec!["configure", "0.15.4-1"],
                Converge {
                    previous: Some("0.15.4-1".into()),
                    rpm: false,
                },
            ),
            ("postinst", vec!["abort-upgrade", "0.15.5-1"], Recover),
            ("postinst", vec!["abort-remove"], RecoverAndStart),
            (
                "postinst",
                vec!["abort-remove", "in-favour", "x", "1"],
                RecoverAndStart,
            ),
            (
                "postinst",
                vec!["abort-deconfigure", "in-favour", "x", "1"],
                Recover,
            ),
            ("postinst", vec!["triggered", "/usr/lib"], Nothing),
            ("prerm", vec!["upgrade", "0.15.5-1"], Nothing),
            ("prerm", vec!["failed-upgrade", "0.15.4-1"], Nothing),
            ("prerm", vec!["deconfigure", "in-favour", "x", "1"], Nothing),
            ("prerm", vec!["remove"], Stop),
            ("postrm", vec!["remove"], Removed { rpm: false }),
            ("postrm", vec!["purge"], Purge),
            ("postrm", vec!["upgrade", "0.15.5-1"], Nothing),
            ("postrm", vec!["disappear", "x", "1"], Nothing),
            (
                "postrm",
                vec!["failed-upgrade", "0.15.4-1", "0.15.5-1"],
                Recover,
            ),
            ("postrm", vec!["abort-install"], Recover),
            ("postrm", vec!["abort-install", "0.15.4-1"], Recover),
            (
                "postrm",
                vec!["abort-upgrade", "0.15.4-1", "0.15.5-1"],
                Recover,
            ),
        ];
        for (script, args, want) in table {
            assert_eq!(deb_action(script, &s(&args)), want, "{script} {args:?}");
        }
        for (script, args) in [
            ("postinst", vec![]),
            ("postinst", vec!["reconfigure", "1"]),
            ("preinst", vec!["bogus"]),
            ("config", vec!["configure"]),
            ("prerm", vec![]),
        ] {
            assert!(
                matches!(deb_action(script, &s(&args)), Unknown { .. }),
                "{script} {args:?}"
            );
        }
    }

    #[test]
    fn rpm_table() {
        use Action::*;
        let table: Vec<(&str, &str, Option<&str>, Action)> = vec![
            ("pretrans", "0", Some("0.15.5"), Nothing),
            ("pre", "1", Some("0.15.5"), InstallGate),
            ("pre", "2", Some("0.15.5"), Gate { to: v("0.15.5") }),
            (
                "pre",
                "3",
                Some("0.16.0~rc1"),
                Gate {
                    to: v("0.16.0-rc1"),
                },
            ),
            ("pre", "2", None, Recover),
            ("pre", "2", Some("not-a-version"), Recover),
            ("post", "1", Some("0.15.5"), Nothing),
            ("post", "2", Some("0.15.5"), Nothing),
            ("preun", "0", None, Stop),
            ("preun", "1", None, Nothing),
            ("postun", "0", None, Removed { rpm: true }),
            ("postun", "1", None, Nothing),
            (
                "posttrans",
                "0",
                Some("0.15.5"),
                Converge {
                    previous: None,
                    rpm: true,
                },
            ),
            (
                "posttrans",
                "",
                None,
                Converge {
                    previous: None,
                    rpm: true,
                },
            ),
        ];
        for (scriptlet, arg, ver, want) in table {
            assert_eq!(rpm_action(scriptlet, arg, ver), want, "{scriptlet} {arg}");
        }
        for (scriptlet, arg) in [("pre", ""), ("pre", "x"), ("preun", ""), ("trigger", "1")] {
            assert!(matches!(rpm_action(scriptlet, arg, None), Unknown { .. }));
        }
    }

    fn report(outcome: Outcome) -> Report {
        Report {
            txid: "tx1".into(),
            kind: TxKind::Upgrade,
            from: v("0.15.4"),
            to: v("0.15.5"),
            class: Class::Patch,
            outcome,
            downtime_ms: Some(1200),
            snapshot: None,
            warnings: Vec::new(),
            message: "msg".into(),
            was_active: true,
        }
    }

    /// Records calls; results configurable per test.
    struct Fake {
        calls: RefCell<Vec<String>>,
        recover: fn() -> Result<RecoverReport, Error>,
        gate: fn() -> Result<(), Error>,
        upgrade: fn() -> Result<Report, Error>,
        installed: bool,
        managed: bool,
        systemd: bool,
        purge_data: bool,
        package: &'static str,
        foreign: Option<String>,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                calls: RefCell::new(Vec::new()),
                recover: || Ok(RecoverReport::Nothing),
                gate: || Ok(()),
                upgrade: || Ok(report(Outcome::Committed)),
                installed: true,
                managed: true,
                systemd: true,
                purge_data: false,
                package: "0.15.5-1",
                foreign: None,
            }
        }
    }

    impl Fake {
        fn call(&self, c: impl Into<String>) {
            self.calls.borrow_mut().push(c.into());
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Engine for Fake {
        fn recover(&self, _: &Context) -> Result<RecoverReport, Error> {
            self.call("recover");
            (self.recover)()
        }
        fn gate(&self, _: &Context, to: &Version) -> Result<(), Error> {
            self.call(format!("gate {to}"));
            (self.gate)()
        }
        fn upgrade(&self, _: &Context, req: &UpgradeRequest) -> Result<Report, Error> {
            self.call(format!(
                "upgrade {} sums={} retry={}",
                req.target.display(),
                req.sha256sums.is_some(),
                req.retry
            ));
            (self.upgrade)()
        }
        fn payload_version(&self, _: &Context) -> Result<Version, Error> {
            Ok(v("0.15.5"))
        }
        fn package_version(&self) -> Option<String> {
            Some(self.package.to_string())
        }
        fn server_installed(&self, _: &Context) -> bool {
            self.installed
        }
        fn managed(&self, _: &Context) -> bool {
            self.managed
        }
        fn install_fresh(&self, _: &Context) -> Result<Vec<String>, Error> {
            self.call("install_fresh");
            Ok(vec!["installed".into()])
        }
        fn adopt(&self, _: &Context) -> Result<Vec<String>, Error> {
            self.call("adopt");
            Ok(vec!["adopted".into()])
        }
        fn foreign_installation(&self, _: &Context) -> Option<String> {
            self.foreign.clone()
        }
        fn units_controllable(&self, _: &Context) -> Result<(), String> {
            if self.systemd {
                Ok(())
            } else {
                Err("systemd is not running".into())
            }
        }
        fn daemon_reload(&self, _: &Context) -> Result<(), Error> {
            self.call("daemon_reload");
            Ok(())
        }
        fn stop(&self, _: &Context) -> Result<(), Error> {
            self.call("stop");
            Err(Error::Preflight("unit gone".into()))
        }
        fn start(&self, _: &Context) -> Result<(), Error> {
            self.call("start");
            Ok(())
        }
        fn drop_holds(&self, _: &Context) -> Result<Vec<String>, Error> {
            self.call("drop holds");
            Ok(vec![])
        }
        fn purge_data_requested(&self) -> bool {
            self.purge_data
        }
        fn purge(&self, _: &Context, with_data: bool) -> Result<Vec<String>, Error> {
            self.call(format!("purge data={with_data}"));
            Ok(vec!["purged".into()])
        }
    }

    fn ctx() -> Context {
        Context::new(crate::config::Settings::default())
    }

    fn run(f: &Fake, a: Action) -> (i32, String) {
        let mut out = Vec::new();
        let code = execute(f, &ctx(), &a, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    fn converge(prev: Option<&str>) -> Action {
        Action::Converge {
            previous: prev.map(String::from),
            rpm: false,
        }
    }

    const PAYLOAD: &str = "upgrade /usr/lib/stalwart/stalwart sums=true";

    /// Issue #25: rpm never runs %posttrans again, so its message names rpm's way to re-run
    /// the step, and dpkg's names dpkg's.
    #[test]
    fn a_hook_that_could_not_run_names_its_package_managers_retry() {
        let f = Fake {
            upgrade: || Err(Error::Usage("the disk is gone".into())),
            ..Fake::default()
        };
        let (_, out) = run(
            &f,
            Action::Converge {
                previous: None,
                rpm: true,
            },
        );
        assert!(out.contains("dnf reinstall stalwart"), "{out}");
        assert!(!out.contains("dpkg"), "{out}");
        let (_, out) = run(&f, converge(Some("0.15.4-1")));
        assert!(out.contains("dpkg --configure -a"), "{out}");
    }

    #[test]
    fn upgrade_committed_exits_0() {
        let f = Fake::default();
        let (code, out) = run(&f, converge(Some("0.15.4-1")));
        assert_eq!(code, 0);
        assert_eq!(
            f.calls(),
            [
                "daemon_reload",
                "recover",
                &format!("{PAYLOAD} retry=false")
            ]
        );
        assert!(
            out.contains("upgraded 0.15.4 -> 0.15.5 (downtime 1200 ms)"),
            "{out}"
        );
    }

    #[test]
    fn rolled_back_exits_0_loudly() {
        let f = Fake {
            upgrade: || {
                Ok(report(Outcome::RolledBack {
                    reason: "health gate: 503".into(),
                    before_stop: false,
                }))
            },
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(Some("0.15.4-1")));
        assert_eq!(code, 0);
        assert!(
            out.contains("ROLLED BACK: 0.15.4 -> 0.15.5 failed"),
            "{out}"
        );
        // The engine's own account (reason, what was undone), every line prefixed.
        assert!(out.contains("stalwart-upgrade: msg\n"), "{out}");
        assert!(out.contains("--retry"), "{out}");
    }

    #[test]
    fn failed_exits_broken() {
        let f = Fake {
            upgrade: || {
                Ok(report(Outcome::Failed {
                    reason: "old version unhealthy".into(),
                }))
            },
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(Some("0.15.4-1")));
        assert_eq!(code, exit::BROKEN);
        assert!(out.contains("STALWART IS DOWN"), "{out}");
    }

    #[test]
    fn rerun_after_failure_is_a_reminder_not_a_second_outage() {
        let f = Fake {
            upgrade: || {
                Err(Error::PreviouslyFailed {
                    version: v("0.15.5"),
                    txid: "tx1".into(),
                    reason: "health".into(),
                })
            },
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(Some("0.15.4-1")));
        assert_eq!(code, 0);
        assert!(out.contains("REMINDER"), "{out}");
        assert_eq!(f.calls()[2], format!("{PAYLOAD} retry=false"));
    }

    #[test]
    fn reinstall_of_the_payload_version_retries() {
        let f = Fake::default();
        run(&f, converge(Some("0.15.5-1")));
        assert_eq!(f.calls()[2], format!("{PAYLOAD} retry=true"));
    }

    #[test]
    fn a_new_revision_of_a_failed_release_is_not_retried_unattended() {
        let f = Fake {
            package: "0.15.5-2",
            ..Fake::default()
        };
        run(&f, converge(Some("0.15.5-1")));
        assert_eq!(f.calls()[2], format!("{PAYLOAD} retry=false"));
    }

    #[test]
    fn refusal_in_postinst_exits_0_and_locked_does_not() {
        let f = Fake {
            upgrade: || Err(Error::Refused("minor needs approval".into())),
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(Some("0.15.4-1")));
        assert_eq!(code, 0);
        assert!(out.contains("NOT UPGRADED: minor needs approval"), "{out}");
        let f = Fake {
            upgrade: || {
                Err(Error::State(crate::store::state::StateError::Locked {
                    path: "/x".into(),
                    holder: "pid 1".into(),
                    secs: 30,
                }))
            },
            ..Fake::default()
        };
        assert_eq!(run(&f, converge(Some("0.15.4-1"))).0, exit::LOCKED);
    }

    #[test]
    fn first_install_and_adoption() {
        let f = Fake {
            installed: false,
            managed: false,
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(None));
        assert_eq!(code, 0);
        assert_eq!(f.calls(), ["daemon_reload", "recover", "install_fresh"]);
        assert!(out.contains("installed"));

        let f = Fake {
            managed: false,
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(None));
        assert_eq!(code, 0);
        assert_eq!(
            f.calls(),
            [
                "daemon_reload",
                "recover",
                "adopt",
                &format!("{PAYLOAD} retry=false")
            ]
        );
        assert!(out.contains("adopted"));

        // An rpm upgrade of a managed installation: no adoption.
        let f = Fake::default();
        run(&f, converge(None));
        assert!(!f.calls().contains(&"adopt".to_string()));
    }

    #[test]
    fn without_systemd_nothing_is_started_or_swapped() {
        let f = Fake {
            systemd: false,
            ..Fake::default()
        };
        let (code, out) = run(&f, converge(Some("0.15.4-1")));
        assert_eq!(code, 0);
        assert_eq!(f.calls(), ["recover"]);
        assert!(out.contains("systemd is not running"), "{out}");
    }

    #[test]
    fn gate_refusal_exits_non_zero_without_downtime() {
        let f = Fake {
            gate: || {
                Err(Error::Refused(
                    "0.16 needs `stalwart-upgrade allow 0.16`".into(),
                ))
            },
            ..Fake::default()
        };
        let (code, out) = run(&f, Action::Gate { to: v("0.16.0") });
        assert_eq!(code, exit::REFUSED);
        assert_eq!(f.calls(), ["recover", "gate 0.16.0"]);
        assert!(out.contains("not installing stalwart 0.16.0"), "{out}");
        let f = Fake::default();
        assert_eq!(run(&f, Action::Gate { to: v("0.15.5") }).0, 0);
    }

    #[test]
    fn broken_recovery_blocks() {
        let f = Fake {
            recover: || {
                Ok(RecoverReport::Failed {
                    report: report(Outcome::Failed { reason: "x".into() }),
                })
            },
            ..Fake::default()
        };
        assert_eq!(run(&f, Action::Recover).0, exit::BROKEN);
        assert_eq!(run(&f, Action::Gate { to: v("0.15.5") }).0, exit::BROKEN);
        assert_eq!(run(&f, converge(Some("0.15.4-1"))).0, exit::BROKEN);
        assert!(!f
            .calls()
            .iter()
            .any(|c| c.starts_with("upgrade") || c.starts_with("gate")));
    }

    #[test]
    fn stop_failure_does_not_block_removal() {
        let f = Fake::default();
        let (code, out) = run(&f, Action::Stop);
        assert_eq!(code, 0);
        assert!(out.contains("could not stop"), "{out}");
    }

    #[test]
    fn removal_drops_the_holds_on_both_package_managers() {
        for rpm in [false, true] {
            let f = Fake::default();
            assert_eq!(run(&f, Action::Removed { rpm }).0, 0);
            assert_eq!(f.calls(), ["drop holds"]);
        }
    }

    #[test]
    fn purge_keeps_data_unless_asked() {
        let f = Fake::default();
        run(&f, Action::Purge);
        let f2 = Fake {
            purge_data: true,
            ..Fake::default()
        };
        run(&f2, Action::Purge);
        assert_eq!(f.calls(), ["purge data=false"]);
        assert_eq!(f2.calls(), ["purge data=true"]);
    }

    #[test]
    fn abort_remove_restarts() {
        let f = Fake::default();
        assert_eq!(run(&f, Action::RecoverAndStart).0, 0);
        assert_eq!(f.calls(), ["recover", "start"]);
    }

    #[test]
    fn unknown_fails() {
        let f = Fake::default();
        assert_eq!(run(&f, Action::Unknown { what: "x".into() }).0, exit::USAGE);
    }

    #[test]
    fn a_first_install_beside_a_foreign_server_is_refused_before_unpacking() {
        assert_eq!(
            deb_action("preinst", &["install".into()]),
            Action::InstallGate
        );
        assert_eq!(rpm_action("pre", "1", None), Action::InstallGate);
        let f = Fake::default();
        assert_eq!(run(&f, Action::InstallGate).0, exit::OK);
        let f = Fake {
            foreign: Some("install.sh's FHS layout runs here".into()),
            ..Fake::default()
        };
        let (code, out) = run(&f, Action::InstallGate);
        assert_eq!(code, exit::ERROR);
        assert!(
            out.contains("NOT INSTALLING") && out.contains("FHS"),
            "{out}"
        );
        assert_eq!(f.calls(), vec!["recover".to_string()]);
    }
}
