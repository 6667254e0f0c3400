//! `stalwart-upgrade status`: what runs, what happened last, and whether anything needs the admin.
//! Exits 8 (ATTENTION) when the last upgrade failed, a transaction is unfinished, the package's
//! binary is not what runs, the server is not running, or (>= 0.16) it answers in bootstrap or
//! recovery mode, so it doubles as a monitoring check.

use crate::engine::history::{self, Entry};
use crate::engine::journal::Ending;
use crate::os::systemd::{Systemd, UnitState};
use crate::store::state::{FailedUpgrade, StateDir};
use crate::{exit, Context, Error};
use serde::Serialize;
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct Status {
    pub unit: String,
    pub unit_state: Option<UnitState>,
    pub unit_error: Option<String>,
    pub binary: String,
    pub binary_version: Option<String>,
    pub package_version: Option<String>,
    pub last_transaction: Option<Entry>,
    pub unfinished: Option<Entry>,
    pub failed_upgrade: Option<FailedUpgrade>,
    pub kept_releases: Vec<String>,
    pub snapshots: Vec<String>,
    /// Snapshots of set-aside data (`Manifest::set_aside`): kept until removed by name.
    pub set_aside: Vec<crate::store::snapshot::SetAside>,
    pub policy: Option<serde_json::Value>,
    /// The release on probation after its commit (`probation`), if any.
    pub probation: Option<crate::flows::probation::Probation>,
    /// Why `status` exits non-zero, in words.
    pub attention: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn collect(ctx: &Context) -> Result<Status, Error> {
    let s = &ctx.settings;
    let state = StateDir::open(&s.state_dir)?;
    let (unit_state, unit_error) = match Systemd::connect().and_then(|sys| sys.state(&s.unit)) {
        Ok(st) => (Some(st), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let binary = s.server_binary();
    let binary_version = crate::server::version::of_binary(&binary)
        .ok()
        .map(|v| v.to_string());
    let listing = history::listing(&state)?;
    let last = listing.entries.last().cloned();
    let failed = state.failed()?;
    let mut attention = Vec::new();
    let mut warnings = listing.warnings;
    // A journal that cannot be read is itself what needs the admin: its error says what to do.
    let unfinished = match history::unfinished(&state) {
        Ok(u) => u,
        Err(Error::Journal(e)) => {
            attention.push(e.to_string());
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(u) = &unfinished {
        attention.push(format!(
            "transaction {} ({} -> {}) is unfinished: run `stalwart-upgrade recover`",
            u.txid, u.from, u.to
        ));
    }
    if let Some(f) = &failed {
        attention.push(format!(
            "the upgrade {} -> {} failed and was rolled back ({}); it will not be retried automatically: read `stalwart-upgrade history`, then `stalwart-upgrade upgrade --to PATH --retry` or reinstall the package",
            f.from, f.version, f.reason
        ));
    }
    if let Some(l) = &last {
        if l.ending == Some(Ending::Failed) {
            attention.push(format!(
                "the last transaction {} FAILED: {}",
                l.txid, l.message
            ));
        }
        if l.ending == Some(Ending::Committed) && !l.warnings.is_empty() {
            warnings.push(l.message.clone());
        }
    }
    match package_mismatch(s, binary_version.as_deref(), failed.as_ref(), last.as_ref()) {
        Some(Mismatch::Attention(a)) => attention.push(a),
        Some(Mismatch::Warning(w)) => warnings.push(w),
        None => {}
    }
    if let Some(st) = &unit_state {
        if let Some(w) = st.override_warning(&s.unit) {
            warnings.push(w);
        }
        // A mail server that is not running needs the admin, whatever the reason; one that
        // Restart= keeps bringing back is crash-looping (issue #25: it may be "active" at the
        // moment of asking).
        if st.n_restarts > 0 {
            attention.push(format!(
                "{unit} crashed and was restarted {} time(s) by Restart= since it was last started: see `journalctl -u {unit}`; `stalwart-upgrade rollback` goes back to the previous release (`systemctl restart {unit}` resets the count once it is fixed)",
                st.n_restarts,
                unit = s.unit
            ));
        }
        if st.active_state != crate::os::systemd::ActiveState::Active {
            attention.push(format!(
                "{unit} is {}/{}: the mail server is not running; see `journalctl -u {unit}`, then `systemctl start {unit}`",
                st.active_state,
                st.sub_state,
                unit = s.unit
            ));
        } else if let Some(v) = binary_version
            .as_deref()
            .and_then(|v| v.parse::<crate::server::version::Version>().ok())
            .filter(crate::server::lines::is_json)
        {
            // 0.16 answers /healthz/ready in bootstrap and recovery mode too: only its session
            // tells (health::server_mode).
            let path = crate::server::lines::server_config_path(s, &v);
            let env = crate::server::serverenv::ServerEnv::of_unit(&s.unit);
            let cfg = crate::server::serverconfig::ServerConfig::load_with_env(&path, &env).ok();
            let base = crate::server::health::base_url(s, cfg.as_ref());
            if crate::server::health::server_mode(&base)
                == Some(crate::server::health::Mode::RecoveryOrBootstrap)
            {
                let why = if !path.exists() {
                    format!(
                        "{} is missing, so it runs upstream's setup wizard",
                        path.display()
                    )
                } else {
                    format!(
                        "STALWART_RECOVERY_MODE is set in its environment (e.g. {})",
                        s.server_env.display()
                    )
                };
                attention.push(format!(
                    "{} answers in bootstrap or recovery mode ({why}): it takes no mail; fix that, then `systemctl restart {}`",
                    s.unit, s.unit
                ));
            }
        }
    }
    let snaps = crate::store::snapshot::Snapshots::new(&s.snapshot_dir());
    let manifests = snaps.list().unwrap_or_default();
    // Data a rollback or an undo set aside (what a newer version ran on, mail it took included)
    // is never deleted by the helper: said here, with its size, until the admin removes it.
    let set_aside = snaps.set_aside().unwrap_or_default();
    let running = binary_version
        .as_deref()
        .and_then(|v| v.parse::<crate::server::version::Version>().ok());
    for a in &set_aside {
        warnings.push(a.describe(running.as_ref()));
    }
    let snapshots = manifests.into_iter().map(|m| m.id).collect();
    Ok(Status {
        unit: s.unit.clone(),
        unit_state,
        unit_error,
        binary: binary.display().to_string(),
        binary_version,
        package_version: package_version(),
        last_transaction: last,
        unfinished,
        failed_upgrade: failed,
        kept_releases: state.releases()?.iter().map(|v| v.to_string()).collect(),
        snapshots,
        set_aside,
        probation: crate::flows::probation::current(&state),
        policy: crate::policy::state(s, ctx.allow.as_deref())
            .ok()
            .and_then(|p| serde_json::to_value(p).ok()),
        attention,
        warnings,
    })
}

enum Mismatch {
    Attention(String),
    Warning(String),
}

/// The package's server binary (the payload) is not what runs. The package hooks never leave
/// apt or dnf failing for a refusal before downtime (a minor line not approved, a cluster node,
/// a health URL the server does not answer): they print a banner and the old version goes on
/// running, so monitoring has to learn it here.
fn package_mismatch(
    s: &crate::config::Settings,
    running: Option<&str>,
    failed: Option<&FailedUpgrade>,
    last: Option<&Entry>,
) -> Option<Mismatch> {
    let payload = s.payload_dir.join("stalwart");
    if !payload.is_file() {
        return None;
    }
    let packaged = crate::server::version::of_binary(&payload)
        .ok()?
        .to_string();
    if Some(packaged.as_str()) == running {
        return None;
    }
    let running = running.unwrap_or("an unknown version");
    if failed.is_some_and(|f| f.version.to_string() == packaged) {
        return None; // said above: the failed upgrade
    }
    let rolled_back_by_hand = last.is_some_and(|l| {
        l.kind == crate::engine::journal::TxKind::Rollback
            && l.ending == Some(Ending::Committed)
            && l.from.to_string() == packaged
    });
    if rolled_back_by_hand {
        return Some(Mismatch::Warning(format!(
            "the package carries {packaged} but {running} runs since your rollback; `stalwart-upgrade hold` keeps the package manager from bringing {packaged} back unattended"
        )));
    }
    Some(Mismatch::Attention(format!(
        "the package carries {packaged} ({}) but {running} runs: its upgrade did not happen (refused before any downtime; the reason is in the package manager's log); fix it, then run `stalwart-upgrade upgrade --to {}`",
        payload.display(),
        payload.display()
    )))
}

/// The installed `stalwart` package's version, from dpkg or rpm, if either knows it.
fn package_version() -> Option<String> {
    let try_cmd = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    try_cmd("dpkg-query", &["-W", "-f=${Version}", "stalwart"])
        .or_else(|| try_cmd("rpm", &["-q", "--qf", "%{VERSION}-%{RELEASE}", "stalwart"]))
}

pub fn run(ctx: &Context, json: bool) -> Result<i32, Error> {
    let st = collect(ctx)?;
    if json {
        let s = serde_json::to_string_pretty(&st).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{s}");
    } else {
        print!("{st}");
    }
    Ok(if st.attention.is_empty() {
        exit::OK
    } else {
        exit::ATTENTION
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.unit_state, &self.unit_error) {
            (Some(u), _) => writeln!(
                f,
                "unit:         {} {}/{} (pid {})",
                self.unit, u.active_state, u.sub_state, u.main_pid
            )?,
            (None, Some(e)) => writeln!(f, "unit:         {} (unknown: {e})", self.unit)?,
            _ => {}
        }
        writeln!(
            f,
            "running:      {} ({})",
            self.binary_version.as_deref().unwrap_or("unknown"),
            self.binary
        )?;
        writeln!(
            f,
            "package:      {}",
            self.package_version
                .as_deref()
                .unwrap_or("not installed by a package")
        )?;
        match &self.last_transaction {
            Some(e) => writeln!(f, "last:         {e}")?,
            None => writeln!(f, "last:         no transaction yet")?,
        }
        writeln!(f, "releases:     {}", or_none(&self.kept_releases))?;
        writeln!(f, "snapshots:    {}", or_none(&self.snapshots))?;
        if let Some(p) = &self.policy {
            let list = |v: &serde_json::Value| match v.as_array() {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "none".into(),
            };
            writeln!(
                f,
                "policy:       unattended: {}; hold: {}; approvals: {} (`stalwart-upgrade policy`)",
                list(&p["unattended"]),
                p["hold_line"].as_str().unwrap_or("none"),
                list(&p["approvals"])
            )?;
        }
        if let Some(p) = &self.probation {
            let left = p.until_unix_ms.saturating_sub(crate::os::clock::now_ms()) / 1000;
            writeln!(
                f,
                "probation:    {} for {left} s more: a crash meanwhile rolls it back to {}",
                p.to, p.from
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "WARNING:      {w}")?;
        }
        for a in &self.attention {
            writeln!(f, "ATTENTION:    {a}")?;
        }
        if self.attention.is_empty() {
            writeln!(f, "state:        ok")?;
        }
        Ok(())
    }
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
