//! Staging the new binary and exchanging /opt/stalwart/bin with bin.new.
//!
//! The spec makes bin/ a directory swapped as a whole, never written in place: the running server's
//! executable is never modified, and a crash leaves either the old or the new directory at bin/.
//! renameat2(RENAME_EXCHANGE) swaps the two names in one atomic step and keeps the old directory
//! (now at bin.new) for the way back.

use crate::state::fsync_dir;
use crate::version::Version;
use fs_err as fs;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} --version failed: {message}; is it a Stalwart server binary for this machine?"
    )]
    VersionCheck { path: PathBuf, message: String },
    #[error("{path} reports version {found}, expected {expected}; nothing was changed")]
    WrongVersion {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} has sha256 {found}, but {sums} lists {expected}; the file is damaged or not the packaged release; nothing was changed")]
    Checksum {
        path: PathBuf,
        sums: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{sums} lists no checksum for {name}; nothing was changed")]
    NotListed { sums: PathBuf, name: String },
    #[error("cannot find the binary with sha256 {sha256} (version {version}) in {bin}, {staged} or the kept release {release}; restore it by hand (see `stalwart-upgrade history`)")]
    Lost {
        bin: PathBuf,
        staged: PathBuf,
        release: PathBuf,
        sha256: String,
        version: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SwapError + '_ {
    move |source| SwapError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Env to force the rename fallback (tests of file systems without RENAME_EXCHANGE).
pub const NO_EXCHANGE_ENV: &str = "STALWART_UPGRADE_NO_EXCHANGE";

pub fn sha256_file(path: &Path) -> Result<String, SwapError> {
    let mut f = fs::File::open(path).map_err(|e| io(path)(e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `BINARY --version` (upstream prints the bare version and exits 0), bounded in time.
pub fn binary_version(path: &Path) -> Result<Version, SwapError> {
    let fail = |message: String| SwapError::VersionCheck {
        path: path.to_owned(),
        message,
    };
    let mut cmd = Command::new(path);
    if let Some((uid, gid)) = who_controls(path) {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd
        .arg("--version")
        .env_remove("CONFIG_PATH") // upstream ignores arguments when CONFIG_PATH is set
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(_) => break,
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail("did not exit within 20 s".into()));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Version::parse_binary_output(text.trim()).map_err(|e| fail(e.to_string()))
}

/// Whom a binary's version check must run as: None (root) only when nobody else can change
/// what `path` executes. install.sh gives /opt/stalwart to the service user, who may replace
/// bin/stalwart (or make it a symlink to a root-owned file, then swap it for a script between our
/// check and the exec): so the owner of the file, of the symlink and of the directories holding
/// them all count, and the first that is not root is who runs it. Anything writable by group or
/// others runs as nobody.
fn who_controls(path: &Path) -> Option<(u32, u32)> {
    let mut candidates = vec![path.to_owned()];
    if let Some(dir) = path.parent() {
        candidates.push(dir.to_owned());
    }
    if let Ok(target) = std::fs::canonicalize(path) {
        if let Some(dir) = target.parent() {
            candidates.push(dir.to_owned());
        }
        candidates.push(target);
    }
    for p in &candidates {
        for md in [std::fs::symlink_metadata(p), std::fs::metadata(p)]
            .into_iter()
            .flatten()
        {
            if md.file_type().is_symlink() {
                if md.uid() != 0 {
                    return Some((md.uid(), md.gid()));
                }
                continue;
            }
            let sticky_dir = md.is_dir() && md.mode() & 0o1000 != 0;
            if md.uid() != 0 {
                return Some((md.uid(), md.gid()));
            }
            if md.mode() & 0o022 != 0 && !sticky_dir {
                return Some((crate::NOBODY, crate::NOBODY));
            }
        }
    }
    None
}

/// Looks the file's name up in a SHA256SUMS file (`<hex>  <name>` or `<hex> *<name>`).
pub fn verify_sha256sums(path: &Path, sums: &Path, actual: &str) -> Result<(), SwapError> {
    let text = fs::read_to_string(sums).map_err(|e| io(sums)(e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (h, n) = (it.next()?, it.next()?);
        let n = n.trim_start_matches('*');
        (Path::new(n).file_name()?.to_string_lossy() == name).then(|| h.to_ascii_lowercase())
    });
    match expected {
        None => Err(SwapError::NotListed {
            sums: sums.to_owned(),
            name,
        }),
        Some(e) if e == actual => Ok(()),
        Some(e) => Err(SwapError::Checksum {
            path: path.to_owned(),
            sums: sums.to_owned(),
            found: actual.into(),
            expected: e,
        }),
    }
}

/// Copies a file with its mode, fsyncs it. (Not a rename: the source belongs to the package.)
pub fn copy_file_durable(from: &Path, to: &Path, mode: u32) -> Result<(), SwapError> {
    let _ = std::fs::remove_file(to);
    fs::copy(from, to).map_err(|e| io(to)(e))?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(to)
        .map_err(|e| io(to)(e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(to))?;
    f.sync_all().map_err(io(to))
}

/// bin.new, built and checked while it belongs to root; `hand_over` gives it the owners bin/ has.
#[derive(Debug)]
pub struct Staged {
    pub sha256: String,
    dir: std::fs::File,
    dir_owner: (u32, u32, u32),
    files: Vec<(std::ffi::OsString, u32, u32)>,
}

/// Opens `name` for writing inside the directory `dir`, refusing to follow a symlink.
fn create_in(
    dir: &std::fs::File,
    name: &std::ffi::OsStr,
    mode: u32,
) -> Result<std::fs::File, SwapError> {
    use nix::fcntl::OFlag;
    use std::os::fd::{AsRawFd, FromRawFd};
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        Path::new(name),
        flags,
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )
    .map_err(|e| io(Path::new(name))(e.into()))?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Copies `from` to `name` in `dir` (the directory at `dir_path`, named in errors).
fn copy_into(
    (dir, dir_path): (&std::fs::File, &Path),
    name: &std::ffi::OsStr,
    from: &Path,
    mode: u32,
) -> Result<(), SwapError> {
    let to = dir_path.join(name);
    let copy_err = |source| SwapError::Copy {
        from: from.to_owned(),
        to: to.clone(),
        source,
    };
    let mut src = fs::File::open(from).map_err(|e| io(from)(e))?;
    let mut dst = create_in(dir, name, mode).map_err(|e| match e {
        SwapError::Io { source, .. } => copy_err(source),
        other => other,
    })?;
    std::io::copy(&mut src, &mut dst).map_err(copy_err)?;
    dst.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(copy_err)?;
    dst.sync_all().map_err(copy_err)
}

/// Builds bin.new: a copy of bin/ (other files kept) with `target` as bin.new/stalwart, every file
/// and the directory fsync'd. Everything is written through a handle on the directory we created,
/// with O_NOFOLLOW, and stays root-owned (0700) until `hand_over`: install.sh gives /opt/stalwart
/// to the service user, who could otherwise plant a symlink at bin.new or change the binary
/// between our write and the root-run `--version` check.
pub fn stage(bin: &Path, staged: &Path, target: &Path) -> Result<Staged, SwapError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    remove_dir(staged)?;
    let md = fs::metadata(bin).map_err(|e| io(bin)(e))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staged)
        .map_err(io(staged))?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(staged)
        .map_err(io(staged))?;
    let dmd = dir.metadata().map_err(io(staged))?;
    if dmd.uid() != nix::unistd::geteuid().as_raw() || dmd.permissions().mode() & 0o077 != 0 {
        return Err(io(staged)(std::io::Error::other(
            "replaced while being created (someone else owns it now); refusing to stage",
        )));
    }
    let mut files = Vec::new();
    for e in fs::read_dir(bin).map_err(|e| io(bin)(e))? {
        let e = e.map_err(io(bin))?;
        let ft = e.file_type().map_err(io(&e.path()))?;
        if e.file_name() == "stalwart" {
            continue;
        }
        if ft.is_symlink() {
            // Kept as the same symlink, never followed (it may point anywhere).
            let lmd = e.metadata().map_err(io(&e.path()))?;
            let target = fs::read_link(e.path()).map_err(|e| io(bin)(e))?;
            nix::unistd::symlinkat(
                &target,
                Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
                Path::new(&e.file_name()),
            )
            .map_err(|err| io(&staged.join(e.file_name()))(err.into()))?;
            files.push((e.file_name(), lmd.uid(), lmd.gid()));
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let emd = e.metadata().map_err(io(&e.path()))?;
        copy_into(
            (&dir, staged),
            &e.file_name(),
            &e.path(),
            emd.permissions().mode() & 0o7777,
        )?;
        files.push((e.file_name(), emd.uid(), emd.gid()));
    }
    let old_bin = bin.join("stalwart");
    let (uid, gid, mode) = match fs::metadata(&old_bin) {
        Ok(m) => (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        Err(_) => (md.uid(), md.gid(), 0o755),
    };
    copy_into(
        (&dir, staged),
        std::ffi::OsStr::new("stalwart"),
        target,
        mode,
    )?;
    files.push(("stalwart".into(), uid, gid));
    dir.sync_all().map_err(io(staged))?;
    fsync_parent(staged)?;
    Ok(Staged {
        sha256: sha256_file(&staged.join("stalwart"))?,
        dir,
        dir_owner: (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        files,
    })
}

/// Gives bin.new's files and directory the owners and mode bin/ has (after the checks).
pub fn hand_over(staged: &Staged) -> Result<(), SwapError> {
    use std::os::fd::AsRawFd;
    let fd = staged.dir.as_raw_fd();
    for (name, uid, gid) in &staged.files {
        nix::unistd::fchownat(
            Some(fd),
            Path::new(name),
            Some(nix::unistd::Uid::from_raw(*uid)),
            Some(nix::unistd::Gid::from_raw(*gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io(Path::new(name))(e.into()))?;
    }
    let (uid, gid, mode) = staged.dir_owner;
    nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| io(Path::new("bin.new"))(e.into()))?;
    nix::unistd::fchown(
        fd,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| io(Path::new("bin.new"))(e.into()))?;
    staged.dir.sync_all().map_err(io(Path::new("bin.new")))
}

fn fsync_parent(p: &Path) -> Result<(), SwapError> {
    let parent = p.parent().unwrap_or(Path::new("/"));
    fsync_dir(parent).map_err(io(parent))
}

pub fn remove_dir(dir: &Path) -> Result<(), SwapError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

/// The side directory used by the fallback when RENAME_EXCHANGE is refused.
fn aside(bin: &Path) -> PathBuf {
    let mut s = bin.as_os_str().to_owned();
    s.push(".old");
    PathBuf::from(s)
}

/// Exchanges bin and bin.new atomically. Where the file system refuses RENAME_EXCHANGE (EINVAL:
/// e.g. vfat, some network file systems), falls back to three renames with the unit stopped:
/// bin -> bin.old, bin.new -> bin, bin.old -> bin.new. A crash between them leaves bin.old,
/// which `ensure_binary` puts back; the journal records which of the two the transaction wants.
pub fn exchange(bin: &Path, staged: &Path) -> Result<(), SwapError> {
    let forced = std::env::var_os(NO_EXCHANGE_ENV).is_some();
    if !forced {
        match nix::fcntl::renameat2(
            None,
            staged,
            None,
            bin,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => return fsync_parent(bin),
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
                tracing::warn!(
                    "{} does not support RENAME_EXCHANGE; using the three-rename fallback",
                    bin.display()
                );
            }
            Err(e) => return Err(io(bin)(e.into())),
        }
    }
    if forced {
        tracing::warn!("{NO_EXCHANGE_ENV} is set: using the three-rename fallback");
    }
    let old = aside(bin);
    fs::rename(bin, &old).map_err(|e| io(bin)(e))?;
    fsync_parent(bin)?;
    fs::rename(staged, bin).map_err(|e| io(staged)(e))?;
    fsync_parent(bin)?;
    fs::rename(&old, staged).map_err(|e| io(&old)(e))?;
    fsync_parent(bin)
}

fn sha_of(dir: &Path) -> Option<String> {
    let p = dir.join("stalwart");
    p.is_file().then(|| sha256_file(&p).ok()).flatten()
}

/// What `ensure_binary` had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    AlreadyThere,
    ExchangedBack,
    RestoredFromRelease,
}

/// Makes bin/stalwart the binary with `want_sha` again, whatever point a swap was interrupted at:
/// it may already be there, sit in bin.new (exchanged), in bin.old (fallback interrupted), or
/// only survive as the kept release. Idempotent.
pub fn ensure_binary(
    bin: &Path,
    staged: &Path,
    release: &Path,
    want_sha: &str,
    version: &Version,
) -> Result<Ensured, SwapError> {
    let old = aside(bin);
    if !bin.exists() && old.exists() {
        // Fallback interrupted between its first and second rename.
        fs::rename(&old, bin).map_err(|e| io(&old)(e))?;
        fsync_parent(bin)?;
    }
    if sha_of(bin).as_deref() == Some(want_sha) {
        return Ok(Ensured::AlreadyThere);
    }
    for candidate in [staged, old.as_path()] {
        if sha_of(candidate).as_deref() == Some(want_sha) {
            if candidate == staged && bin.exists() {
                exchange(bin, staged)?;
            } else {
                remove_dir(bin)?;
                fs::rename(candidate, bin).map_err(|e| io(candidate)(e))?;
                fsync_parent(bin)?;
            }
            return Ok(Ensured::ExchangedBack);
        }
    }
    if release.is_file() && sha256_file(release)? == want_sha {
        // Rebuild bin/ around the kept release: stage it, then exchange (or move in if bin/ is gone).
        stage_from_release(bin, staged, release)?;
        if bin.exists() {
            exchange(bin, staged)?;
        } else {
            fs::rename(staged, bin).map_err(|e| io(staged)(e))?;
            fsync_parent(bin)?;
        }
        return Ok(Ensured::RestoredFromRelease);
    }
    Err(SwapError::Lost {
        bin: bin.to_owned(),
        staged: staged.to_owned(),
        release: release.to_owned(),
        sha256: want_sha.into(),
        version: version.to_string(),
    })
}

fn stage_from_release(bin: &Path, staged: &Path, release: &Path) -> Result<(), SwapError> {
    if bin.exists() {
        hand_over(&stage(bin, staged, release)?)
    } else {
        remove_dir(staged)?;
        fs::create_dir(staged).map_err(|e| io(staged)(e))?;
        copy_file_durable(release, &staged.join("stalwart"), 0o755)?;
        fsync_dir(staged).map_err(io(staged))
    }
}

/// Keeps a copy of a binary as a release (root-only state dir) so a rollback has it even after
/// dpkg deleted the old package's files.
pub fn keep_release(binary: &Path, release: &Path) -> Result<String, SwapError> {
    let sha = sha256_file(binary)?;
    if release.is_file() && sha256_file(release)? == sha {
        return Ok(sha);
    }
    let dir = release.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| io(dir)(e))?;
    let tmp = dir.join(".stalwart.tmp");
    copy_file_durable(binary, &tmp, 0o755)?;
    fs::rename(&tmp, release).map_err(|e| io(release)(e))?;
    fsync_dir(dir).map_err(io(dir))?;
    fs::write(dir.join("sha256"), format!("{sha}  stalwart\n")).map_err(|e| io(dir)(e))?;
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, version: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho {version}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        script(&bin, "stalwart", "0.15.5");
        std::fs::write(bin.join("stalwart-cli"), "cli").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", bin.join("shadow-link")).unwrap();
        std::os::unix::fs::lchown(bin.join("shadow-link"), Some(65534), Some(65534)).unwrap();
        let new = script(t.path(), "new", "0.15.6");
        let staged = t.path().join("bin.new");
        (t, bin, staged, new)
    }

    #[test]
    fn stage_then_exchange_keeps_other_files_and_old_dir() {
        let (_t, bin, staged, new) = layout();
        let old_sha = sha256_file(&bin.join("stalwart")).unwrap();
        let st = stage(&bin, &staged, &new).unwrap();
        hand_over(&st).unwrap();
        let sha = st.sha256.clone();
        assert_eq!(sha, sha256_file(&new).unwrap());
        assert_eq!(
            binary_version(&staged.join("stalwart"))
                .unwrap()
                .to_string(),
            "0.15.6"
        );
        exchange(&bin, &staged).unwrap();
        assert_eq!(sha256_file(&bin.join("stalwart")).unwrap(), sha);
        assert_eq!(
            std::fs::read_to_string(bin.join("stalwart-cli")).unwrap(),
            "cli"
        );
        assert_eq!(sha256_file(&staged.join("stalwart")).unwrap(), old_sha);
        // The admin's symlink in bin/ is the same symlink in the new bin/, with its owner.
        let link = bin.join("shadow-link").symlink_metadata().unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!(link.uid(), 65534);
        assert_eq!(
            std::fs::read_link(bin.join("shadow-link")).unwrap(),
            Path::new("/etc/shadow")
        );
    }

    #[test]
    fn fallback_sequence_swaps_too() {
        let (_t, bin, staged, new) = layout();
        let st = stage(&bin, &staged, &new).unwrap();
        hand_over(&st).unwrap();
        let sha = st.sha256.clone();
        std::env::set_var(NO_EXCHANGE_ENV, "1");
        let r = exchange(&bin, &staged);
        std::env::remove_var(NO_EXCHANGE_ENV);
        r.unwrap();
        assert_eq!(sha256_file(&bin.join("stalwart")).unwrap(), sha);
        assert!(!aside(&bin).exists());
    }

    #[test]
    fn ensure_binary_undoes_every_interrupted_state() {
        let (t, bin, staged, new) = layout();
        let v: Version = "0.15.5".parse().unwrap();
        let release = t.path().join("rel/stalwart");
        let old_sha = keep_release(&bin.join("stalwart"), &release).unwrap();
        // nothing happened yet
        assert_eq!(
            ensure_binary(&bin, &staged, &release, &old_sha, &v).unwrap(),
            Ensured::AlreadyThere
        );
        // exchanged
        hand_over(&stage(&bin, &staged, &new).unwrap()).unwrap();
        exchange(&bin, &staged).unwrap();
        assert_eq!(
            ensure_binary(&bin, &staged, &release, &old_sha, &v).unwrap(),
            Ensured::ExchangedBack
        );
        assert_eq!(sha256_file(&bin.join("stalwart")).unwrap(), old_sha);
        // fallback interrupted after bin -> bin.old
        hand_over(&stage(&bin, &staged, &new).unwrap()).unwrap();
        std::fs::rename(&bin, aside(&bin)).unwrap();
        ensure_binary(&bin, &staged, &release, &old_sha, &v).unwrap();
        assert_eq!(sha256_file(&bin.join("stalwart")).unwrap(), old_sha);
        // old dir gone entirely: rebuilt from the kept release
        hand_over(&stage(&bin, &staged, &new).unwrap()).unwrap();
        exchange(&bin, &staged).unwrap();
        remove_dir(&staged).unwrap();
        assert_eq!(
            ensure_binary(&bin, &staged, &release, &old_sha, &v).unwrap(),
            Ensured::RestoredFromRelease
        );
        assert_eq!(sha256_file(&bin.join("stalwart")).unwrap(), old_sha);
        // unknown sha: typed error naming the release
        let e = ensure_binary(&bin, &staged, &release, "feed", &v).unwrap_err();
        assert!(e.to_string().contains("restore it by hand"), "{e}");
    }

    #[test]
    fn staging_never_follows_a_planted_symlink_and_stays_root_owned_until_handed_over() {
        let (t, bin, staged, new) = layout();
        std::os::unix::fs::chown(&bin, Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(bin.join("stalwart"), Some(65534), Some(65534)).unwrap();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &staged).unwrap();
        let st = stage(&bin, &staged, &new).unwrap();
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "symlink followed"
        );
        let md = std::fs::symlink_metadata(&staged).unwrap();
        assert!(md.is_dir() && md.uid() == 0 && md.permissions().mode() & 0o777 == 0o700);
        assert_eq!(std::fs::metadata(staged.join("stalwart")).unwrap().uid(), 0);
        hand_over(&st).unwrap();
        let md = std::fs::metadata(&staged).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534));
        assert_eq!(
            std::fs::metadata(staged.join("stalwart")).unwrap().uid(),
            65534
        );
    }

    #[test]
    fn version_check_runs_a_binary_root_does_not_own_as_its_owner() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = t.path().join("stalwart");
        std::fs::write(&p, "#!/bin/sh\necho 0.0.$(id -u)\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(binary_version(&p).unwrap().to_string(), "0.0.0");
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        assert_eq!(binary_version(&p).unwrap().to_string(), "0.0.65534");
    }

    #[test]
    fn version_check_runs_as_whoever_could_change_what_runs() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = real.join("stalwart");
        std::fs::write(&p, "#!/bin/sh\necho 0.0.$(id -u)\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(binary_version(&p).unwrap().to_string(), "0.0.0");

        // Root's file in a directory the service user owns (install.sh's bin/): they could
        // swap it between our check and the exec.
        std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
        assert_eq!(binary_version(&p).unwrap().to_string(), "0.0.65534");
        std::os::unix::fs::chown(&real, Some(0), Some(0)).unwrap();

        // A symlink the service user owns, to root's binary, in a root-owned directory.
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let link = bin.join("stalwart");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(binary_version(&link).unwrap().to_string(), "0.0.0");
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        assert_eq!(binary_version(&link).unwrap().to_string(), "0.0.65534");

        // A directory anybody may write: nobody.
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(binary_version(&p).unwrap().to_string(), "0.0.65534");
    }

    #[test]
    fn sha256sums_lookup() {
        let t = tempfile::tempdir().unwrap();
        let f = script(t.path(), "stalwart", "0.15.6");
        let sha = sha256_file(&f).unwrap();
        let sums = t.path().join("SHA256SUMS");
        std::fs::write(&sums, format!("{sha}  stalwart\n")).unwrap();
        verify_sha256sums(&f, &sums, &sha).unwrap();
        std::fs::write(&sums, format!("{}  stalwart\n", "0".repeat(64))).unwrap();
        assert!(matches!(
            verify_sha256sums(&f, &sums, &sha),
            Err(SwapError::Checksum { .. })
        ));
        std::fs::write(&sums, "abc  other\n").unwrap();
        assert!(matches!(
            verify_sha256sums(&f, &sums, &sha),
            Err(SwapError::NotListed { .. })
        ));
    }

    #[test]
    fn version_check_rejects_garbage() {
        let t = tempfile::tempdir().unwrap();
        let f = script(t.path(), "x", "not-a-version");
        assert!(matches!(
            binary_version(&f),
            Err(SwapError::VersionCheck { .. })
        ));
    }
}
