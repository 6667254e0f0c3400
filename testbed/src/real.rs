//! The real-server tier: upstream's own Stalwart binaries, installed in a container the way
//! upstream's install.sh does for their generation, with clients for their management APIs and
//! for mail (`crate::mail`).
//!
//! Where the binaries come from: `STALWART_REAL_BINS` (a directory), else `../shared/real-stalwart`
//! next to the workspace when it exists. Accepted in that directory:
//! - `stalwart-X.Y.Z.xz` (xz-compressed binaries, checked against the directory's SHA256SUMS);
//! - `stalwart-X.Y.Z` (a binary; checked against SHA256SUMS when it lists it);
//! - `*.tar.gz` (upstream's official release tarballs, `stalwart-x86_64-unknown-linux-gnu.tar.gz`
//!   renamed per version as you like; the version comes from the binary itself).
//!
//! Each is unpacked once into the testbed cache (`cache_root()/real/<sha256>/stalwart`) and bound
//! read-only into the containers at [`IN_CONTAINER`]. A test that finds what it needs missing
//! prints one loud line naming it and returns: it never passes silently ([`skip`]).
//!
//! Stores: upstream's official builds carry RocksDB only (default features `rocks`), the builds in
//! ../shared carry SQLite (0.15 without RocksDB). A test uses the store every binary it runs
//! supports ([`Backend::common`]): SQLite where all have it, else RocksDB.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the containers see the unpacked binaries.
pub const IN_CONTAINER: &str = "/real";

/// One real release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealRelease {
    /// What `stalwart --version` prints, e.g. "0.16.18".
    pub version: String,
    /// The unpacked binary in the cache (host path).
    pub path: PathBuf,
    pub sha256: String,
    /// Store backends compiled in.
    pub sqlite: bool,
    pub rocksdb: bool,
    pub postgres: bool,
}

impl RealRelease {
    /// (major, minor, patch) for ordering.
    pub fn semver(&self) -> (u64, u64, u64) {
        let mut it = self
            .version
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok());
        (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        )
    }
    /// "0.15", "0.16".
    pub fn line(&self) -> String {
        let (a, b, _) = self.semver();
        format!("{a}.{b}")
    }
    /// >= 0.16: config.json, JMAP management.
    pub fn is_016(&self) -> bool {
        let (a, b, _) = self.semver();
        a > 0 || b >= 16
    }
    /// The binary as the container sees it.
    pub fn in_container(&self) -> String {
        let dir = self
            .path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        format!("{IN_CONTAINER}/{dir}/stalwart")
    }
}

/// The store a test's servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    RocksDb,
    /// The container's own PostgreSQL (started by the install), database and user `stalwart`.
    Postgres,
    /// The container's own MariaDB (started by the install), database and user `stalwart`;
    /// the 0.16 builds only (../shared/real-stalwart: the 0.15 ones have no MySQL store).
    MariaDb,
}

impl Backend {
    /// The store every one of `releases` has compiled in: SQLite when all have it (the builds in
    /// ../shared), else RocksDB (upstream's official builds), else None.
    pub fn common(releases: &[&RealRelease]) -> Option<Backend> {
        if releases.iter().all(|r| r.sqlite) {
            Some(Backend::Sqlite)
        } else if releases.iter().all(|r| r.rocksdb) {
            Some(Backend::RocksDb)
        } else {
            None
        }
    }
}

/// The directory the tier reads, if any.
pub fn source_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("STALWART_REAL_BINS") {
        return Some(PathBuf::from(d)).filter(|p| p.is_dir());
    }
    let ws = crate::workspace_root();
    let d = ws.parent()?.join("shared/real-stalwart");
    d.is_dir().then_some(d)
}

/// The cache directory of the unpacked binaries (bound into containers at [`IN_CONTAINER`]).
pub fn cache_dir() -> PathBuf {
    crate::cache_root().join("real")
}

/// Every real release found, oldest first. Err says why there are none (no directory, or a
/// file that does not match SHA256SUMS: that is a failure, not a skip).
pub fn releases() -> Result<&'static [RealRelease], String> {
    static ALL: OnceLock<Result<Vec<RealRelease>, String>> = OnceLock::new();
    ALL.get_or_init(|| {
        let dir = source_dir().ok_or_else(|| {
            "no real Stalwart binaries: set STALWART_REAL_BINS to a directory of them (see README, \"The real-server tier\")".to_string()
        })?;
        load(&dir).map_err(|e| format!("{e:#}"))
    })
    .as_ref()
    .map(|v| v.as_slice())
    .map_err(|e| e.clone())
}

/// The release `version`, if the tier has it.
pub fn release(version: &str) -> Option<&'static RealRelease> {
    releases().ok()?.iter().find(|r| r.version == version)
}

/// The two newest releases of `line` (older, newer).
pub fn newest_two(line: &str) -> Option<(&'static RealRelease, &'static RealRelease)> {
    let of: Vec<&RealRelease> = releases()
        .ok()?
        .iter()
        .filter(|r| r.line() == line)
        .collect();
    match of.as_slice() {
        [.., a, b] => Some((a, b)),
        _ => None,
    }
}

/// The newest release of `line`.
pub fn newest(line: &str) -> Option<&'static RealRelease> {
    releases().ok()?.iter().rev().find(|r| r.line() == line)
}

/// A loud line that `test` did not run and why (a skipped real test must never look like a pass).
/// With the binaries on this machine a real test that cannot run fails instead: the suite's
/// real tier must then run in full (without them the tests are reported as ignored, see
/// build.rs).
pub fn skip(test: &str, why: &str) {
    if let Some(dir) = source_dir() {
        panic!(
            "real-server test `{test}` cannot run although the real binaries are here ({}): {why}",
            dir.display()
        );
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! REAL-SERVER TEST `{test}` SKIPPED: {why}\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

/// The releases `test` needs, or None after saying loudly which is missing. A broken source
/// directory (checksum mismatch) panics: that is not a reason to skip.
pub fn require(test: &str, versions: &[&str]) -> Option<Vec<&'static RealRelease>> {
    if let Err(e) = releases() {
        if e.starts_with("no real Stalwart binaries") {
            skip(test, &e);
            return None;
        }
        panic!("the real-server tier is broken: {e}");
    }
    let mut out = Vec::new();
    for v in versions {
        match release(v) {
            Some(r) => out.push(r),
            None => {
                let have: Vec<String> = releases()
                    .map(|r| r.iter().map(|x| x.version.clone()).collect())
                    .unwrap_or_default();
                skip(
                    test,
                    &format!(
                        "it needs the real Stalwart {v}, which {} does not have (it has: {})",
                        source_dir()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default(),
                        have.join(", ")
                    ),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn contains(path: &Path, needle: &[u8]) -> Result<bool> {
    let bytes = std::fs::read(path)?;
    Ok(bytes.windows(needle.len()).any(|w| w == needle))
}

fn load(dir: &Path) -> Result<Vec<RealRelease>> {
    let sums: HashMap<String, String> = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (h, n) = (it.next()?, it.next()?);
            Some((
                n.trim_start_matches('*').to_string(),
                h.to_ascii_lowercase(),
            ))
        })
        .collect();
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    // One unpacker at a time (parallel test processes share the cache).
    let lock = std::fs::File::create(cache.join(".lock"))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("lock {}: {e}", cache.display()))?;
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for src in names {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.starts_with("stalwart") {
            continue;
        }
        let unpacked = if let Some(base) = name.strip_suffix(".xz") {
            unpack(&src, &cache, sums.get(base), Unpack::Xz)?
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            unpack(&src, &cache, None, Unpack::Tarball)?
        } else if src.is_file() && sums.contains_key(&name) {
            unpack(&src, &cache, sums.get(&name), Unpack::Plain)?
        } else {
            continue;
        };
        out.push(unpacked);
    }
    out.sort_by_key(|r| r.semver());
    Ok(out)
}

#[derive(Clone, Copy)]
enum Unpack {
    Xz,
    Tarball,
    Plain,
}

/// Unpacks `src` into the cache (once), checks it, and reads its version.
fn unpack(src: &Path, cache: &Path, want: Option<&String>, how: Unpack) -> Result<RealRelease> {
    let key = match (want, how) {
        (Some(sha), _) => sha.clone(),
        (None, _) => sha256_of(src)?,
    };
    let dir = cache.join(&key);
    let bin = dir.join("stalwart");
    if !bin.is_file() {
        let tmp = cache.join(format!(".tmp-{key}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let out = tmp.join("stalwart");
        match how {
            Unpack::Xz => {
                let f = std::fs::File::create(&out)?;
                let st = Command::new("xz")
                    .arg("-dc")
                    .arg(src)
                    .stdout(f)
                    .status()
                    .context("xz is missing: apt-get install xz-utils (scripts/setup does)")?;
                if !st.success() {
                    bail!("xz -dc {} failed: {st}", src.display());
                }
            }
            Unpack::Tarball => {
                let st = Command::new("tar")
                    .arg("-xzf")
                    .arg(src)
                    .arg("-C")
                    .arg(&tmp)
                    .status()?;
                if !st.success() {
                    bail!("tar -xzf {} failed: {st}", src.display());
                }
                if !out.is_file() {
                    bail!("{} holds no `stalwart` binary", src.display());
                }
            }
            Unpack::Plain => {
                std::fs::copy(src, &out)?;
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))?;
        if let Some(sha) = want {
            let got = sha256_of(&out)?;
            if &got != sha {
                bail!(
                    "{} unpacks to sha256 {got}, but SHA256SUMS lists {sha}: the file is damaged",
                    src.display()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)?;
    }
    let sha256 = match want {
        Some(s) => s.clone(),
        None => sha256_of(&bin)?,
    };
    // The version from the binary itself; CONFIG_PATH would make it start a server instead.
    let out = Command::new(&bin)
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .with_context(|| format!("{} --version", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.split('.').count() < 3 {
        bail!(
            "{} --version printed {version:?} ({})",
            bin.display(),
            out.status
        );
    }
    Ok(RealRelease {
        version,
        sha256,
        sqlite: contains(&bin, b"SQLite format 3")?,
        rocksdb: contains(&bin, b"rocksdb.block.cache")?,
        postgres: contains(&bin, b"tokio-postgres")?,
        path: bin,
    })
}
