//! /var/lib/stalwart-upgrade: the helper's root-only state (spec: journal, lock, history, kept
//! releases, snapshots), plus the exclusive lock that serialises every changing command.

use crate::server::version::Version;
use fs_err as fs;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to use {path}: it is {problem}; it must be owned by root with mode 0700 (run `chown root:root {path} && chmod 0700 {path}` after checking who changed it)")]
    Unsafe { path: PathBuf, problem: String },
    #[error("refusing to use the state directory {state}: {path} above it is {problem}, so whoever can write there could put another directory in its place; make {path} owned by root and not writable by group or others")]
    UnsafeParent {
        state: PathBuf,
        path: PathBuf,
        problem: String,
    },
    #[error("another stalwart-upgrade ({holder}) holds {path} and did not finish within {secs} s; wait for it, or check `stalwart-upgrade status`")]
    Locked {
        path: PathBuf,
        holder: String,
        secs: u64,
    },
    #[error("{path} is not valid ({message}); move it aside after reading it")]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

/// Held for the whole of a changing command; released on drop (also when the process dies).
pub struct Lock {
    _flock: Flock<std::fs::File>,
}

/// A version whose upgrade failed and was rolled back: not retried automatically (spec: "the same
/// version is not retried until the admin asks"), so a re-run of dpkg --configure causes no outage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedUpgrade {
    pub version: Version,
    pub from: Version,
    pub txid: String,
    pub reason: String,
    pub at: u64,
}

impl StateDir {
    /// Creates the directory root-owned 0700 if missing; refuses one that others could write.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        if !root.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(io(root))?;
        }
        check_parents(root)?;
        check_private_dir(root)?;
        for sub in ["history", "releases"] {
            let p = root.join(sub);
            if !p.exists() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(io(&p))?;
            }
            // Whatever is in there was put by root, but a symlink (a restored backup, a
            // hand-made link) would carry journals and kept releases elsewhere: refused too.
            check_private_dir(&p)?;
        }
        Ok(StateDir {
            root: root.to_owned(),
        })
    }

    /// Where a rollback below the 0.16 line keeps config.json and the unit drop-in of
    /// transaction `txid` (root-only).
    pub fn aside_dir(&self, txid: &str) -> PathBuf {
        self.root.join("aside").join(txid)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }
    pub fn history_dir(&self) -> PathBuf {
        self.root.join("history")
    }
    /// Where damaged journals are set aside (`history::list`), out of the way of every command
    /// but still read (as far as they read) by `history`.
    pub fn damaged_dir(&self) -> PathBuf {
        self.history_dir().join("damaged")
    }
    pub fn releases_dir(&self) -> PathBuf {
        self.root.join("releases")
    }
    fn failed_path(&self) -> PathBuf {
        self.root.join("failed.json")
    }

    /// Waits up to `wait` for the exclusive lock; the holder's pid is written into the lock file
    /// so the refusal can name it.
    pub fn lock(&self, wait: Duration) -> Result<Lock, StateError> {
        let path = self.root.join("lock");
        let deadline = Instant::now() + wait;
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut flock) => {
                    flock.set_len(0).map_err(io(&path))?;
                    let _ = writeln!(flock, "{}", std::process::id());
                    return Ok(Lock { _flock: flock });
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    let holder = std::fs::read_to_string(&path)
                        .map(|s| format!("pid {}", s.trim()))
                        .unwrap_or_else(|_| "another process".into());
                    return Err(StateError::Locked {
                        path,
                        holder,
                        secs: wait.as_secs(),
                    });
                }
                Err((_, e)) => return Err(io(&path)(e.into())),
            }
        }
    }

    pub fn failed(&self) -> Result<Option<FailedUpgrade>, StateError> {
        read_json(&self.failed_path())
    }
    pub fn set_failed(&self, f: &FailedUpgrade) -> Result<(), StateError> {
        write_json_atomic(&self.failed_path(), f)
    }
    pub fn clear_failed(&self) -> Result<(), StateError> {
        let p = self.failed_path();
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&p)(e)),
            _ => fsync_dir(&self.root).map_err(io(&self.root)),
        }
    }

    /// Where the binary of a kept release lives.
    pub fn release_binary(&self, v: &Version) -> PathBuf {
        self.releases_dir().join(v.to_string()).join("stalwart")
    }

    /// Kept releases, newest first.
    pub fn releases(&self) -> Result<Vec<Version>, StateError> {
        let dir = self.releases_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| io(&dir)(e))? {
            let e = e.map_err(io(&dir))?;
            if let Some(v) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Version>().ok())
            {
                if e.path().join("stalwart").is_file() {
                    out.push(v);
                }
            }
        }
        out.sort();
        out.reverse();
        Ok(out)
    }
}

/// Refuses a state or snapshot directory that someone other than root could write: the helper
/// runs as root and restores binaries and data from it.
pub fn check_private_dir(path: &Path) -> Result<(), StateError> {
    let md = std::fs::symlink_metadata(path).map_err(io(path))?;
    let unsafe_ = |problem: String| StateError::Unsafe {
        path: path.to_owned(),
        problem,
    };
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(unsafe_("not a plain directory".into()));
    }
    if md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_(format!("owned by uid {}", md.uid())));
    }
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unsafe_(format!(
            "writable by group or others (mode {mode:04o})"
        )));
    }
    Ok(())
}

/// Every directory above the state dir: root's (or ours), and not writable by group or others
/// unless sticky (like /tmp, where others cannot rename what is ours).
fn check_parents(root: &Path) -> Result<(), StateError> {
    let abs = std::fs::canonicalize(root).map_err(io(root))?;
    let euid = nix::unistd::geteuid().as_raw();
    for dir in abs.ancestors().skip(1) {
        let md = std::fs::metadata(dir).map_err(io(dir))?;
        let problem = if md.uid() != 0 && md.uid() != euid {
            Some(format!("owned by uid {}", md.uid()))
        } else if md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0 {
            Some(format!(
                "writable by group or others (mode {:04o})",
                md.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(StateError::UnsafeParent {
                state: root.to_owned(),
                path: dir.to_owned(),
                problem,
            });
        }
    }
    Ok(())
}

pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    crate::os::fsutil::fsync_dir_path(dir)
}

/// `create_dir_all`, durably: each directory it creates has its parent fsync'd, so a file made
/// durable inside it (fsync of the file and of this directory) is not lost with the directory's
/// own entry at a power loss.
pub fn create_dir_all_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p),
        _ => fsync_dir(Path::new(".")),
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Write to a temp file in the same dir, fsync, rename over, fsync the dir: a crash leaves either
/// the old or the new content, never a torn file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes, 0o600)
}

pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    crate::os::fsutil::write_atomic_path(path, bytes, mode).map_err(|e| StateError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_created_durably_has_its_parent_fsynced() {
        use crate::os::fsutil::trace;
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a").join("b");
        trace::start();
        create_dir_all_durable(&deep).unwrap();
        create_dir_all_durable(&deep).unwrap(); // present: nothing more
        let log = trace::take();
        assert!(deep.is_dir());
        assert_eq!(
            log,
            vec![
                format!("fsync {}", t.path().display()),
                format!("fsync {}", t.path().join("a").display()),
            ]
        );
    }

    #[test]
    fn refuses_symlinked_subdirs_and_parents_others_may_write() {
        let t = tempfile::tempdir().unwrap();
        // A symlinked history dir (to a private dir elsewhere) is refused, not followed.
        let root = t.path().join("state");
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        StateDir::open(&root).unwrap();
        std::fs::remove_dir(root.join("history")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("history")).unwrap();
        let err = StateDir::open(&root).unwrap_err();
        assert!(
            matches!(&err, StateError::Unsafe { path, .. } if path.ends_with("history")),
            "{err}"
        );

        // A parent anybody may write (not sticky): refused, naming the parent.
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::open(&open.join("state")).unwrap_err();
        assert!(
            matches!(&err, StateError::UnsafeParent { path, .. } if path == &open),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("writable by group or others (mode 0777)"));
        // Sticky (like /tmp): others cannot rename what is ours.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        StateDir::open(&open.join("state2")).unwrap();
        // A parent owned by another user: refused.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
        let err = StateDir::open(&open.join("state2")).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn creates_private_dir_and_refuses_world_writable() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let s = StateDir::open(&root).unwrap();
        let mode = std::fs::metadata(&s.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&root).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        assert!(e.contains(&root.display().to_string()), "{e}");
    }

    #[test]
    fn second_lock_waits_then_refuses_naming_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("s")).unwrap();
        let _held = s.lock(Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        let e = s.lock(Duration::from_millis(600)).err().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(600));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(_held);
        assert!(s.lock(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn failed_marker_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("s")).unwrap();
        assert_eq!(s.failed().unwrap(), None);
        let f = FailedUpgrade {
            version: "0.15.6".parse().unwrap(),
            from: "0.15.5".parse().unwrap(),
            txid: "t".into(),
            reason: "r".into(),
            at: 1,
        };
        s.set_failed(&f).unwrap();
        assert_eq!(s.failed().unwrap(), Some(f));
        s.clear_failed().unwrap();
        s.clear_failed().unwrap();
        assert_eq!(s.failed().unwrap(), None);
    }
}
