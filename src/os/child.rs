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
//!
//! Why confined (`confine`): a binary the service user could change is run as them, but the
//! process would still be in root's session, on root's terminal. With a controlling terminal it
//! can push keystrokes into the admin's shell (TIOCSTI, still allowed on Debian 12's 6.1 kernel)
//! or read them; and `setuid` alone does not stop an exec of a set-user-ID-root file from giving
//! euid 0 back. So every such child gets its own session (no controlling terminal, TIOCSTI fails
//! with EPERM), `PR_SET_NO_NEW_PRIVS` (set-id bits and file capabilities are ignored by exec) and
//! no descriptor of a terminal: stdin, stdout and stderr are /dev/null unless the caller pipes
//! them.

use crate::os::fsutil::{self, Dir, FsError, Meta};
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
        confine(&mut c);
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

/// Confines a child the helper starts (see the module comment): a session of its own, so no
/// controlling terminal; no new privileges through exec; /dev/null for the three standard
/// streams unless the caller sets them afterwards (a pipe it reads). std runs `pre_exec` after
/// the child's setgid/setuid, and both calls are allowed unprivileged.
pub fn confine(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid and prctl are async-signal-safe system calls; the closure touches no
    // memory of the parent.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `text` with every terminal control character written out (`\x1b`), newlines and tabs kept:
/// what the server, its tools or its HTTP answers said may be shown to the admin, and an escape
/// sequence in it could rewrite the admin's screen or, on some terminals, answer back into the
/// shell. Bidirectional overrides are written out too (they reorder what the admin reads).
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            if (c as u32) < 0x100 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
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
        // `confine` made them /dev/null: a caller that wants them pipes them.
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
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
    fn control_characters_are_written_out() {
        assert_eq!(
            printable("a\x1b]0;pwned\x07b\nc\td\u{202e}e\r"),
            "a\\x1b]0;pwned\\x07b\nc\td\\u{202e}e\\x0d"
        );
        assert_eq!(printable("plain text: ok"), "plain text: ok");
    }

    /// What a child of the helper sees: no terminal among its descriptors, no controlling
    /// terminal, its own session, and no new privileges.
    #[test]
    fn children_run_confined() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("prog");
        std::fs::write(
            &p,
            "#!/bin/sh\n[ -t 0 ] || [ -t 1 ] || [ -t 2 ] && echo tty\n\
             (: </dev/tty) 2>/dev/null && echo ctty\n\
             grep NoNewPrivs /proc/self/status >&2\n\
             echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$ >&2\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = Program::open(&p).unwrap();
        let out = output(prog.command(None));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.stdout.is_empty(), "no terminal, no /dev/tty: {out:?}");
        assert!(err.contains("NoNewPrivs:\t1"), "{err}");
        let sid = err.split("sid=").nth(1).unwrap().split(' ').next().unwrap();
        let pid = err.split("pid=").nth(1).unwrap().trim();
        assert_eq!(sid, pid, "the child leads a session of its own: {err}");
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
