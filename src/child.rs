//! Running a server binary from root: opened once, checked, and executed through that very
//! descriptor, with a cleared environment, as whoever could have changed it.
//!
//! Why by descriptor: in an install.sh layout the service user owns bin/ (until the adoption
//! takes it back, `hooks::system`), and in any layout it may own the release it was handed. A
//! check of `bin/stalwart` followed by an exec of the same *name* runs whatever sits there at
//! exec time. The kernel executes `/proc/self/fd/N` as the inode that descriptor holds, so what
//! was hashed is what runs.
//!
//! Why cleared: upstream ignores its arguments when `CONFIG_PATH` is set and re-runs a
//! destructive migration when `DANGER_FORCE_MIGRATE` is set (facts: stalwart.md); and nothing of
//! root's environment (HOME, tokens, proxies) belongs in a process the service user controls.

use crate::fsutil::{self, Dir, FsError, Meta};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A binary opened for execution.
#[derive(Debug)]
pub struct Program {
    file: File,
    meta: Meta,
    path: PathBuf,
}

impl Program {
    /// Opens `path` (no symlink on the way or at the end, a regular file).
    pub fn open(path: &Path) -> Result<Program, FsError> {
        let (dir, name) = Dir::open_parent(path)?;
        let (file, meta) = dir.open_file(&name)?;
        Ok(Program {
            file,
            meta,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// sha256 of exactly what runs.
    pub fn sha256(&self) -> Result<String, FsError> {
        fsutil::sha256_of(&self.file, &self.path)
    }

    /// Who could change what this descriptor executes: its owner when that is not root; nobody
    /// when group or others may write it. None when only root can (then the caller picks).
    pub fn controller(&self) -> Option<(u32, u32)> {
        if self.meta.uid != 0 {
            Some((self.meta.uid, self.meta.gid))
        } else if self.meta.mode & 0o022 != 0 {
            Some((crate::NOBODY, crate::NOBODY))
        } else {
            None
        }
    }

    /// A command running this binary (by descriptor) with a cleared environment, as `run_as`
    /// (None: as the helper). argv[0] is the binary's path, as an exec by name would give.
    pub fn command(&self, run_as: Option<(u32, u32)>) -> Command {
        use std::os::unix::process::CommandExt;
        let fd = self.file.as_raw_fd();
        let mut c = Command::new(format!("/proc/self/fd/{fd}"));
        c.arg0(&self.path);
        clear_env(&mut c);
        if let Some((uid, gid)) = run_as {
            c.uid(uid).gid(gid);
        }
        // SAFETY: fcntl is async-signal-safe; the closure touches no memory of the parent. It
        // lets the descriptor survive the exec (a script's interpreter opens it again).
        unsafe {
            c.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }
}

/// A cleared environment: PATH and a locale only.
pub fn clear_env(c: &mut Command) {
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Another test thread that forks while a script is being written leaves a copy of the
    /// write descriptor in its child until that child execs, and exec then fails with ETXTBSY:
    /// a race of the test process, retried.
    fn output(mut cmd: std::process::Command) -> std::process::Output {
        for _ in 0..100 {
            match cmd.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r.unwrap(),
            }
        }
        panic!("still ETXTBSY after 2 s")
    }

    #[test]
    fn runs_what_was_opened_even_if_the_name_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("prog");
        std::fs::write(&p, "#!/bin/sh\necho first \"$FOO\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = Program::open(&p).unwrap();
        let sha = prog.sha256().unwrap();
        // Replaced after the check: the exec must still run the checked inode.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "#!/bin/sh\necho second\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = prog.command(None);
        cmd.env("FOO", "x");
        let out = output(cmd);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "first x");
        assert_eq!(prog.sha256().unwrap(), sha);
    }

    #[test]
    fn environment_is_cleared_and_identity_taken() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("prog");
        std::fs::write(&p, "#!/bin/sh\necho \"[$CONFIG_PATH][$HOME]\" $(id -u)\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var("CONFIG_PATH", "/etc/evil.toml");
        let prog = Program::open(&p).unwrap();
        let out = output(prog.command(Some((crate::NOBODY, crate::NOBODY))));
        std::env::remove_var("CONFIG_PATH");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("[][] {}", crate::NOBODY),
            "{out:?}"
        );
    }

    #[test]
    fn symlinks_are_not_opened() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
        assert!(Program::open(&t.path().join("link")).is_err());
        assert!(Program::open(&t.path().join("real")).is_ok());
    }
}
