//! The real [`Engine`] of the package hooks: the engine's recover/upgrade, plus what only the
//! packages do: the first install (user, directories, binary, config, unit), the adoption of an
//! install.sh installation, and purge.

use super::Engine;
use crate::engine::ending::Report;
use crate::engine::transaction::RecoverReport;
use crate::os::fsutil::Dir;
use crate::os::systemd::Systemd;
use crate::policy::{self, Admission, HoldPaths, Verdict};
use crate::server::credentials;
use crate::server::version::Version;
use crate::store::state::StateDir;
use crate::store::swap::{self, SwapError};
use crate::{server::health, server::serverconfig::ServerConfig, Context, Error, UpgradeRequest};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
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
        crate::flows::probation::recover(ctx)
    }

    fn gate(&self, ctx: &Context, to: &Version) -> Result<(), Error> {
        let s = &ctx.settings;
        let current = s.server_binary();
        if !current.is_file() {
            return Ok(()); // first install: nothing to judge against
        }
        let from = crate::server::version::of_binary(&current)?;
        let state = StateDir::open(&s.state_dir)?;
        let ask = (ctx.unattended, ctx.allow.as_deref());
        match policy::admit(s, &state, &from, to, false, ask)? {
            // postinst/%posttrans reports it (PreviouslyFailed) without touching the server.
            Admission::PreviouslyFailed(_) | Admission::Decided(Verdict::Allowed) => Ok(()),
            Admission::Decided(
                Verdict::NeedsApproval { message, .. } | Verdict::Refused { message },
            ) => Err(Error::Refused(message)),
        }
    }

    fn upgrade(&self, ctx: &Context, req: &UpgradeRequest) -> Result<Report, Error> {
        crate::flows::upgrade::run(ctx, req)
    }

    fn payload_version(&self, ctx: &Context) -> Result<Version, Error> {
        Ok(crate::server::version::of_binary(
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

    fn migrate_layout(&self, ctx: &Context) -> Vec<String> {
        let s = &ctx.settings;
        let mut done: Vec<String> = move_legacy_env(s).into_iter().collect();
        // A >= 0.16 unit's drop-in names the env file: rewritten when this version's differs.
        if let Ok(v) = crate::server::version::of_binary(&s.server_binary()) {
            match crate::store::crossing::write_unit_dropin(s, &v) {
                Ok(true) => {
                    if units_controllable(&s.unit).is_ok() {
                        if let Err(e) = Systemd::connect().and_then(|sys| sys.daemon_reload()) {
                            done.push(format!("warning: systemctl daemon-reload failed: {e}"));
                        }
                    }
                    done.push(format!(
                        "{} now reads its environment from {} (drop-in {})",
                        s.unit,
                        s.server_env.display(),
                        crate::store::crossing::paths(s).dropin.display()
                    ));
                }
                Ok(false) => {}
                Err(e) => done.push(format!("warning: the unit's drop-in: {e}")),
            }
        }
        done
    }

    fn foreign_installation(&self, ctx: &Context) -> Option<String> {
        fhs_installation(ctx)
    }

    fn relocate(
        &self,
        ctx: &Context,
    ) -> Result<Option<(crate::config::Settings, Vec<String>)>, Error> {
        relocate_fhs(ctx)
    }

    fn units_controllable(&self, ctx: &Context) -> Result<(), String> {
        units_controllable(&ctx.settings.unit)
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

    fn drop_holds(&self, _ctx: &Context) -> Result<Vec<String>, Error> {
        let paths = HoldPaths::system();
        let had: Vec<String> = policy::hold_files(&paths)?
            .into_iter()
            .filter(|h| h.ours_present)
            .map(|h| h.path.display().to_string())
            .collect();
        policy::remove_holds(&paths)?;
        Ok(had
            .into_iter()
            .map(|p| format!("removed the hold in {p}"))
            .collect())
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

/// Creates `name` in `prefix` (0750, owned by the service user) if it does not exist, through
/// the prefix's descriptor (owner and mode set on the new directory's own descriptor); an
/// existing one is the admin's and is left alone.
fn ensure_server_dir(prefix: &Dir, name: &str, uid: u32, gid: u32) -> Result<bool, Error> {
    if prefix.stat(name).map_err(swap::SwapError::from)?.is_some() {
        return Ok(false);
    }
    let d = prefix
        .create_dir(name, 0o750)
        .map_err(swap::SwapError::from)?;
    d.set_owner(uid, gid).map_err(swap::SwapError::from)?;
    Ok(true)
}

/// The install prefix, created root's 0755 when missing.
fn open_prefix(prefix: &Path) -> Result<Dir, Error> {
    if std::fs::symlink_metadata(prefix).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(prefix)
            .map_err(io_err(prefix))?;
    }
    Ok(Dir::open(prefix).map_err(swap::SwapError::from)?)
}

/// First install: user, PREFIX/{etc,data,logs}, the payload (checksum verified) as PREFIX/bin,
/// a config from the server's own `--init` when none exists, the hold for the installed line,
/// the unit enabled and started.
fn install_fresh(sys: &System, ctx: &Context) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    let payload = s.payload_dir.join("stalwart");
    let sums = s.payload_dir.join("SHA256SUMS");
    let program = crate::os::child::Program::open(&payload).map_err(swap::SwapError::from)?;
    let sha = program.sha256().map_err(swap::SwapError::from)?;
    swap::verify_sha256sums(&payload, &sums, &sha)?;
    if let Some(b) = crate::server::webui::bundled(&s.payload_dir) {
        swap::verify_sha256sums(&b, &sums, &swap::sha256_file(&b)?)?;
    }
    let version = crate::server::version::of_program(&program)?;

    done.extend(ensure_user(&s.prefix)?);
    let user = nix::unistd::User::from_name(USER)
        .ok()
        .flatten()
        .ok_or_else(|| command_failed("getpwnam", format!("user {USER} does not exist")))?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let prefix = open_prefix(&s.prefix)?;
    for sub in ["etc", "data", "logs"] {
        if ensure_server_dir(&prefix, sub, uid, gid)? {
            done.push(format!(
                "created {} (owner {USER}, 0750)",
                s.prefix.join(sub).display()
            ));
        }
    }
    StateDir::open(&s.state_dir)?;

    // PREFIX/bin is the helper's: built as bin.new, then renamed into place.
    let bin = s.bin_dir();
    let staged = s.staged_dir();
    swap::remove_dir(&staged)?;
    if prefix.stat("bin").map_err(swap::SwapError::from)?.is_some() {
        swap::hand_over(&swap::stage(&bin, &staged, &payload)?)?;
        swap::exchange(&bin, &staged)?;
        swap::remove_dir(&staged)?;
    } else {
        swap::fresh_bin(&staged, &payload)?;
        swap::rename_dir(&staged, &bin)?;
    }
    done.push(format!(
        "installed stalwart {version} as {} (sha256 {sha})",
        s.server_binary().display()
    ));

    let json = crate::server::lines::is_json(&version);
    let config = if json {
        // A fresh >= 0.16 has no config.json yet (upstream's setup wizard writes it).
        s.config_json_path()
    } else {
        s.server_config_path()
    };
    if json {
        // The packaged unit runs config.toml; >= 0.16 gets its drop-in (config.json, env file).
        crate::store::crossing::write_unit_dropin(s, &version)?;
    }
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
    } else if json {
        done.extend(init_016(ctx, &config)?);
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

/// May package scripts start and stop `unit`? Err(why not):
/// - systemd must be the running init (sd_booted(3): /run/systemd/system);
/// - not inside a chroot: with /run bind-mounted from the host, the bus reaches the host's
///   systemd, whose units are not this root's (`/` is not PID 1's root then);
/// - Debian's policy-rc.d (invoke-rc.d(8)) must not forbid it: exit 101 means "action
///   forbidden", which image builds and containers set.
fn units_controllable(unit: &str) -> Result<(), String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err("systemd is not running (chroot or image build)".into());
    }
    if in_chroot() {
        return Err("this runs in a chroot (its / is not the running system's), so the running system's services are not touched".into());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    if policy.is_file() {
        let mut c = Command::new(policy);
        crate::os::child::clear_env(&mut c);
        if let Ok(st) = c.arg(unit).arg("start").status() {
            if st.code() == Some(101) {
                return Err(format!(
                    "{} forbids starting and stopping services (exit 101)",
                    policy.display()
                ));
            }
        }
    }
    Ok(())
}

/// Like systemd-detect-virt --chroot: our root is not the root of PID 1.
fn in_chroot() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/"), std::fs::metadata("/proc/1/root")) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

/// Enabled like %systemd_post / deb-systemd-helper would (works without a running systemd), and
/// started when systemd runs.
fn enable_and_start(sys: &System, ctx: &Context, config: &Path) -> Vec<String> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    if let Err(e) = run(Command::new("systemctl").args(["enable", "--quiet", &s.unit])) {
        done.push(format!("warning: could not enable {}: {e}", s.unit));
    }
    match sys.units_controllable(ctx) {
        Ok(()) => done.push(start_first(ctx, config)),
        Err(why) => done.push(format!(
            "{why}: {} is enabled and starts at the next boot",
            s.unit
        )),
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
    version: &crate::server::version::Version,
) -> Result<Option<String>, Error> {
    use crate::server::serverconfig::StoreKind;
    let env = crate::server::serverenv::ServerEnv::of_unit(&ctx.settings.unit);
    let cfg = ServerConfig::load_with_env(config, &env)?;
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
    let snapshots =
        crate::store::snapshot::Snapshots::for_settings(&ctx.settings).with_server_env(env);
    let meta = crate::store::snapshot::SnapshotMeta {
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

/// The server writes its own default config (0.15: `--init PREFIX`), run as the service user
/// (so what it writes is theirs without any chown by root, and it can write nothing else). Upstream
/// prints the generated administrator password on stderr (measured with the real 0.15.5), so
/// both streams are kept for the admin. 0.16 has no --init and starts its setup wizard when the
/// config is missing.
fn init_config(ctx: &Context, config: &Path, uid: u32, gid: u32) -> Vec<String> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    let ran = crate::os::child::Program::open(&s.server_binary())
        .map_err(|e| command_failed("open the server binary", e.to_string()))
        .and_then(|p| {
            let mut c = p.command(Some((uid, gid)));
            c.arg("--init").arg(&s.prefix).current_dir("/");
            run_both(&mut c)
        });
    match ran {
        Ok(text) => {
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                done.push(format!("stalwart --init: {l}"));
            }
            // Upstream prints the administrator's password once: kept root-only, where the
            // web-admin refresh finds it.
            let pw = text
                .split("with password '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .filter(|p| !p.is_empty());
            if let Some(pw) = pw {
                let cred = Path::new(credentials::CREDENTIALS_FILE);
                if !cred.exists() {
                    match crate::store::state::write_atomic(cred, format!("admin:{pw}\n").as_bytes(), 0o600) {
                        Ok(()) => done.push(format!(
                            "the administrator's credential is kept in {} (root-only), for the web-admin refresh",
                            cred.display()
                        )),
                        Err(e) => done.push(format!("warning: could not keep the credential in {}: {e}", cred.display())),
                    }
                }
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
    // The config holds the admin's password hash: not for others to read.
    if let Ok((dir, name)) = Dir::open_parent(config) {
        if let Ok((f, _)) = dir.open_file(&name) {
            let _ = crate::os::fsutil::set_mode(&f, config, 0o640);
            done.push(format!("created the server config {}", config.display()));
        }
    }
    done
}

/// 0.16 has no `--init`: the package writes what upstream's setup wizard would write, so the
/// server starts in normal mode on a persistent store under the package's layout: config.json
/// with RocksDB (upstream's default store) in PREFIX/data, and the administrator pinned in
/// the server's env file (`Settings::server_env`, root:stalwart 0640 as install.sh makes its own; 0.16 reads
/// `STALWART_RECOVERY_ADMIN=user:pass` in every mode). With `[install] bootstrap = true` no
/// config.json is written and upstream's wizard runs instead.
fn init_016(ctx: &Context, config: &Path) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(swap::SwapError::from(e));
    let mut done = Vec::new();
    let env_path = s.server_env.clone();
    let env_err = |e: crate::server::serverenv::EnvFileError| {
        command_failed("the server's env file", e.to_string())
    };
    let mut admin = None;
    if crate::server::serverenv::read_server_env(s)
        .map_err(env_err)?
        .is_none()
    {
        let mut text = String::from(
            "# Environment of the Stalwart server (read by systemd for stalwart.service; root:stalwart 0640).\n\
             # STALWART_RECOVERY_ADMIN is an administrator in every mode: log in with it at\n\
             # http://HOST:8080/admin, and make a permanent administrator there.\n\
             #STALWART_HOSTNAME=mail.example.com\n\
             #STALWART_PUBLIC_URL=https://mail.example.com\n",
        );
        if !s.install.bootstrap {
            let pw = credentials::random_password(24)
                .map_err(|e| command_failed("read /dev/urandom", e.to_string()))?;
            text.push_str(&format!("STALWART_RECOVERY_ADMIN=admin:{pw}\n"));
            admin = Some(pw);
        }
        crate::server::serverenv::write_server_env(s, text.as_bytes()).map_err(env_err)?;
        done.push(format!(
            "created {} (root:{USER}, 0640)",
            env_path.display()
        ));
    }
    if s.install.bootstrap {
        done.push(format!(
            "bootstrap mode ([install] bootstrap = true): {} is not written; the server starts upstream's setup wizard at http://{}:8080/admin with a temporary password it prints once (`journalctl -u {} | grep -A8 'bootstrap mode'`); the wizard writes the config, then restart the server",
            config.display(),
            hostname(),
            s.unit
        ));
        return Ok(done);
    }
    let store = serde_json::json!({"@type": "RocksDb", "path": s.prefix.join("data")});
    let (dir, name) = Dir::open_parent(config).map_err(fs)?;
    let text = serde_json::to_string_pretty(&store)
        .map_err(|e| command_failed("config.json", e.to_string()))?;
    // The server's user rewrites nothing here, but upstream's wizard writes this file: theirs.
    let owner = dir.meta().map_err(fs)?;
    dir.write_atomic(&name, text.as_bytes(), 0o640, Some((owner.uid, owner.gid)))
        .map_err(fs)?;
    done.push(format!(
        "created the server config {} (RocksDB in {})",
        config.display(),
        s.prefix.join("data").display()
    ));
    done.push(match admin {
        Some(_) => format!(
            "LOG IN at http://{}:8080/admin as `admin` with the password of STALWART_RECOVERY_ADMIN in {} (sudo grep RECOVERY_ADMIN {}); the helper's web-admin refresh uses it too",
            hostname(),
            env_path.display(),
            env_path.display()
        ),
        None => format!(
            "{} already existed and was kept; log in with the STALWART_RECOVERY_ADMIN it sets (if it sets none, the server has no administrator: add STALWART_RECOVERY_ADMIN=admin:PASSWORD there and restart {})",
            env_path.display(),
            s.unit
        ),
    });
    Ok(done)
}

/// This machine's name, for the login hints.
pub(crate) fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .map(String::from)
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs a command; Ok(stdout followed by stderr) on success.
fn run_both(cmd: &mut Command) -> Result<String, Error> {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let out = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| command_failed(&what, e.to_string()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(command_failed(
            &what,
            format!("{}: {}", out.status, text.trim()),
        ));
    }
    Ok(text)
}

/// Starts the unit on first install and waits for the health gate; a failure is reported, not
/// fatal (like debhelper's `deb-systemd-invoke start ... || true`).
fn start_first(ctx: &Context, config: &Path) -> String {
    let s = &ctx.settings;
    let r = (|| -> Result<String, Error> {
        let sys = Systemd::connect()?;
        // The unit's drop-in (>= 0.16) was written after the hook's own reload.
        sys.daemon_reload()?;
        sys.start(&s.unit, s.start_timeout())?;
        let cfg = ServerConfig::load_with_env(
            config,
            &crate::server::serverenv::ServerEnv::of(&sys, &s.unit)?,
        )
        .ok();
        let version = crate::server::version::of_binary(&s.server_binary())?;
        let expect = health::Expect::normal(s, cfg.as_ref(), &version, Vec::new());
        let h = health::gate(&sys, s, cfg.as_ref(), &expect)?;
        let mut said = format!("started {}; ready after {} ms", s.unit, h.ready_after_ms);
        // >= 0.16 fetches upstream's latest web UI at its first start: the package's own bundle
        // (the one for this server) replaces it, and is never fetched again.
        if let (Some(cfg), Some(_)) = (&cfg, crate::server::webui::bundled(&s.bin_dir())) {
            if cfg.format == crate::server::serverconfig::ConfigFormat::Json {
                said += &match crate::server::webadmin::refresh_unit(s, &sys, cfg) {
                    Ok(_) => "; the web admin is the package's".to_string(),
                    Err(e) => format!("; warning: {e}"),
                };
            }
        }
        Ok(said)
    })();
    r.unwrap_or_else(|e| {
        let e = e.to_string();
        let see = if e.contains("journalctl") {
            String::new()
        } else {
            format!("; see `journalctl -u {}`", s.unit)
        };
        format!("warning: {} did not come up healthy: {e}{see}", s.unit)
    })
}

fn mark_managed(ctx: &Context, what: &str) -> Result<(), Error> {
    StateDir::open(&ctx.settings.state_dir)?;
    let p = ctx.settings.state_dir.join(MANAGED_MARKER);
    crate::store::state::write_atomic(
        &p,
        format!("{what} at {}\n", crate::os::clock::now_secs()).as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// An installation made by upstream's install.sh (binary, config, data, unit in
/// /etc/systemd/system): config and data are not touched; the packages take over upgrading it.
/// install.sh gives all of PREFIX to the service user, who could then replace the server binary
/// or the directories root swaps: PREFIX and bin/ are taken back for root (the server writes only
/// etc, data and logs).
fn adopt(ctx: &Context) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    done.extend(take_back_for_root(&s.prefix)?);
    done.extend(move_legacy_env(s));
    let version = crate::server::version::of_binary(&s.server_binary())
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
    // >= 0.16 (install.sh 0.16 with PREFIX=/opt/stalwart): the unit in effect, whichever it is,
    // gets the drop-in of its generation (config.json, the env file).
    if let Ok(v) = crate::server::version::of_binary(&s.server_binary()) {
        if crate::store::crossing::write_unit_dropin(s, &v)? {
            if units_controllable(&s.unit).is_ok() {
                Systemd::connect()?.daemon_reload()?;
            }
            done.push(format!(
                "{} runs {} with config.json and {} (drop-in {})",
                s.unit,
                v,
                s.server_env.display(),
                crate::store::crossing::paths(s).dropin.display()
            ));
        }
    }
    // A package install starts its server (Debian's deb-systemd-invoke, rpm presets): one found
    // stopped (install.sh's unit gone, or moved out of the FHS layout) is started like a first
    // install, before the upgrade that may follow needs it running.
    if units_controllable(&s.unit).is_ok() {
        let active = Systemd::connect()
            .and_then(|sys| sys.state(&s.unit))
            .map(|st| st.active_state == crate::os::systemd::ActiveState::Active)
            .unwrap_or(true);
        if !active {
            let config = crate::server::lines::installed_config(s);
            done.push(start_first(ctx, &config));
        }
    }
    mark_managed(ctx, &format!("adopted {version}"))?;
    done.push("from now on `apt upgrade`/`dnf upgrade` upgrade it as a transaction with rollback (see `stalwart-upgrade status`)".into());
    Ok(done)
}

/// install.sh's PREFIX/etc/stalwart.env, moved to `Settings::server_env` (issue #23: systemd
/// reads it as root from a directory of the service user's); a failure is a warning, the
/// package still installs.
pub(super) fn move_legacy_env(s: &crate::config::Settings) -> Option<String> {
    match crate::server::serverenv::move_legacy_env(s) {
        Ok(said) => said,
        Err(e) => Some(format!("warning: {e}")),
    }
}

/// upstream's install.sh without a PREFIX installs 0.16 and later in the FHS layout (facts):
/// /usr/local/bin/stalwart, /etc/stalwart/{config.json,stalwart.env}, /var/lib/stalwart,
/// /var/log/stalwart, and its unit in /etc/systemd/system running /usr/local/bin/stalwart.
const FHS_BINARY: &str = "/usr/local/bin/stalwart";
const FHS_CONFIG: &str = "/etc/stalwart/config.json";

/// An FHS installation of install.sh's here: the config its unit runs (`--config=`, else
/// install.sh's default) and the unit file, if it is install.sh's. Found while
/// /usr/local/bin/stalwart is still install.sh's file (the relocation's last step makes it our
/// link) and PREFIX holds no binary, or holds the one a relocation that was interrupted put
/// there (its record, the helper drop-in, is written first): a relocation killed half-way is
/// found and finished by the next hook run.
struct Fhs {
    config: PathBuf,
    unit_file: Option<PathBuf>,
}

fn fhs_layout(s: &crate::config::Settings) -> Option<Fhs> {
    let ours = std::fs::symlink_metadata(FHS_BINARY)
        .map(|m| m.file_type().is_file())
        .unwrap_or(false);
    if !ours || (s.server_binary().exists() && !fhs_record(s).exists()) {
        return None;
    }
    let unit = Path::new("/etc/systemd/system").join(&s.unit);
    let text = std::fs::read_to_string(&unit).ok();
    let unit_runs_it = text.as_deref().is_some_and(|t| t.contains(FHS_BINARY));
    // The unit is root's (/etc/systemd/system): the config path it names is root's word.
    let named = text.as_deref().filter(|_| unit_runs_it).and_then(|t| {
        t.lines()
            .filter(|l| l.trim_start().starts_with("ExecStart="))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("--config="))
                    .map(PathBuf::from)
            })
    });
    if !unit_runs_it && !Path::new(FHS_CONFIG).exists() {
        return None;
    }
    Some(Fhs {
        config: named.unwrap_or_else(|| PathBuf::from(FHS_CONFIG)),
        unit_file: unit_runs_it.then_some(unit),
    })
}

/// The helper drop-in that records an adopted FHS layout's config, next to the helper's own
/// config (the one these settings came from).
fn fhs_record(s: &crate::config::Settings) -> PathBuf {
    s.dropin_dir().join("50-fhs-layout.toml")
}

/// An FHS installation the packages cannot adopt: what to do. None when there is none, or it is
/// adoptable: a >= 0.16 binary (install.sh puts nothing older there), root's and not writable
/// by others, and a config path the drop-ins can carry (absolute, a config.json, plain).
fn fhs_installation(ctx: &Context) -> Option<String> {
    fhs_refusal(&fhs_layout(&ctx.settings)?)
}

/// Why the FHS installation `fhs` cannot be adopted (None: it can).
fn fhs_refusal(fhs: &Fhs) -> Option<String> {
    let refuse = |why: String| {
        Some(format!(
            "{FHS_BINARY} with {}: {why}. Nothing was installed; move it aside (or fix that), then install the package again",
            fhs.config.display()
        ))
    };
    let plain = fhs.config.is_absolute()
        && fhs.config.extension().is_some_and(|x| x == "json")
        && !fhs
            .config
            .to_string_lossy()
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '%' | '\\'));
    if !plain {
        return refuse("the unit's --config= is not an absolute path to a config.json the packages can name in their drop-ins".into());
    }
    match std::fs::symlink_metadata(FHS_BINARY) {
        Ok(m) if m.uid() == 0 && m.mode() & 0o022 == 0 => {}
        _ => {
            return refuse(
                "the binary is not root's, or others may write it, so root does not copy it".into(),
            )
        }
    }
    match crate::server::version::of_binary(Path::new(FHS_BINARY)) {
        Ok(v) if crate::server::lines::is_json(&v) => None,
        Ok(v) => refuse(format!(
            "it runs {v}, and install.sh puts 0.16 and later there: not an installation the packages can adopt"
        )),
        Err(e) => refuse(e.to_string()),
    }
}

/// install.sh's FHS layout adopted where it stands (issue #28): config, data and logs stay where
/// they are. The binary the packages manage goes to PREFIX/bin (the directory the helper swaps
/// as a whole, root's), and /usr/local/bin/stalwart becomes a link to it; the config the unit
/// runs is recorded in a helper drop-in (config.d/50-fhs-layout.toml: every later run reads it);
/// install.sh's env file next to the config (in the service user's /etc/stalwart, read by PID 1
/// as root) moves to the root-owned one. The unit's 0.16 drop-in (written by `adopt`) then runs
/// PREFIX/bin/stalwart on that config. Each step may be repeated: the record first, the link
/// last, so a kill in between is found and finished by the next run (`fhs_layout`). Returns the
/// settings from now on and what was done.
fn relocate_fhs(ctx: &Context) -> Result<Option<(crate::config::Settings, Vec<String>)>, Error> {
    let s = &ctx.settings;
    let Some(fhs) = fhs_layout(s) else {
        return Ok(None);
    };
    if let Some(why) = fhs_refusal(&fhs) {
        return Err(Error::Refused(why));
    }
    // A PREFIX someone else owns (an install.sh tree without bin/): root does not build bin/
    // in a directory the service user could rename things in.
    if let Ok(m) = std::fs::symlink_metadata(&s.prefix) {
        if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(Error::Refused(format!(
                "{} exists and is not root's (or others may write it): the packages do not put the server binary there; make it root's (0755) or move it aside, then install the package again",
                s.prefix.display()
            )));
        }
    }
    let mut done = Vec::new();
    let record = fhs_record(s);
    let dir = record.parent().unwrap_or(Path::new("/"));
    crate::store::state::create_dir_all_durable(dir).map_err(io_err(dir))?;
    let text = format!(
        "# Written by stalwart-upgrade when the packages adopted install.sh's FHS layout: the\n# server reads this config; its data and logs stay where it names them.\nserver_config = {}\n",
        toml::Value::String(fhs.config.display().to_string())
    );
    crate::store::state::write_atomic(&record, text.as_bytes(), 0o644)?;
    let settings = crate::config::Settings {
        server_config: Some(fhs.config.clone()),
        ..s.clone()
    };
    open_prefix(&s.prefix)?;
    if !settings.server_binary().exists() {
        let (bin, staged) = (settings.bin_dir(), settings.staged_dir());
        swap::fresh_bin(&staged, Path::new(FHS_BINARY))?;
        swap::rename_dir(&staged, &bin)?;
    }
    done.push(format!(
        "adopting install.sh's FHS layout where it stands: {} and its data stay; the server binary the packages manage is {} (recorded in {})",
        fhs.config.display(),
        settings.server_binary().display(),
        record.display()
    ));
    done.extend(move_legacy_env(&settings));
    // Killed here, the record and the binary are in place but not the link: the next hook run
    // finds the layout again and finishes (tests/real_packages.rs).
    crate::engine::journal::test_point("fhs:moved");
    // /usr/local/bin/stalwart stays the command admins and scripts know, now the managed binary.
    let (bindir, _) = Dir::open_parent(Path::new(FHS_BINARY)).map_err(swap::SwapError::from)?;
    let link = Path::new(FHS_BINARY).with_file_name(".stalwart.packaged");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(settings.server_binary(), &link).map_err(io_err(&link))?;
    std::fs::rename(&link, FHS_BINARY).map_err(io_err(Path::new(FHS_BINARY)))?;
    bindir.fsync().map_err(swap::SwapError::from)?;
    done.push(format!(
        "{FHS_BINARY} is now a link to {}: the packages replace the binary there, so the one in /usr/local/bin could only go stale",
        settings.server_binary().display()
    ));
    if let Some(unit) = &fhs.unit_file {
        done.push(format!(
            "{} (install.sh's unit) stays; a drop-in makes it run {} with {}",
            unit.display(),
            settings.server_binary().display(),
            fhs.config.display()
        ));
    }
    Ok(Some((settings, done)))
}

/// PREFIX, bin/ and everything else below PREFIX that is not the server's own (etc, data,
/// logs) become root's, outermost first, each through its own descriptor: once a directory is
/// root's, nobody else can swap what is in it. install.sh gave all of it to the service user,
/// who may have planted anything there:
/// - no set-user-ID or set-group-ID bit survives anywhere below PREFIX (`fsutil::set_mode` never
///   sets one; a chown alone clears them, re-applying the old mode would bring them back on a
///   root-owned file: found as issue #23's escalation);
/// - each file of bin/ is replaced by a root-owned copy, a new inode: a descriptor the service
///   user opened for writing before cannot change what root runs or keeps afterwards;
/// - the helper's own names next to bin/ (bin.new, bin.old) are removed when they are not
///   root's: they are the helper's to make;
/// - devices, FIFOs and sockets below bin/ are removed.
///
/// In the server's directories (etc, data, logs) owners stay; set-id bits of files that are not
/// root's are cleared (a root-owned file there was not made by the service user).
fn take_back_for_root(prefix: &Path) -> Result<Vec<String>, Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(swap::SwapError::from(e));
    let mut done = Vec::new();
    let pdir = Dir::open(prefix).map_err(fs)?;
    take_dir(&pdir, prefix, "the install prefix", &mut done).map_err(fs)?;
    for name in pdir.entries().map_err(fs)? {
        let Some(m) = pdir.stat(&name).map_err(fs)? else {
            continue;
        };
        let path = prefix.join(&name);
        let name_str = name.to_string_lossy();
        match (name_str.as_ref(), m.kind) {
            ("etc" | "data" | "logs", crate::os::fsutil::Kind::Dir) => {
                let d = pdir.open_dir(&name).map_err(fs)?;
                clear_set_id(&d, &path, 0, &mut done).map_err(fs)?;
            }
            ("bin.new" | "bin.old", _) if m.uid != 0 => {
                pdir.remove_tree(&name).map_err(fs)?;
                done.push(format!(
                    "removed {} (uid {}): the helper makes that name itself, only as root",
                    path.display(),
                    m.uid
                ));
            }
            _ => take_entry(&pdir, &name, &path, m, 0, &mut done).map_err(fs)?,
        }
    }
    Ok(done)
}

/// How deep the adoption walks: install.sh makes two levels; anything deeper is reported.
const TAKE_DEPTH: usize = 32;

/// A directory becomes root's, writable by root only (read and search as before).
fn take_dir(
    d: &Dir,
    path: &Path,
    what: &str,
    done: &mut Vec<String>,
) -> Result<(), crate::os::fsutil::FsError> {
    let m = d.meta()?;
    let mode = m.mode & 0o755;
    if m.uid != 0 || m.gid != 0 || m.mode != mode {
        d.set_owner(0, 0)?;
        d.set_mode(mode)?;
        done.push(format!(
            "{what} {} now belongs to root (it was uid {} mode {:o}): the server's user must not be able to replace the binary root runs and swaps",
            path.display(),
            m.uid,
            m.mode
        ));
    }
    Ok(())
}

/// One entry below PREFIX that is not the server's: see `take_back_for_root`.
fn take_entry(
    parent: &Dir,
    name: &std::ffi::OsStr,
    path: &Path,
    m: crate::os::fsutil::Meta,
    depth: usize,
    done: &mut Vec<String>,
) -> Result<(), crate::os::fsutil::FsError> {
    use crate::os::fsutil::{FsError, Kind};
    match m.kind {
        Kind::Dir => {
            if depth >= TAKE_DEPTH {
                return Err(FsError::new(
                    "take over",
                    path,
                    std::io::Error::other("nested too deeply"),
                ));
            }
            let d = parent.open_dir(name)?;
            let what = if depth == 0 && name == "bin" {
                "the binary directory"
            } else {
                "the directory"
            };
            take_dir(&d, path, what, done)?;
            for entry in d.entries()? {
                if let Some(em) = d.stat(&entry)? {
                    take_entry(&d, &entry, &path.join(&entry), em, depth + 1, done)?;
                }
            }
        }
        Kind::File => {
            let (src, fm) = parent.open_file(name)?;
            let mode = fm.mode & 0o755;
            if fm.uid == 0 && fm.gid == 0 && fm.mode == mode {
                return Ok(());
            }
            // A fresh inode of root's with the same bytes, renamed over the name.
            let tmp =
                std::ffi::OsString::from(format!(".stalwart-upgrade-adopt.{}", std::process::id()));
            parent.remove_file(&tmp)?;
            let dst = parent.create_file(&tmp, 0o600)?;
            crate::os::fsutil::copy_content(&src, &dst, fm.size, path)?;
            crate::os::fsutil::set_mode(&dst, path, mode)?;
            dst.sync_all().map_err(|e| FsError::new("fsync", path, e))?;
            parent.rename(&tmp, parent, name)?;
            // Power loss must not bring back the inode the service user could rewrite.
            parent.fsync()?;
            done.push(format!(
                "{} now belongs to root as a copy of its own (it was uid {} mode {:o}{}): the server's user must not be able to replace the binary root runs and swaps",
                path.display(),
                fm.uid,
                fm.mode,
                if fm.mode & 0o6000 != 0 { ", set-id bit dropped" } else { "" }
            ));
        }
        Kind::Symlink => {
            if m.uid != 0 || m.gid != 0 {
                parent.chown_entry(name, 0, 0)?;
            }
        }
        Kind::Special => {
            parent.remove_file(name)?;
            done.push(format!(
                "removed {} (a device, FIFO or socket of uid {}): nothing of that kind belongs there",
                path.display(),
                m.uid
            ));
        }
    }
    Ok(())
}

/// Clears set-user-ID and set-group-ID bits of files below `d` that are not root's (the service
/// user's own directories: owners and other bits stay).
fn clear_set_id(
    d: &Dir,
    path: &Path,
    depth: usize,
    done: &mut Vec<String>,
) -> Result<(), crate::os::fsutil::FsError> {
    use crate::os::fsutil::Kind;
    if depth >= TAKE_DEPTH {
        return Ok(());
    }
    for entry in d.entries()? {
        let Some(m) = d.stat(&entry)? else { continue };
        match m.kind {
            Kind::Dir => {
                let sub = d.open_dir(&entry)?;
                clear_set_id(&sub, &path.join(&entry), depth + 1, done)?;
            }
            Kind::File if m.mode & 0o6000 != 0 && m.uid != 0 => {
                let (f, fm) = d.open_file(&entry)?;
                crate::os::fsutil::set_mode(&f, &path.join(&entry), fm.mode)?;
                done.push(format!(
                    "cleared the set-id bit of {} (uid {} mode {:o})",
                    path.join(&entry).display(),
                    fm.uid,
                    fm.mode
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// dpkg purge: the binary directory, the helper's state (journal, history, kept releases) and
/// the snapshots go, with the PostgreSQL clone databases they own, and our holds; configuration,
/// data and logs only when asked for. Under the helper's lock, and never while a transaction is
/// unfinished: its journal is what `recover` needs to put the server back on consistent data,
/// and its snapshot may be the only copy of that data. Set-aside snapshots (data a rollback or an
/// undo displaced: mail nothing else holds) stay until the admin removes them by name.
fn purge(ctx: &Context, with_data: bool, holds: &HoldPaths) -> Result<Vec<String>, Error> {
    let s = &ctx.settings;
    let mut done = Vec::new();
    // No state dir: no helper ever ran a transaction here, nothing to wait for.
    let _lock = if s.state_dir.exists() {
        let state = StateDir::open(&s.state_dir)?;
        let lock = state.lock(std::time::Duration::from_secs(s.timeouts.lock_wait_secs))?;
        refuse_if_unfinished(&state)?;
        Some(lock)
    } else {
        None
    };
    let snapshot_dir = s.snapshot_dir();
    let kept_snapshots = purge_snapshots(ctx, &mut done)?;
    let mut remove = vec![s.bin_dir(), s.staged_dir()];
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
    // The state dir goes whole, unless the snapshots kept live in it: then all but them.
    let keep_inside = kept_snapshots && snapshot_dir.starts_with(&s.state_dir);
    if s.state_dir.exists() {
        if keep_inside {
            let rd = std::fs::read_dir(&s.state_dir).map_err(io_err(&s.state_dir))?;
            for e in rd {
                let e = e.map_err(io_err(&s.state_dir))?;
                let p = e.path();
                if snapshot_dir.starts_with(&p) {
                    continue;
                }
                let is_dir = e.file_type().map_err(io_err(&p))?.is_dir();
                if is_dir {
                    std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
                } else {
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                }
            }
            done.push(format!(
                "removed {} except {}",
                s.state_dir.display(),
                snapshot_dir.display()
            ));
        } else {
            std::fs::remove_dir_all(&s.state_dir).map_err(io_err(&s.state_dir))?;
            done.push(format!("removed {}", s.state_dir.display()));
        }
    }
    if !kept_snapshots && !snapshot_dir.starts_with(&s.state_dir) {
        // A snapshot dir of its own (`[snapshots] dir`): only if nothing is left in it.
        if std::fs::remove_dir(&snapshot_dir).is_ok() {
            done.push(format!("removed {}", snapshot_dir.display()));
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

/// An open journal is a transaction that `recover` must finish or undo first.
fn refuse_if_unfinished(state: &StateDir) -> Result<(), Error> {
    let journal = state.journal_path();
    let what = match crate::engine::history::unfinished(state) {
        Ok(Some(u)) => format!(
            "transaction {} ({} -> {}) is unfinished",
            u.txid, u.from, u.to
        ),
        Ok(None) if journal.exists() => format!("{} is open", journal.display()),
        Ok(None) => return Ok(()),
        Err(e) => format!("{} cannot be read ({e})", journal.display()),
    };
    Err(Error::Refused(format!(
        "purge refused: {what}, and purging would delete the journal and the snapshot that recovery needs to put the server back on consistent data. Nothing was removed. Run `stalwart-upgrade recover` (reinstall the package first if stalwart-upgrade is gone), check `stalwart-upgrade status`, then purge again"
    )))
}

/// The snapshots' part of a purge (`Snapshots::purge`); says what stays and why. True when
/// anything stays in the snapshot dir.
fn purge_snapshots(ctx: &Context, done: &mut Vec<String>) -> Result<bool, Error> {
    let s = &ctx.settings;
    let dir = s.snapshot_dir();
    if !dir.exists() {
        return Ok(false);
    }
    let env = crate::server::serverenv::ServerEnv::of_unit(&s.unit);
    // The connection for the clones of interrupted snapshots, which only the config names.
    let cfg = ServerConfig::load_with_env(&crate::server::lines::installed_config(s), &env).ok();
    let snapshots = crate::store::snapshot::Snapshots::for_settings(s).with_server_env(env);
    let purged = snapshots.purge(cfg.as_ref())?;
    if !purged.removed.is_empty() {
        done.push(format!(
            "removed the snapshots {} (with the clone databases they owned)",
            purged.removed.join(", ")
        ));
    }
    for (id, why) in &purged.failed {
        done.push(format!(
            "kept snapshot {id}: removing it failed ({why}); once the database is reachable, run `stalwart-upgrade snapshot remove {id}`"
        ));
    }
    if !purged.set_aside.is_empty() {
        let running = crate::server::version::of_binary(&s.server_binary()).ok();
        done.push(format!(
            "kept {} snapshot(s) of set-aside data in {}: each holds data nothing else holds (such as mail a newer version took before a rollback), so a purge does not delete it; remove each by name once it is not needed:",
            purged.set_aside.len(),
            dir.display()
        ));
        for a in &purged.set_aside {
            done.push(format!("  {}", a.describe(running.as_ref())));
        }
    }
    let left = std::fs::read_dir(&dir)
        .map(|mut rd| rd.next().is_some())
        .unwrap_or(false);
    Ok(left)
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

    /// An upgrade killed after its stop: the journal `recover` needs to undo it.
    fn open_journal(ctx: &Context) {
        use crate::engine::journal::{Begin, Journal, Phase, Step, TxKind};
        let s = &ctx.settings;
        let mut j = Journal::create(
            &StateDir::open(&s.state_dir).unwrap().journal_path(),
            Begin {
                txid: "tx-open".into(),
                seq: 1,
                kind: TxKind::Upgrade,
                unit: s.unit.clone(),
                from: "0.14.3".parse().unwrap(),
                to: "0.15.5".parse().unwrap(),
                class: crate::server::version::Class::Minor,
                was_active: true,
                bin_dir: s.bin_dir(),
                staged_dir: s.staged_dir(),
                old_sha256: "a".into(),
                new_sha256: "b".into(),
                restore_data: true,
                restore_from: None,
                server_config: s.prefix.join("etc/config.toml"),
                listeners: vec![],
            },
        )
        .unwrap();
        j.step(Step::Stop, Phase::Started, None).unwrap();
    }

    /// Issue #24: a purge during an unfinished transaction deleted the journal and the snapshot
    /// recovery needs. Now it refuses, says what to run, and removes nothing, with or without
    /// the data asked for.
    #[test]
    fn purge_refuses_while_a_journal_is_open() {
        let t = tempfile::tempdir().unwrap();
        let ctx = populate(t.path());
        open_journal(&ctx);
        let snaps = ctx.settings.snapshot_dir();
        std::fs::create_dir_all(snaps.join("20260101T000000Z-0.14.3")).unwrap();
        for with_data in [false, true] {
            let e = purge(&ctx, with_data, &HoldPaths::for_root(t.path())).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("tx-open") && msg.contains("stalwart-upgrade recover"),
                "{msg}"
            );
            assert_eq!(e.exit_code(), crate::exit::REFUSED);
        }
        let p = &ctx.settings.prefix;
        for kept in [
            p.join("bin"),
            p.join("data/db"),
            ctx.settings.state_dir.join("journal.jsonl"),
            snaps.join("20260101T000000Z-0.14.3"),
        ] {
            assert!(kept.exists(), "{} removed", kept.display());
        }
        // Once recovered (the journal closed), the purge goes through.
        std::fs::remove_file(ctx.settings.state_dir.join("journal.jsonl")).unwrap();
        purge(&ctx, false, &HoldPaths::for_root(t.path())).unwrap();
        assert!(!p.join("bin").exists());
    }

    /// The purge waits for the lock like every changing command, and refuses (exit 7) when a
    /// transaction holds it.
    #[test]
    fn purge_takes_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let mut ctx = populate(t.path());
        ctx.settings.timeouts.lock_wait_secs = 0;
        let state = StateDir::open(&ctx.settings.state_dir).unwrap();
        let held = state.lock(std::time::Duration::ZERO).unwrap();
        let e = purge(&ctx, false, &HoldPaths::for_root(t.path())).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::LOCKED, "{e}");
        assert!(ctx.settings.prefix.join("bin").exists());
        drop(held);
        purge(&ctx, false, &HoldPaths::for_root(t.path())).unwrap();
        assert!(!ctx.settings.state_dir.exists());
    }

    /// Snapshots go with the purge, except set-aside data (mail only that snapshot holds),
    /// which stays in the snapshot dir, named with the command that removes it.
    #[test]
    fn purge_keeps_set_aside_snapshots_and_says_where() {
        let t = tempfile::tempdir().unwrap();
        let ctx = populate(t.path());
        let data = ctx.settings.prefix.join("data/rocks");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("000001.sst"), "mail").unwrap();
        std::fs::write(data.join("CURRENT"), "MANIFEST-000001\n").unwrap();
        let cfg = ServerConfig::parse_toml(
            &ctx.settings.prefix.join("etc/config.toml"),
            &format!(
                "[storage]\ndata = \"r\"\n[store.r]\ntype = \"rocksdb\"\npath = \"{}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let snaps = crate::store::snapshot::Snapshots::new(&ctx.settings.snapshot_dir());
        let meta = crate::store::snapshot::SnapshotMeta {
            server_version: "0.15.5".parse().unwrap(),
            target_version: None,
            class: None,
            server_binary: ctx.settings.server_binary(),
        };
        let plain = snaps.create(&cfg, &meta).unwrap().id;
        let aside = snaps.create(&cfg, &meta).unwrap().id;
        snaps
            .mark_set_aside(&aside, "the data 0.15.5 ran on, replaced by rollback tx-9")
            .unwrap();
        let lines = purge(&ctx, true, &HoldPaths::for_root(t.path())).unwrap();
        let all = lines.join("\n");
        assert!(snaps.get(&plain).is_err(), "{all}");
        assert!(snaps.get(&aside).unwrap().set_aside(), "{all}");
        assert!(
            all.contains(&format!("stalwart-upgrade snapshot remove {aside}"))
                && all.contains("set-aside")
                && all.contains(&ctx.settings.snapshot_dir().display().to_string()),
            "{all}"
        );
        // Everything else of the state and the data went.
        let left: Vec<_> = std::fs::read_dir(&ctx.settings.state_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("snapshots")]);
        assert!(!ctx.settings.prefix.join("data").exists());
        // Removed by name, the next purge leaves nothing.
        snaps.remove(&aside).unwrap();
        purge(&ctx, false, &HoldPaths::for_root(t.path())).unwrap();
        assert!(!ctx.settings.state_dir.exists());
    }

    #[test]
    fn server_dirs_are_created_private_and_existing_ones_left_alone() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = tempfile::tempdir().unwrap();
        let prefix = Dir::open(t.path()).unwrap();
        assert!(ensure_server_dir(&prefix, "data", 4242, 4343).unwrap());
        let d = t.path().join("data");
        let md = std::fs::metadata(&d).unwrap();
        assert_eq!(md.mode() & 0o777, 0o750);
        assert_eq!((md.uid(), md.gid()), (4242, 4343));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!ensure_server_dir(&prefix, "data", 4242, 4343).unwrap());
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        // A symlink planted where a directory is to be created is left alone, not followed.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), t.path().join("logs")).unwrap();
        assert!(!ensure_server_dir(&prefix, "logs", 4242, 4343).unwrap());
        assert_eq!(std::fs::metadata(elsewhere.path()).unwrap().uid(), 0);
    }

    #[test]
    fn adoption_takes_the_prefix_and_bin_back_for_root() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("opt/stalwart");
        for d in ["bin", "etc", "data"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(p.join("bin/stalwart"), "x").unwrap();
        std::fs::write(p.join("etc/config.toml"), "x").unwrap();
        for q in [
            p.clone(),
            p.join("bin"),
            p.join("bin/stalwart"),
            p.join("etc"),
            p.join("data"),
            p.join("etc/config.toml"),
        ] {
            std::os::unix::fs::chown(&q, Some(4242), Some(4242)).unwrap();
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
        let lines = take_back_for_root(&p).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for q in [p.clone(), p.join("bin"), p.join("bin/stalwart")] {
            let m = std::fs::metadata(&q).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{}", q.display());
            assert_eq!(m.mode() & 0o022, 0, "{}", q.display());
        }
        // The server's own directories stay theirs.
        for q in [p.join("etc"), p.join("data"), p.join("etc/config.toml")] {
            assert_eq!(
                std::fs::metadata(&q).unwrap().uid(),
                4242,
                "{}",
                q.display()
            );
        }
        assert!(take_back_for_root(&p).unwrap().is_empty(), "idempotent");
    }

    /// Issue #23: the service user makes its binary set-user-ID (chown clears the bit, the old
    /// code put it back on the root-owned file), keeps a descriptor open for writing, plants
    /// bin.new and a set-id file among the data. After the adoption no set-id bit is left, the
    /// binary is a new inode their descriptor no longer reaches, and bin.new is gone.
    #[test]
    fn adoption_leaves_no_set_id_bit_and_no_inode_of_theirs() {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("opt/stalwart");
        for d in ["bin/sub", "etc", "data", "bin.new"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(p.join("bin/stalwart"), "server").unwrap();
        std::fs::write(p.join("bin/sub/tool"), "tool").unwrap();
        std::fs::write(p.join("data/planted"), "x").unwrap();
        std::fs::write(p.join("bin.new/stalwart"), "theirs").unwrap();
        for q in [
            p.clone(),
            p.join("bin"),
            p.join("bin/sub"),
            p.join("bin/sub/tool"),
            p.join("bin/stalwart"),
            p.join("data/planted"),
            p.join("bin.new"),
        ] {
            std::os::unix::fs::chown(&q, Some(4242), Some(4242)).unwrap();
        }
        for (q, mode) in [
            (p.join("bin/stalwart"), 0o4755),
            (p.join("bin/sub/tool"), 0o6775),
            (p.join("data/planted"), 0o4755),
        ] {
            std::fs::set_permissions(&q, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let before = std::fs::metadata(p.join("bin/stalwart")).unwrap().ino();
        let mut theirs = std::fs::OpenOptions::new()
            .write(true)
            .open(p.join("bin/stalwart"))
            .unwrap();
        let lines = take_back_for_root(&p).unwrap();
        theirs.write_all(b"evil").unwrap();
        for (q, mode) in [
            (p.join("bin/stalwart"), 0o755),
            (p.join("bin/sub/tool"), 0o755),
        ] {
            let m = std::fs::metadata(&q).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{}", q.display());
            assert_eq!(m.mode() & 0o7777, mode, "{} {lines:?}", q.display());
        }
        assert_ne!(
            std::fs::metadata(p.join("bin/stalwart")).unwrap().ino(),
            before
        );
        assert_eq!(std::fs::read(p.join("bin/stalwart")).unwrap(), b"server");
        let planted = std::fs::metadata(p.join("data/planted")).unwrap();
        assert_eq!(planted.mode() & 0o7777, 0o755, "{lines:?}");
        assert_eq!(planted.uid(), 4242, "the server's files stay theirs");
        assert!(!p.join("bin.new").exists(), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("set-id bit dropped")),
            "{lines:?}"
        );
    }

    #[test]
    fn managed_marker() {
        use std::os::unix::fs::PermissionsExt;
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
