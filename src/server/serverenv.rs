//! The environment the server runs with: its unit's `Environment=` lines and the files of its
//! `EnvironmentFile=` lines (0.16's `etc/stalwart.env`), as systemd reports them.
//!
//! Why it matters (facts: "0.16 in detail"): `STALWART_RECOVERY_MODE` makes 0.16 start in
//! recovery mode (one HTTP port, no mail); `DANGER_FORCE_MIGRATE` re-runs the destructive 0.16
//! migration on migrated data; `CONFIG_PATH` makes the binary ignore its arguments;
//! `STALWART_RECOVERY_ADMIN=user:pass` is an administrator in every mode (the credential a fresh
//! 0.16 install of the package writes, and the one the web-admin refresh can use).
//!
//! The env file sits in a directory the server's user can write: it is read through descriptors
//! (no symlink followed), and what it says only ever refuses an upgrade or authenticates the
//! helper to the server's own socket (see `webadmin::Endpoint`).

use crate::os::fsutil::Dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variables that must not reach the server (the packaged unit unsets them too).
pub const DENIED: [&str; 2] = ["DANGER_FORCE_MIGRATE", "CONFIG_PATH"];

/// The origin of a variable from the unit's own `Environment=` lines.
const FROM_UNIT: &str = "Environment= of the unit";

/// The unit's environment, last assignment winning as in systemd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerEnv {
    vars: BTreeMap<String, String>,
    /// Where each variable came from (for messages): the env file, or "Environment=".
    origin: BTreeMap<String, String>,
    /// Variables the unit's `UnsetEnvironment=` removes before the server sees them.
    unset: Vec<String>,
}

/// Why an upgrade cannot run with this environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRefusal {
    pub variable: String,
    pub origin: String,
    pub why: &'static str,
}

impl std::fmt::Display for EnvRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is set for the server ({}): {}; remove it there, run `systemctl daemon-reload`, then run the upgrade again",
            self.variable, self.origin, self.why
        )
    }
}

impl ServerEnv {
    /// From the unit's properties: `Environment=` assignments, `EnvironmentFile=` paths (with
    /// their "-" flag: a missing file is fine then) and `UnsetEnvironment=`.
    pub fn from_unit(
        assignments: &[String],
        files: &[(PathBuf, bool)],
        unset: &[String],
    ) -> ServerEnv {
        let mut env = ServerEnv {
            unset: unset.to_vec(),
            ..ServerEnv::default()
        };
        for a in assignments {
            env.assign(a, FROM_UNIT);
        }
        // systemd reads the files after Environment=, so they win.
        for (path, _optional) in files {
            if let Some(text) = read_env_file(path) {
                for line in text.lines() {
                    env.assign(line, &path.display().to_string());
                }
            }
        }
        env
    }

    /// The environment `unit` gives the server, as systemd says now (`Environment=`,
    /// `EnvironmentFile=`, `UnsetEnvironment=`).
    pub fn of(
        sys: &crate::os::systemd::Systemd,
        unit: &str,
    ) -> Result<ServerEnv, crate::os::systemd::SystemdError> {
        let e = sys.environment(unit)?;
        Ok(ServerEnv::from_unit(&e.environment, &e.files, &e.unset))
    }

    /// The environment `unit` gives the server, asked of systemd now: where the server config's
    /// `%{env:..}%` macros take their values (never the helper's own environment, which is
    /// root's, from whoever ran dpkg). Best effort, for commands that work without systemd too:
    /// without D-Bus it is empty, and a config that needs a variable is refused with a message
    /// naming it.
    pub fn of_unit(unit: &str) -> ServerEnv {
        match crate::os::systemd::Systemd::connect().and_then(|sys| ServerEnv::of(&sys, unit)) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!("the environment of {unit} is not available: {e}");
                ServerEnv::default()
            }
        }
    }

    fn assign(&mut self, line: &str, origin: &str) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            return;
        }
        let Some((k, v)) = line.split_once('=') else {
            return;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        self.vars.insert(k.to_string(), v.to_string());
        self.origin.insert(k.to_string(), origin.to_string());
    }

    /// The value the server sees (None when unset or removed by `UnsetEnvironment=`).
    pub fn get(&self, k: &str) -> Option<&str> {
        if self.unset.iter().any(|u| u == k) {
            return None;
        }
        self.vars.get(k).map(String::as_str)
    }

    /// Where `k` was set (an env file's path, or "Environment= of the unit").
    pub fn origin(&self, k: &str) -> Option<&str> {
        self.origin.get(k).map(String::as_str)
    }

    /// Set anywhere in the unit's environment, even if `UnsetEnvironment=` removes it.
    fn assigned(&self, k: &str) -> Option<(&str, &str)> {
        Some((self.vars.get(k)?.as_str(), self.origin.get(k)?.as_str()))
    }

    /// 0.16 parses `STALWART_RECOVERY_MODE` as "1" or "true" (any case).
    pub fn recovery_mode(&self) -> bool {
        self.get("STALWART_RECOVERY_MODE")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// `STALWART_RECOVERY_ADMIN=user:pass` (0.16 trims both and needs both non-empty).
    pub fn recovery_admin(&self) -> Option<(String, String)> {
        let (u, p) = self.get("STALWART_RECOVERY_ADMIN")?.split_once(':')?;
        let (u, p) = (u.trim(), p.trim());
        (!u.is_empty() && !p.is_empty()).then(|| (u.to_string(), p.to_string()))
    }

    /// What makes an upgrade unsafe: `DANGER_FORCE_MIGRATE` (re-runs the destructive migration),
    /// `CONFIG_PATH` (the binary ignores the unit's `--config`), `STALWART_RECOVERY_MODE` left on
    /// (the server would come up without its mail listeners).
    pub fn refusals(&self) -> Vec<EnvRefusal> {
        let mut out = Vec::new();
        if let Some((_, origin)) = self.assigned("DANGER_FORCE_MIGRATE") {
            out.push(EnvRefusal {
                variable: "DANGER_FORCE_MIGRATE".into(),
                origin: origin.into(),
                why: "it makes 0.16 run its destructive migration again at every start, wiping accounts, domains and settings",
            });
        }
        if let Some((_, origin)) = self.assigned("CONFIG_PATH") {
            out.push(EnvRefusal {
                variable: "CONFIG_PATH".into(),
                origin: origin.into(),
                why: "it makes the server ignore the config the unit names",
            });
        }
        // "1"/"true" keeps the server in recovery mode; and an env file that sets it at all
        // overrides the one start in recovery mode the 0.15 -> 0.16 crossing makes (systemd
        // reads EnvironmentFile= after the helper's Environment= drop-in).
        let set = self
            .assigned("STALWART_RECOVERY_MODE")
            .filter(|(_, origin)| self.recovery_mode() || *origin != FROM_UNIT);
        if let Some((value, origin)) = set {
            out.push(EnvRefusal {
                variable: "STALWART_RECOVERY_MODE".into(),
                origin: origin.into(),
                why: if self.recovery_mode() {
                    "the server would start in recovery mode (one HTTP port, no mail), which the health check after the upgrade does not accept"
                } else if value.is_empty() {
                    "even empty, it would override the recovery-mode start the helper makes to migrate a 0.15 database"
                } else {
                    "it would override the recovery-mode start the helper makes to migrate a 0.15 database"
                },
            });
        }
        out
    }
}

/// An env file's text (regular file, not through a symlink, at most 1 MiB); None if missing or
/// unreadable (systemd then fails the start, or ignores it with "-").
fn read_env_file(path: &Path) -> Option<String> {
    let (dir, name) = Dir::open_parent(path).ok()?;
    let bytes = dir.read_file(&name, 1 << 20).ok()?;
    String::from_utf8(bytes).ok()
}

/// Why the server's env file cannot be written or moved.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("refusing to keep the server's environment file in {dir}: {problem}; it must be a directory only root can write (run `chown root:root {dir} && chmod 0755 {dir}`), since systemd reads the file as root")]
    UnsafeDir { dir: PathBuf, problem: String },
}

fn file_err(path: &Path) -> impl Fn(crate::os::fsutil::FsError) -> EnvFileError + '_ {
    move |e| EnvFileError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The directory of `Settings::server_env`, checked to be root's alone (created 0755 when
/// missing): PID 1 reads the file as root, following symlinks.
fn env_dir(s: &crate::config::Settings) -> Result<(Dir, std::ffi::OsString), EnvFileError> {
    let path = &s.server_env;
    let parent = path.parent().unwrap_or(Path::new("/"));
    if !parent.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| EnvFileError::File {
                path: parent.to_owned(),
                message: e.to_string(),
            })?;
    }
    let (dir, name) = Dir::open_parent(path).map_err(file_err(path))?;
    let m = dir.meta().map_err(file_err(path))?;
    if rustix::process::geteuid().is_root() && (m.uid != 0 || m.writable_by_others()) {
        return Err(EnvFileError::UnsafeDir {
            dir: parent.to_owned(),
            problem: format!("owned by uid {} with mode {:o}", m.uid, m.mode),
        });
    }
    Ok((dir, name))
}

/// The server's env file as it is (None: there is none).
pub fn read_server_env(s: &crate::config::Settings) -> Result<Option<Vec<u8>>, EnvFileError> {
    let (dir, name) = env_dir(s)?;
    match dir.stat(&name).map_err(file_err(&s.server_env))? {
        None => Ok(None),
        Some(_) => Ok(Some(
            dir.read_file(&name, 1 << 20)
                .map_err(file_err(&s.server_env))?,
        )),
    }
}

/// Replaces the server's env file: root:stalwart 0640 (as install.sh makes it), in its
/// root-only directory.
pub fn write_server_env(s: &crate::config::Settings, text: &[u8]) -> Result<(), EnvFileError> {
    let (dir, name) = env_dir(s)?;
    let gid = nix::unistd::Group::from_name(crate::SERVICE_USER)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .unwrap_or(0);
    dir.write_atomic(&name, text, 0o640, Some((0, gid)))
        .map_err(file_err(&s.server_env))
}

/// Removes the server's env file (the undo of a crossing that created it).
pub fn remove_server_env(s: &crate::config::Settings) -> Result<(), EnvFileError> {
    let (dir, name) = env_dir(s)?;
    dir.remove_file(&name).map_err(file_err(&s.server_env))?;
    dir.fsync().map_err(file_err(&s.server_env))
}

/// Moves install.sh's PREFIX/etc/stalwart.env (in the server's own directory) to
/// `Settings::server_env` when that does not exist yet. Its text is read with the identity of
/// whoever controls that directory (`readas::Reader`): the service user may have
/// put any file of root's there under that name (a rename, a symlink), and what root copies into
/// the server's environment must be something the server could read anyway. The old file is
/// renamed `stalwart.env.moved` so nobody edits a file no unit reads. Some(what was done).
pub fn move_legacy_env(s: &crate::config::Settings) -> Result<Option<String>, EnvFileError> {
    let legacy = s.legacy_server_env();
    if legacy == s.server_env {
        return Ok(None);
    }
    let (etc, name) = match Dir::open_parent(&legacy) {
        Ok(x) => x,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(file_err(&legacy)(e)),
    };
    let Some(meta) = etc.stat(&name).map_err(file_err(&legacy))? else {
        return Ok(None);
    };
    let (dir, new_name) = env_dir(s)?;
    if dir
        .stat(&new_name)
        .map_err(file_err(&s.server_env))?
        .is_some()
    {
        return Ok(Some(format!(
            "{} is not read by {} any more; its environment file is {}",
            legacy.display(),
            s.unit,
            s.server_env.display()
        )));
    }
    let etc_meta = etc.meta().map_err(file_err(&legacy))?;
    let reader = crate::os::readas::Reader::for_file(&meta, &etc_meta);
    let text =
        crate::os::readas::read_as(&reader, &legacy, 1 << 20).map_err(|m| EnvFileError::File {
            path: legacy.clone(),
            message: format!("cannot be moved to {}: {m}", s.server_env.display()),
        })?;
    write_server_env(s, text.as_bytes())?;
    etc.rename(&name, &etc, "stalwart.env.moved")
        .map_err(file_err(&legacy))?;
    etc.fsync().map_err(file_err(&legacy))?;
    Ok(Some(format!(
        "moved the server's environment file {} to {} (root's directory: systemd reads it as root); edit it there from now on",
        legacy.display(),
        s.server_env.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_win_over_assignments_and_unset_hides() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("stalwart.env");
        std::fs::write(
            &f,
            "# comment\nSTALWART_RECOVERY_ADMIN=admin:s3cret\nSTALWART_RECOVERY_MODE=\"true\"\nDANGER_FORCE_MIGRATE=1\nnot a line\n",
        )
        .unwrap();
        let env = ServerEnv::from_unit(
            &["STALWART_RECOVERY_MODE=0".into(), "FOO=bar".into()],
            &[(f.clone(), true), (t.path().join("missing"), true)],
            &["DANGER_FORCE_MIGRATE".into()],
        );
        assert_eq!(env.get("FOO"), Some("bar"));
        assert!(env.recovery_mode());
        assert_eq!(
            env.recovery_admin(),
            Some(("admin".into(), "s3cret".into()))
        );
        assert_eq!(env.get("DANGER_FORCE_MIGRATE"), None, "unset by the unit");
        let r = env.refusals();
        let names: Vec<&str> = r.iter().map(|x| x.variable.as_str()).collect();
        assert_eq!(names, ["DANGER_FORCE_MIGRATE", "STALWART_RECOVERY_MODE"]);
        assert!(
            r[0].to_string().contains(&f.display().to_string()),
            "{}",
            r[0]
        );
        let quiet = ServerEnv::from_unit(&["STALWART_RECOVERY_MODE=false".into()], &[], &[]);
        assert!(quiet.refusals().is_empty());
        assert_eq!(quiet.recovery_admin(), None);
        // In the env file any value counts: it would override the crossing's recovery start.
        std::fs::write(&f, "STALWART_RECOVERY_MODE=0\n").unwrap();
        let file = ServerEnv::from_unit(&[], &[(f.clone(), true)], &[]);
        assert!(!file.recovery_mode());
        let r = file.refusals();
        assert_eq!(r.len(), 1);
        assert!(r[0].to_string().contains("override"), "{}", r[0]);
    }

    /// Issue #23 finding 4: the service user replaces install.sh's env file with a symlink to a
    /// root-only KEY=VALUE file. The move reads it as them: nothing of root's is copied.
    #[test]
    fn the_legacy_env_file_is_moved_as_its_directory_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let prefix = t.path().join("opt");
        let etc = prefix.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let secret = t.path().join("root-only");
        std::fs::write(&secret, "CLOUD_TOKEN=s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, etc.join("stalwart.env")).unwrap();
        std::os::unix::fs::chown(&etc, Some(crate::NOBODY), Some(crate::NOBODY)).unwrap();
        std::os::unix::fs::lchown(
            etc.join("stalwart.env"),
            Some(crate::NOBODY),
            Some(crate::NOBODY),
        )
        .unwrap();
        let s = crate::config::Settings {
            prefix: prefix.clone(),
            server_env: t.path().join("root/stalwart.env"),
            ..Default::default()
        };
        let e = move_legacy_env(&s).unwrap_err().to_string();
        assert!(e.contains("cannot be moved"), "{e}");
        assert!(!s.server_env.exists());
        // A real one of theirs is moved, and the old name no longer holds it.
        std::fs::remove_file(etc.join("stalwart.env")).unwrap();
        std::fs::write(
            etc.join("stalwart.env"),
            "STALWART_HOSTNAME=mail.example.org\n",
        )
        .unwrap();
        std::os::unix::fs::chown(
            etc.join("stalwart.env"),
            Some(crate::NOBODY),
            Some(crate::NOBODY),
        )
        .unwrap();
        let said = move_legacy_env(&s).unwrap().unwrap();
        assert!(said.contains("moved"), "{said}");
        assert_eq!(
            read_server_env(&s).unwrap().unwrap(),
            b"STALWART_HOSTNAME=mail.example.org\n"
        );
        assert!(etc.join("stalwart.env.moved").exists());
        assert!(!etc.join("stalwart.env").exists());
        assert!(move_legacy_env(&s).unwrap().is_none());
    }

    #[test]
    fn a_symlinked_env_file_is_not_read() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::write(&real, "STALWART_RECOVERY_ADMIN=admin:x\n").unwrap();
        let link = t.path().join("stalwart.env");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let env = ServerEnv::from_unit(&[], &[(link, true)], &[]);
        assert_eq!(env.recovery_admin(), None);
    }
}
