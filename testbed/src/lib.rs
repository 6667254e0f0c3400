//! Throw-away systemd-nspawn containers for the end-to-end tests, the benches and the demo.
//!
//! * [`rootfs()`]: a pristine Debian bookworm root file system built once with mmdebstrap
//!   (`testbed/mkrootfs.sh`) and cached under `/var/cache/stalwart-upgrade-testbed` (env
//!   `TESTBED_CACHE`), keyed by the sha256 of that script (which holds the package list).
//! * [`Container`]: one booted systemd per scenario, on an overlayfs over that rootfs, with its own
//!   system bus reachable from the host ([`Container::bus_address`]).
//! * [`stalwart`]: install the (stand-in) server the way upstream's install.sh does.
//! * [`standin_release`]: stamp stand-in releases (version, fault, migration time).
//! * [`real`], [`real_server`], [`mail`]: the real-server tier: upstream's own binaries installed
//!   as install.sh does, their management APIs, SMTP in and JMAP out.
//! * [`scenario`]: the one test harness: a booted container with a server (stand-in, real, or
//!   from the packages), the helper configured, and the package repository of the apt/dnf tests.
//!
//! Needs root, `systemd-nspawn` (package systemd-container) and `mmdebstrap`. Tests fail loudly when
//! these are missing; `TESTBED_SKIP=1` is the explicit opt-out (see [`skip_requested`]).

mod container;
pub mod mail;
mod proc;
pub mod real;
pub mod real_server;
mod rootfs;
pub mod scenario;
pub mod stalwart;
pub mod standin;

pub use container::{cleanup_stale, tmp_root, Container, ContainerBuilder, Halted};
pub use proc::run_with_timeout;
pub use rootfs::{cache_root, rootfs};
pub use standin::{make_release, standin_base_binary, standin_release, Fault, Release};

use std::path::PathBuf;

/// True when the user asked to skip the container tests with `TESTBED_SKIP=1`; prints a loud
/// banner naming the test so a skipped run is never mistaken for a passing one.
///
/// ```no_run
/// if testbed::skip_requested("my_test") { return; }
/// ```
pub fn skip_requested(test: &str) -> bool {
    if std::env::var_os("TESTBED_SKIP").is_some_and(|v| v == "1") {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! TESTBED_SKIP=1: test `{test}` did NOT run (it needs root + systemd-nspawn)\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        true
    } else {
        false
    }
}

/// Checks what booting a container needs, with an error that says how to fix it.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "the testbed needs root (it mounts overlayfs and runs systemd-nspawn); run the tests as \
             root, or set TESTBED_SKIP=1 to skip them explicitly"
        );
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ] {
        if which(tool).is_none() {
            anyhow::bail!(
                "`{tool}` is missing: apt-get install -y --no-install-recommends {package} \
                 (or set TESTBED_SKIP=1 to skip the container tests explicitly)"
            );
        }
    }
    Ok(())
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/sbin".into(),
            "/bin".into(),
        ])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The workspace's cargo target directory: `CARGO_TARGET_DIR` (at run time, then at build time),
/// else `<workspace>/target`. It is bound read-only at `/target` in every container by default.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return absolute(PathBuf::from(dir));
    }
    if let Some(dir) = option_env!("CARGO_TARGET_DIR") {
        return absolute(PathBuf::from(dir));
    }
    workspace_root().join("target")
}

/// The workspace's root directory (where packaging/, systemd/ and tests/ are): testbed/ is a
/// direct child of it.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().map(|p| p.to_path_buf());
    root.unwrap_or(manifest)
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
    }
}

/// Where the container sees the target dir.
pub const TARGET_IN_CONTAINER: &str = "/target";

/// Compiles the C program `source` (statically, so any container runs it) into
/// `<target>/testbed-programs/<name>` once per content, and returns that host path (under
/// target/, so bound into every container). The security tests plant such programs as the
/// service user: a shell script cannot carry a set-user-ID bit, an ELF file can.
pub fn c_program(name: &str, source: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    use sha2::Digest as _;
    let dir = target_dir().join("testbed-programs");
    std::fs::create_dir_all(&dir)?;
    let hash = sha2::Sha256::digest(source.as_bytes());
    let tag: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let bin = dir.join(format!("{name}-{tag}"));
    if bin.is_file() {
        return Ok(bin);
    }
    let src = dir.join(format!("{name}-{tag}.c"));
    std::fs::write(&src, source)?;
    let tmp = dir.join(format!("{name}-{tag}.tmp{}", std::process::id()));
    let out = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
        .context("running cc (package build-essential)")?;
    if !out.status.success() {
        anyhow::bail!(
            "cc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, &bin)?;
    Ok(bin)
}
