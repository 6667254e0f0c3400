//! Stand-in releases: copies of the stand-in server binary with a release trailer stamped on.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Mutex;

pub use stalwart_standin::{Fault, Release};

/// The compiled stand-in every release is stamped from: `TESTBED_STANDIN_BIN`, else
/// `<target>/debug/stalwart-standin`.
pub fn standin_base_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TESTBED_STANDIN_BIN") {
        return PathBuf::from(p);
    }
    crate::target_dir().join("debug").join("stalwart-standin")
}

fn release_dir() -> Result<PathBuf> {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut g = DIR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = g.as_ref() {
        return Ok(d.clone());
    }
    // Under the target dir, so the containers see the releases at /target/testbed-releases/...
    let parent = crate::target_dir().join("testbed-releases");
    std::fs::create_dir_all(&parent).with_context(|| format!("mkdir {}", parent.display()))?;
    // Releases of processes that are gone.
    if let Ok(rd) = std::fs::read_dir(&parent) {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if !crate::proc::pid_alive(pid) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let d = parent.join(std::process::id().to_string());
    std::fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
    *g = Some(d.clone());
    Ok(d)
}

/// Stamps `release` onto the stand-in binary, once per process and release; returns the file
/// (under `<target>/testbed-releases/<pid>/`, visible inside containers via
/// [`crate::Container::target_path`]).
pub fn make_release(release: &Release) -> Result<PathBuf> {
    // Parallel tests ask for the same release at once: stamping writes a temp file next to `out`
    // and renames it, so two stampers of one file must not overlap.
    static STAMPING: Mutex<()> = Mutex::new(());
    let _guard = STAMPING.lock().unwrap_or_else(|e| e.into_inner());
    let base = standin_base_binary();
    if !base.is_file() {
        bail!(
            "the stand-in server binary {} is missing: run `cargo build -p stalwart-standin` \
             before these tests",
            base.display()
        );
    }
    let out = release_dir()?.join(format!(
        "stalwart-{}-{}-{}ms",
        release.version, release.fault, release.migrate_ms
    ));
    if !out.is_file() {
        stalwart_standin::stamp(&base, &out, release)
            .with_context(|| format!("stamping {} from {}", out.display(), base.display()))?;
    }
    Ok(out)
}

/// `make_release` for a version, fault and migration time; panics with the reason on failure
/// (a test helper).
pub fn standin_release(version: &str, fault: Fault, migrate_ms: u64) -> PathBuf {
    let release = Release {
        version: version.to_string(),
        fault,
        migrate_ms,
    };
    make_release(&release).unwrap_or_else(|e| panic!("stand-in release {version}: {e:#}"))
}
