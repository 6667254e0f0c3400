//! The real [`Engine`] of the package hooks: the engine's recover/upgrade, plus what only the
//! packages do: the first install (user, directories, binary, config, unit), the adoption of an
//! install.sh installation, and purge.

use super::Engine;
use crate::policy::{self, HoldPaths, Verdict};
use crate::state::StateDir;
use crate::swap::{self, SwapError};
use crate::systemd::Systemd;
use crate::transaction::{RecoverReport, Report};
use crate::version::Version;
use crate::{health, serverconfig::ServerConfig, Context, Error, UpgradeRequest};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The service user (upstream's install.sh: `useradd stalwart -s /usr/sbin/nologin -M -r -U`).
pub const USER: &str = "stalwart";
/// Marker in the state dir: this installation is managed by the packages (set by the first
/// install or the adoption), so an rpm %posttrans or a dpkg reinstall does not adopt it again.
pub const MANAGED_MARKER: &str = "package-managed";
/// Env and file through which the admin asks purge to remove configuration and data too.
pub const PURGE_DATA_ENV: &str = "STALWART_PURGE_DATA";
pub const PURGE_DATA_FILE: &str = "/etc/stalwart-upgrade/purge-data";

pub struct System;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        Error::Swap(SwapError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

fn command_failed(what: &str, detail: String) -> Error {
    Error::Command {
        what: what.to_string(),
        detail,
    }
}

/// Runs a command; Ok(stdout) on success.
fn run(cmd: &mut Command) -> Result<String, Error> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| command_failed(&what, e.to_string()))?;
    if !out.status.success() {
        return Err(command_failed(
            &what,
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Engine for System {
    fn recover(&self, ctx: &Context) -> Result<RecoverReport, Error> {
        crate::transaction::recover(ctx)
    }

    fn gate(&self, ctx: &Context, to: &Version) -> Result<(), Error> {
        let s = &ctx.settings;
        let current = s.server_binary();
        if !current.is_file() {
            return Ok(()); // first install: nothing to judge against
        }
        let from = swap::binary_version(&current)?;
        if &from == to {
            return Ok(());
        }
        let state = StateDir::open(&s.state_dir)?;
        if state.failed()?.is_some_and(|f| &f.version == to) {
            // postinst/%posttrans reports it (PreviouslyFailed) without touching the server.
            return Ok(());
        }
        match policy::verdict_for(s, &from, to, ctx.unattended)? {
            Verdict::Allowed => Ok(()),
            Verdict::NeedsApproval { message, .. } | Verdict::Refused { message } => {
                Err(Error::Refused(message))
            }
        }
    }

    fn upgrade(&self, ctx: &Context, req: &UpgradeRequest) -> Result<Report, Error> {
        crate::upgrade::run(ctx, req)
    }

    fn payload_version(&self, ctx: &Context) -> Result<Version, Error> {
        Ok(swap::binary_version(
            &ctx.settings.payload_dir.join("stalwart"),
        )?)
    }

    fn package_version(&self) -> Option<String> {
        // dpkg exports the package a maintainer script belongs to; its status already carries the
        // version being configured.
        let pkg = std::env::var("DPKG_MAINTSCRIPT_PACKAGE").unwrap_or_else(|_| "stalwart".into());
        run(Command::new("dpkg-query").args(["-W", "-f=${Version}", &pkg]))
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn server_installed(&self, ctx: &Context) -> bool {
        ctx.settings.server_binary().is_file()
    }

    fn managed(&self, ctx: &Context) -> bool {
        ctx.settings.state_dir.join(MANAGED_MARKER).exists()
    }

    fn install_fresh(&self, ctx: &Context) -> Result<Vec<String>, Error> {
        install_fresh(self, ctx)
    }

    fn adopt(&self, ctx: &Context) -> Result<Vec<String>, Error> {
        adopt(ctx)
    }

    fn systemd_running(&self) -> bool {
        // sd_booted(3).
        Path::new("/run/systemd/system").is_dir()
    }

    fn daemon_reload(&self, _ctx: &Context) -> Result<(), Error> {
        Ok(Systemd::connect()?.daemon_reload()?)
    }

    fn stop(&self, ctx: &Context) -> Result<(), Error> {
        let s = &ctx.settings;
        Ok(Systemd::connect()?.stop(&s.unit, s.stop_timeout())?)
    }

    fn start(&self, ctx: &Context) -> Result<(), Error> {
        let s = &ctx.settings;
        Ok(Systemd::connect()?.start(&s.unit, s.start_timeout())?)
    }

    fn purge_data_requested(&self) -> bool {
        let env = std::env::var(PURGE_DATA_ENV).unwrap_or_default();
        matches!(env.as_str(), "1" | "yes" | "true") || Path::new(PURGE_DATA_FILE).exists()
    }

    fn purge(&self, ctx: &Context, with_data: bool) -> Result<Vec<String>, Error> {
        purge(ctx, with_data, &HoldPaths::system())
    }
}

fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// The `stalwart` system user and group, as install.sh makes them.
fn ensure_user(prefix: &Path) -> Result<Option<String>, Error> {
    if user_exists(USER) {
        return Ok(None);
    }
    let nologin = ["/usr/sbin/nologin", "/sbin/nologin"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/bin/false");
    run(Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home", "--home-dir"])
        .arg(prefix)
        .args(["--shell", nologin, USER]))?;
    Ok(Some(format!("created the system user and group {USER}")))
}

/// Creates `dir` (0750, owned by the service user) if it does not exist; an existing one is the
/// admin's and is left alone.
fn ensure_server_dir(dir: &Path, uid: u32, gid: u32) -> Result<bool, Error> {
    if dir.exists() {
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(io_err(dir))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_err(dir))?;
    Ok(true)
}

/// First install: user, PREFIX/{etc,data,logs}, the payload (checksum verified) as PREFIX/bin,
/// a config from the server's own `--init` when none exists, the hold for the installed line,
/// the unit enabled and started.
fn install_fresh(sys: &System, ctx: &Context) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    let payload = s.payload_dir.join("stalwart");
    let sums = s.payload_dir.join("SHA256SUMS");
    let sha = swap::sha256_file(&payload)?;
    swap::verify_sha256sums(&payload, &sums, &sha)?;
    let version = swap::binary_version(&payload)?;

    done.extend(ensure_user(&s.prefix)?);
    let user = nix::unistd::User::from_name(USER)
        .ok()
        .flatten()
        .ok_or_else(|| command_failed("getpwnam", format!("user {USER} does not exist")))?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    if !s.prefix.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&s.prefix)
            .map_err(io_err(&s.prefix))?;
    }
    for sub in ["etc", "data", "logs"] {
        let d = s.prefix.join(sub);
        if ensure_server_dir(&d, uid, gid)? {
            done.push(format!("created {} (owner {USER}, 0750)", d.display()));
        }
    }
    StateDir::open(&s.state_dir)?;

    // PREFIX/bin is the helper's: built as bin.new, then renamed into place.
    let bin = s.bin_dir();
    let staged = s.staged_dir();
    swap::remove_dir(&staged)?;
    if bin.exists() {
        swap::hand_over(&swap::stage(&bin, &staged, &payload)?)?;
        swap::exchange(&bin, &staged)?;
        swap::remove_dir(&staged)?;
    } else {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&staged)
            .map_err(io_err(&staged))?;
        swap::copy_file_durable(&payload, &staged.join("stalwart"), 0o755)?;
        crate::state::fsync_dir(&staged).map_err(io_err(&staged))?;
        std::fs::rename(&staged, &bin).map_err(io_err(&bin))?;
        crate::state::fsync_dir(&s.prefix).map_err(io_err(&s.prefix))?;
    }
    done.push(format!(
        "installed stalwart {version} as {} (sha256 {sha})",
        s.server_binary().display()
    ));

    let config = s.server_config_path();
    let mut may_start = true;
    if config.exists() {
        done.push(format!(
            "kept the existing server config {}",
            config.display()
        ));
        match snapshot_kept_data(ctx, &config, &version) {
            Ok(Some(line)) => done.push(line),
            Ok(None) => {}
            Err(e) => {
                may_start = false;
                done.push(format!(
                    "NOT STARTED: the data kept from an earlier installation could not be snapshotted ({e}), and {version} may migrate it at its first start, so it was neither enabled nor started; back the data up, then run `systemctl enable --now {}`",
                    s.unit
                ));
            }
        }
    } else {
        done.extend(init_config(ctx, &config, uid, gid));
    }

    if s.policy.manage_holds {
        match policy::after_upgrade(s, &version) {
            Ok(_) => done.push(format!(
                "holds: the package manager stays on the {} line (`stalwart-upgrade policy`)",
                version.line()
            )),
            Err(e) => done.push(format!("warning: could not write the hold: {e}")),
        }
    }

    if may_start {
        done.extend(enable_and_start(sys, ctx, &config));
    }
    mark_managed(ctx, &format!("installed {version}"))?;
    Ok(done)
}

/// Enabled like %systemd_post / deb-systemd-helper would (works without a running systemd), and
/// started when systemd runs.
fn enable_and_start(sys: &System, ctx: &Context, config: &Path) -> Vec<String> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    if let Err(e) = run(Command::new("systemctl").args(["enable", "--quiet", &s.unit])) {
        done.push(format!("warning: could not enable {}: {e}", s.unit));
    }
    if sys.systemd_running() {
        done.push(start_first(ctx, config));
    } else {
        done.push(format!(
            "systemd is not running: {} is enabled and starts at the next boot",
            s.unit
        ));
    }
    done
}

/// A first install over data an earlier installation left (`purge` keeps it by default, or a
/// hand-made installation without bin/) starts the packaged binary on data another version wrote,
/// and a newer binary migrates it at that first start (facts: "Migration runs automatically at
/// start"): that data is snapshotted first. Ok(None) when there is no data to keep.
fn snapshot_kept_data(
    ctx: &Context,
    config: &Path,
    version: &crate::version::Version,
) -> Result<Option<String>, Error> {
    use crate::serverconfig::StoreKind;
    let cfg = ServerConfig::load(config)?;
    let non_empty = |p: &Path| match std::fs::read_dir(p) {
        Ok(mut rd) => rd.next().is_some(),
        Err(_) => p.is_file(),
    };
    let has_data = cfg.stores.iter().any(|st| match &st.kind {
        StoreKind::RocksDb { path } | StoreKind::Sqlite { path } | StoreKind::Fs { path } => {
            non_empty(path)
        }
        _ => true,
    });
    if !has_data {
        return Ok(None);
    }
    let snapshots = crate::snapshot::Snapshots::new(&ctx.settings.snapshot_dir());
    let meta = crate::snapshot::SnapshotMeta {
        server_version: version.clone(),
        target_version: None,
        class: None,
        server_binary: ctx.settings.server_binary(),
    };
    let m = snapshots.create(&cfg, &meta)?;
    snapshots.hash(&m.id)?;
    Ok(Some(format!(
        "snapshotted the data kept from an earlier installation before {version} first starts on it: snapshot {id} (`stalwart-upgrade snapshot restore {id}` puts it back)",
        id = m.id
    )))
}

/// The server writes its own default config (0.15: `--init PREFIX`, which also prints the
/// generated administrator password); 0.16 has no --init and starts its setup wizard when the
/// config is missing.
fn init_config(ctx: &Context, config: &Path, uid: u32, gid: u32) -> Vec<String> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    match run(Command::new(s.server_binary())
        .arg("--init")
        .arg(&s.prefix)
        .env_remove("CONFIG_PATH"))
    {
        Ok(stdout) => {
            for l in stdout.lines().filter(|l| !l.trim().is_empty()) {
                done.push(format!("stalwart --init: {l}"));
            }
        }
        Err(e) => done.push(format!(
            "warning: `{} --init {}` failed ({e}); write {} yourself, then `systemctl start {}`",
            s.server_binary().display(),
            s.prefix.display(),
            config.display(),
            s.unit
        )),
    }
    // --init ran as root: hand what it wrote to the service user (it rewrites its config).
    for p in [
        config.to_path_buf(),
        s.prefix.join("data"),
        s.prefix.join("logs"),
    ] {
        if p.exists() {
            let _ = std::os::unix::fs::chown(&p, Some(uid), Some(gid));
        }
    }
    if config.exists() {
        let _ = std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o640));
        done.push(format!("created the server config {}", config.display()));
    }
    done
}

/// Starts the unit on first install and waits for the health gate; a failure is reported, not
/// fatal (like debhelper's `deb-systemd-invoke start ... || true`).
fn start_first(ctx: &Context, config: &Path) -> String {
    let s = &ctx.settings;
    let r = (|| -> Result<String, Error> {
        let sys = Systemd::connect()?;
        sys.start(&s.unit, s.start_timeout())?;
        let cfg = ServerConfig::load(config).ok();
        let h = health::gate(&sys, s, cfg.as_ref())?;
        Ok(format!(
            "started {}; ready after {} ms",
            s.unit, h.ready_after_ms
        ))
    })();
    r.unwrap_or_else(|e| {
        format!(
            "warning: {} did not come up healthy: {e}; see `journalctl -u {}`",
            s.unit, s.unit
        )
    })
}

fn mark_managed(ctx: &Context, what: &str) -> Result<(), Error> {
    StateDir::open(&ctx.settings.state_dir)?;
    let p = ctx.settings.state_dir.join(MANAGED_MARKER);
    crate::state::write_atomic(
        &p,
        format!("{what} at {}\n", crate::state::now()).as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// An installation made by upstream's install.sh (binary, config, data, unit in
/// /etc/systemd/system): nothing is touched; the packages take over upgrading it.
fn adopt(ctx: &Context) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    let version = swap::binary_version(&s.server_binary())
        .map(|v| v.to_string())
        .unwrap_or_else(|e| format!("unknown version ({e})"));
    done.push(format!(
        "adopting the existing installation in {}: stalwart {version}; configuration {} and data left untouched",
        s.prefix.display(),
        s.server_config_path().display()
    ));
    let local_unit = Path::new("/etc/systemd/system").join(&s.unit);
    if local_unit.is_file() && !local_unit.is_symlink() {
        done.push(format!(
            "{} (written by install.sh) overrides the package's unit; keep it, or remove it and run `systemctl daemon-reload` to use the package's sandboxed unit",
            local_unit.display()
        ));
    }
    mark_managed(ctx, &format!("adopted {version}"))?;
    done.push("from now on `apt upgrade`/`dnf upgrade` upgrade it as a transaction with rollback (see `stalwart-upgrade status`)".into());
    Ok(done)
}

/// dpkg purge: the binary directory and the helper's state (journal, history, kept releases,
/// snapshots) and our holds go; configuration, data and logs only when asked for.
fn purge(ctx: &Context, with_data: bool, holds: &HoldPaths) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    let mut remove = vec![s.bin_dir(), s.staged_dir(), s.state_dir.clone()];
    let data = [
        s.prefix.join("etc"),
        s.prefix.join("data"),
        s.prefix.join("logs"),
    ];
    if with_data {
        remove.extend(data.iter().cloned());
    }
    for p in &remove {
        if p.exists() {
            std::fs::remove_dir_all(p).map_err(io_err(p))?;
            done.push(format!("removed {}", p.display()));
        }
    }
    if let Err(e) = policy::remove_holds(holds) {
        done.push(format!("warning: could not remove the holds: {e}"));
    }
    if with_data {
        // Only if nothing else is left in it.
        if std::fs::remove_dir(&s.prefix).is_ok() {
            done.push(format!("removed {}", s.prefix.display()));
        }
    } else {
        let kept: Vec<String> = data
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !kept.is_empty() {
            done.push(format!(
                "kept {} (to remove them too: create {PURGE_DATA_FILE} or set {PURGE_DATA_ENV}=yes, then purge again, or delete them by hand)",
                kept.join(", ")
            ));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_in(root: &Path) -> Context {
        Context::new(crate::config::Settings {
            prefix: root.join("opt/stalwart"),
            state_dir: root.join("var/lib/stalwart-upgrade"),
            payload_dir: root.join("usr/lib/stalwart"),
            ..Default::default()
        })
    }

    fn populate(root: &Path) -> Context {
        let ctx = ctx_in(root);
        for d in ["bin", "etc", "data", "logs"] {
            std::fs::create_dir_all(ctx.settings.prefix.join(d)).unwrap();
        }
        std::fs::write(ctx.settings.prefix.join("etc/config.toml"), "x").unwrap();
        std::fs::write(ctx.settings.prefix.join("data/db"), "x").unwrap();
        std::fs::create_dir_all(ctx.settings.state_dir.join("history")).unwrap();
        ctx
    }

    #[test]
    fn purge_keeps_config_and_data_by_default() {
        let t = tempfile::tempdir().unwrap();
        let ctx = populate(t.path());
        let holds = HoldPaths::for_root(t.path());
        let lines = purge(&ctx, false, &holds).unwrap();
        let p = &ctx.settings.prefix;
        assert!(!p.join("bin").exists());
        assert!(!ctx.settings.state_dir.exists());
        assert!(p.join("etc/config.toml").exists());
        assert!(p.join("data/db").exists());
        assert!(lines.iter().any(|l| l.contains("kept")), "{lines:?}");
        // Idempotent.
        purge(&ctx, false, &holds).unwrap();
    }

    #[test]
    fn purge_with_data_removes_everything_it_owns() {
        let t = tempfile::tempdir().unwrap();
        let ctx = populate(t.path());
        purge(&ctx, true, &HoldPaths::for_root(t.path())).unwrap();
        assert!(!ctx.settings.prefix.exists());
        assert!(!ctx.settings.state_dir.exists());
    }

    #[test]
    fn purge_with_data_keeps_a_prefix_with_foreign_files() {
        let t = tempfile::tempdir().unwrap();
        let ctx = populate(t.path());
        std::fs::write(ctx.settings.prefix.join("README.admin"), "mine").unwrap();
        purge(&ctx, true, &HoldPaths::for_root(t.path())).unwrap();
        assert!(ctx.settings.prefix.join("README.admin").exists());
        assert!(!ctx.settings.prefix.join("data").exists());
    }

    #[test]
    fn server_dirs_are_created_private_and_existing_ones_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let d = t.path().join("data");
        assert!(ensure_server_dir(&d, uid, gid).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o750);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!ensure_server_dir(&d, uid, gid).unwrap());
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn managed_marker() {
        let t = tempfile::tempdir().unwrap();
        let ctx = ctx_in(t.path());
        assert!(!System.managed(&ctx));
        std::fs::create_dir_all(&ctx.settings.state_dir).unwrap();
        std::fs::set_permissions(
            &ctx.settings.state_dir,
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        mark_managed(&ctx, "test").unwrap();
        assert!(System.managed(&ctx));
    }
}
