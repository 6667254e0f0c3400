//! The pristine root file system every container boots from, built once and cached.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// The build script; its text (which holds the package list) keys the cache.
const MKROOTFS: &str = include_str!("../mkrootfs.sh");
/// Bump to force a rebuild when something outside the script changes what is built.
const CACHE_EPOCH: &str = "1";

/// `TESTBED_CACHE`, else `/var/cache/stalwart-upgrade-testbed`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("TESTBED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/stalwart-upgrade-testbed"))
}

fn cache_key() -> String {
    let mut h = Sha256::new();
    h.update(CACHE_EPOCH.as_bytes());
    h.update(b"\0");
    h.update(MKROOTFS.as_bytes());
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

static ROOTFS: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The cached root file system, built first if needed (about 30 s cold, needs `mmdebstrap` and the
/// Debian mirror, env `TESTBED_MIRROR`, default http://deb.debian.org/debian). Safe to call from
/// parallel threads and processes: one builds (under a lock file), the others wait and reuse it.
/// The build goes to a temporary directory renamed into place, so a killed build leaves no
/// half-made rootfs behind.
pub fn rootfs() -> Result<PathBuf> {
    let mut guard = ROOTFS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let root = cache_root();
    let dest = root.join(format!("rootfs-{}", cache_key()));
    if !is_complete(&dest) {
        crate::preflight()?;
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the rootfs cache {}", root.display()))?;
        let lock_path = root.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
        let busy = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0;
        if busy {
            eprintln!(
                "testbed: another process is building the rootfs ({}); waiting for it",
                lock_path.display()
            );
        }
        // SAFETY: as above.
        if busy && unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "flock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            );
        }
        if !is_complete(&dest) {
            remove_leftovers(&root, &dest);
            build(&root, &dest)?;
        }
        drop(lock);
    }
    *guard = Some(dest.clone());
    Ok(dest)
}

/// Under the build lock: removes killed builds (`.build-*`) and root file systems of other
/// package lists that no overlay mount uses any more.
fn remove_leftovers(root: &Path, keep: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let old_rootfs = name.starts_with("rootfs-") && path != keep;
        if !(name.starts_with(".build-") || old_rootfs) || !path.is_dir() {
            continue;
        }
        if mountinfo.contains(&format!("lowerdir={}", path.display())) {
            continue;
        }
        eprintln!("testbed: removing the outdated {}", path.display());
        if let Err(e) = std::fs::remove_dir_all(&path) {
            eprintln!("testbed: removing {}: {e}", path.display());
        }
    }
}

fn is_complete(dest: &Path) -> bool {
    dest.join(".testbed-complete").is_file()
}

fn build(root: &Path, dest: &Path) -> Result<()> {
    if crate::which("mmdebstrap").is_none() {
        bail!(
            "building the testbed rootfs needs mmdebstrap: apt-get install -y \
             --no-install-recommends mmdebstrap systemd-container"
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(root)
        .with_context(|| format!("temp dir in {}", root.display()))?;
    let script = tmp.path().join("mkrootfs.sh");
    std::fs::write(&script, MKROOTFS)?;
    let out = tmp.path().join("rootfs");
    let mirror = std::env::var("TESTBED_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    eprintln!(
        "testbed: building the Debian bookworm rootfs into {} (once; about 30 s)",
        dest.display()
    );
    let started = Instant::now();
    let log_path = root.join(format!("build-{}.log", cache_key()));
    let log = std::fs::File::create(&log_path)?;
    let status = std::process::Command::new("sh")
        .arg(&script)
        .arg(&out)
        .arg(&mirror)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running mkrootfs.sh")?;
    if !status.success() {
        let log = crate::proc::read_file_lossy(&log_path);
        bail!(
            "building the testbed rootfs failed ({status}); log {}:\n{}",
            log_path.display(),
            crate::proc::tail(&log, 40)
        );
    }
    let mut marker = std::fs::File::create(out.join(".testbed-complete"))?;
    writeln!(
        marker,
        "built in {:.1} s from mirror {mirror}",
        started.elapsed().as_secs_f64()
    )?;
    marker.sync_all()?;
    if dest.exists() {
        // An incomplete leftover (no marker): replace it.
        std::fs::remove_dir_all(dest)
            .with_context(|| format!("removing the incomplete {}", dest.display()))?;
    }
    std::fs::rename(&out, dest)
        .with_context(|| format!("renaming the new rootfs to {}", dest.display()))?;
    eprintln!(
        "testbed: rootfs built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
