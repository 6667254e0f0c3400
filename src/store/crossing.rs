//! The files the 0.15 -> 0.16 crossing puts on the server's side (facts: stalwart.md): 0.16
//! reads config.json (written next to config.toml, owned like it), a persistent unit drop-in
//! points the unit at it, and a runtime drop-in with a root-only env file arms the one
//! recovery-mode start that migrates a 0.15 database. The helper never rewrites config.toml
//! (the 0.15 server owns it) and never edits the unit file, so the undo (`undo`) removes exactly
//! these files. Going back below the line later sets the two persistent ones aside into the
//! state dir (`set_aside`) and `put_back` is its undo.
//!
//! The engine's undo and the package hooks use these as well as the crossing's flow: they are
//! what is on disk, not a decision of the flow.

use crate::config::Settings;
use crate::os::fsutil::Dir;
use crate::os::systemd::Systemd;
use crate::server::lines::{is_json, RECOVERY_PORT};
use crate::server::serverconfig::ServerConfig;
use crate::server::version::Version;
use crate::Error;
use std::path::{Path, PathBuf};

pub struct Paths {
    pub config_json: PathBuf,
    /// Persistent drop-in: ExecStart with config.json.
    pub dropin: PathBuf,
    /// Runtime drop-in (/run): recovery mode for the one migrating start.
    pub recovery_dropin: PathBuf,
    /// Its root-only env file (the one-time recovery administrator).
    pub recovery_env: PathBuf,
}

pub fn paths(s: &Settings) -> Paths {
    let name = "50-stalwart-upgrade-0.16.conf";
    Paths {
        config_json: s.config_json_path(),
        dropin: PathBuf::from(format!("/etc/systemd/system/{}.d/{name}", s.unit)),
        recovery_env: PathBuf::from(format!("/run/stalwart-upgrade/{}-recovery.env", s.unit)),
        recovery_dropin: PathBuf::from(format!(
            "/run/systemd/system/{}.d/50-stalwart-upgrade-recovery.conf",
            s.unit
        )),
    }
}

/// The drop-in that makes the unit run >= 0.16: config.json, the env file (install.sh's 0.16
/// unit reads it; its 0.15 unit, which the crossing of an adopted installation keeps, does not;
/// the empty `EnvironmentFile=` drops install.sh's PREFIX/etc/stalwart.env, in the service
/// user's directory, which PID 1 would read as root),
/// the dangerous variables unset, and no ConditionPathExists (a missing config.json is upstream's
/// setup wizard, not a reason not to start).
fn dropin_text(s: &Settings, config_json: &std::path::Path) -> String {
    let bin = s.server_binary();
    format!(
        "# Written by stalwart-upgrade: Stalwart >= 0.16 reads config.json and its environment file.\n\
         # Removed again when the server goes back below the 0.16 line.\n\
         [Unit]\nConditionPathExists=\n\
         [Service]\nEnvironmentFile=\nEnvironmentFile=-{env}\nUnsetEnvironment=DANGER_FORCE_MIGRATE CONFIG_PATH\n\
         ExecStart=\nExecStart={bin} --config={json}\n",
        json = config_json.display(),
        env = s.server_env.display(),
        bin = bin.display()
    )
}

/// Points the unit at the generation of `version`: the 0.16 drop-in written for >= 0.16, removed
/// below. Returns whether anything changed (then systemd was reloaded).
pub fn point_unit(s: &Settings, sys: &Systemd, version: &Version) -> Result<bool, Error> {
    let changed = write_unit_dropin(s, version)?;
    if changed {
        sys.daemon_reload()?;
    }
    Ok(changed)
}

/// [`point_unit`] without the reload (a first install without a running systemd).
pub fn write_unit_dropin(s: &Settings, version: &Version) -> Result<bool, Error> {
    let p = paths(s);
    let want = is_json(version).then(|| dropin_text(s, &p.config_json));
    let have = std::fs::read_to_string(&p.dropin).ok();
    if want == have {
        return Ok(false);
    }
    match want {
        Some(text) => {
            mkdir_parent(&p.dropin)?;
            crate::store::state::write_atomic(&p.dropin, text.as_bytes(), 0o644)?;
        }
        None => remove_nofollow(&p.dropin)?,
    }
    Ok(true)
}

/// Writes `path` (in a directory the server's user may write: etc/) with the owner and mode of
/// `like` (config.toml), set on the new file's descriptor before it is renamed into place:
/// nothing is ever done through the name, which that user could point elsewhere.
fn write_owned_like(path: &Path, text: &str, like: &Path) -> Result<(), Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(crate::store::swap::SwapError::from(e));
    let (dir, name) = Dir::open_parent(path).map_err(fs)?;
    let like_meta = Dir::open_parent(like)
        .ok()
        .and_then(|(d, n)| d.stat(n).ok().flatten())
        .filter(|m| m.kind == crate::os::fsutil::Kind::File);
    let (owner, mode) = match like_meta {
        Some(m) => (Some((m.uid, m.gid)), m.mode & 0o777),
        None => (None, 0o640),
    };
    dir.write_atomic(name, text.as_bytes(), mode, owner)
        .map_err(fs)?;
    Ok(())
}

/// Reads `path` (regular file, not followed through a symlink) or None when it is missing.
fn read_nofollow(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(crate::store::swap::SwapError::from(e));
    let (dir, name) = match Dir::open_parent(path) {
        Ok(x) => x,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(fs(e)),
    };
    match dir.read_file(&name, 4 << 20) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(fs(e)),
    }
}

/// Removes the file `path` through its directory (a missing one is fine).
fn remove_nofollow(path: &Path) -> Result<(), Error> {
    let fs = |e: crate::os::fsutil::FsError| Error::Swap(crate::store::swap::SwapError::from(e));
    match Dir::open_parent(path) {
        Ok((dir, name)) => {
            dir.remove_file(name).map_err(fs)?;
            // Power loss must not bring the file back (a config.json or drop-in of the other
            // server generation next to a server that must not read it).
            dir.fsync().map_err(fs)
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(fs(e)),
    }
}

fn mkdir_parent(p: &std::path::Path) -> Result<(), Error> {
    if let Some(d) = p.parent() {
        // Durably: power loss must not drop a new drop-in directory with the file in it.
        crate::store::state::create_dir_all_durable(d).map_err(|source| {
            crate::store::state::StateError::Io {
                path: d.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Writes config.json (owned like config.toml) and the unit drop-in, then reloads systemd.
pub fn apply(s: &Settings, sys: &Systemd, cfg: &ServerConfig, json: &str) -> Result<(), Error> {
    let p = paths(s);
    write_owned_like(&p.config_json, json, &cfg.path)?;
    mkdir_parent(&p.dropin)?;
    crate::store::state::write_atomic(&p.dropin, dropin_text(s, &p.config_json).as_bytes(), 0o644)?;
    sys.daemon_reload()?;
    Ok(())
}

/// Removes what `apply` and `migrate` wrote; idempotent.
pub fn undo(s: &Settings, sys: &Systemd) -> Result<(), Error> {
    let p = paths(s);
    for f in [
        &p.recovery_dropin,
        &p.recovery_env,
        &p.dropin,
        &p.config_json,
    ] {
        remove_nofollow(f)?;
    }
    sys.daemon_reload()?;
    Ok(())
}

/// Arms the recovery-mode start (upstream's only way to migrate a 0.15 database): a runtime
/// drop-in whose root-only env file sets STALWART_RECOVERY_MODE=1, the recovery port and
/// `admin` (a one-time recovery administrator, so the carry step can log in), then a reload.
/// The start itself goes through the unit (its user, capabilities and sandbox). The env file is
/// listed after the persistent drop-in's stalwart.env, so its values win (systemd reads
/// EnvironmentFile= in order), and its content never shows in `systemctl show` as
/// Environment= would. `end_recovery` removes both.
pub fn arm_recovery(s: &Settings, sys: &Systemd, admin: &(String, String)) -> Result<(), Error> {
    let p = paths(s);
    mkdir_parent(&p.recovery_env)?;
    crate::store::state::write_atomic(
        &p.recovery_env,
        format!(
            "STALWART_RECOVERY_MODE=1\nSTALWART_RECOVERY_MODE_PORT={RECOVERY_PORT}\nSTALWART_RECOVERY_ADMIN='{}:{}'\n",
            admin.0, admin.1
        )
        .as_bytes(),
        0o600,
    )?;
    mkdir_parent(&p.recovery_dropin)?;
    crate::store::state::write_atomic(
        &p.recovery_dropin,
        format!(
            "# stalwart-upgrade: the one start that migrates a 0.15 database (upstream's recovery mode)\n[Service]\nEnvironmentFile={}\n",
            p.recovery_env.display()
        )
        .as_bytes(),
        0o644,
    )?;
    sys.daemon_reload()?;
    Ok(())
}

/// Stops the recovery-mode server and removes the runtime drop-in and its env file, so the
/// normal start that follows runs without them. Idempotent.
pub fn end_recovery(s: &Settings, sys: &Systemd) -> Result<(), Error> {
    let p = paths(s);
    let stopped = sys.stop(&s.unit, s.stop_timeout());
    remove_nofollow(&p.recovery_dropin)?;
    remove_nofollow(&p.recovery_env)?;
    sys.daemon_reload()?;
    stopped?;
    Ok(())
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        crate::store::state::StateError::Io {
            path: path.to_owned(),
            source,
        }
        .into()
    }
}

/// The files `set_aside` moves: (live path, name in the aside dir).
fn aside_files(s: &Settings) -> [(PathBuf, &'static str); 2] {
    let p = paths(s);
    [
        (p.config_json, "config.json"),
        (p.dropin, "unit-drop-in.conf"),
    ]
}

/// Rolling back below 0.16: moves config.json and the unit drop-in into `aside` (a copy made
/// durable before the live file goes: the two may be on different file systems), removes a
/// leftover recovery drop-in, reloads systemd. Idempotent: a file already moved is skipped.
pub fn set_aside(s: &Settings, sys: &Systemd, aside: &std::path::Path) -> Result<(), Error> {
    // Durably (each new directory's parent fsync'd): power loss after the live file's removal
    // must still find the copy, whose own fsyncs cover only the file and `aside` itself.
    crate::store::state::create_dir_all_durable(aside).map_err(io_err(aside))?;
    for (live, name) in aside_files(s) {
        let kept = aside.join(name);
        if let Some(bytes) = read_nofollow(&live)? {
            crate::store::state::write_atomic(&kept, &bytes, 0o600)?;
            remove_nofollow(&live)?;
        }
    }
    remove_nofollow(&paths(s).recovery_dropin)?;
    sys.daemon_reload()?;
    Ok(())
}

/// Undo of `set_aside`: config.json back (owned like config.toml, as `apply` wrote it), the
/// drop-in back, systemd reloaded. Idempotent.
pub fn put_back(s: &Settings, sys: &Systemd, aside: &std::path::Path) -> Result<(), Error> {
    for (live, name) in aside_files(s) {
        let kept = aside.join(name);
        let bytes = match std::fs::read(&kept) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&kept)(e)),
        };
        if name == "config.json" {
            let text = String::from_utf8_lossy(&bytes);
            write_owned_like(&live, &text, &s.server_config_path())?;
        } else {
            mkdir_parent(&live)?;
            crate::store::state::write_atomic(&live, &bytes, 0o644)?;
        }
        std::fs::remove_file(&kept).map_err(io_err(&kept))?;
    }
    sys.daemon_reload()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_crossing_file_stays_removed_after_a_power_loss() {
        use crate::os::fsutil::trace;
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("config.json");
        std::fs::write(&f, b"{}").unwrap();
        trace::start();
        remove_nofollow(&f).unwrap();
        remove_nofollow(&f).unwrap(); // missing: fine
        let log = trace::take();
        assert!(!f.exists());
        assert_eq!(
            log[..2],
            [
                format!("remove {}", f.display()),
                format!("fsync {}", t.path().display()),
            ],
            "{log:#?}"
        );
    }
}
