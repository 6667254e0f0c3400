//! Staging the new binary and exchanging /opt/stalwart/bin with bin.new.
//!
//! The spec makes bin/ a directory swapped as a whole, never written in place: the running server's
//! executable is never modified, and a crash leaves either the old or the new directory at bin/.
//! renameat2(RENAME_EXCHANGE) swaps the two names in one atomic step and keeps the old directory
//! (now at bin.new) for the way back.

use crate::os::child::Program;
use crate::os::fsutil::{self, Dir, FsError, Kind};
use crate::server::version::Version;
use crate::server::webui::BUNDLE;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Fs(#[from] FsError),
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
    #[error(transparent)]
    Version(#[from] crate::server::version::CheckError),
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

/// Env to force the rename fallback (tests of file systems without RENAME_EXCHANGE); only in a
/// build with the `fault-injection` feature.
pub const NO_EXCHANGE_ENV: &str = "STALWART_UPGRADE_NO_EXCHANGE";

/// sha256 of the regular file at `path` (no symlink followed anywhere on the way).
pub fn sha256_file(path: &Path) -> Result<String, SwapError> {
    Ok(Program::open(path)?.sha256()?)
}

pub fn hex(bytes: &[u8]) -> String {
    fsutil::hex(bytes)
}

/// Looks the file's name up in a SHA256SUMS file (`<hex>  <name>` or `<hex> *<name>`).
pub fn verify_sha256sums(path: &Path, sums: &Path, actual: &str) -> Result<(), SwapError> {
    let (dir, name) = Dir::open_parent(sums)?;
    let text = String::from_utf8_lossy(&dir.read_file(&name, 1 << 20)?).to_string();
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

/// Copies the regular file `from` (opened without following symlinks) to the new `name` in
/// `dir` with `mode`, fsync'd. Returns the copy's sha256 (of what was written).
fn copy_into(dir: &Dir, name: &OsStr, from: &Path, mode: u32) -> Result<String, SwapError> {
    let to = dir.path().join(name);
    let copy_err = |source: std::io::Error| SwapError::Copy {
        from: from.to_owned(),
        to: to.clone(),
        source,
    };
    let (sdir, sname) = Dir::open_parent(from)?;
    let (src, meta) = sdir.open_file(&sname)?;
    let dst = dir
        .create_file(name, 0o600)
        .map_err(|e| copy_err(e.source))?;
    fsutil::copy_content(&src, &dst, meta.size, &to).map_err(|e| copy_err(e.source))?;
    fsutil::set_mode(&dst, &to, mode).map_err(|e| copy_err(e.source))?;
    dst.sync_all().map_err(copy_err)?;
    drop(dst);
    let (check, _) = dir.open_file(name)?;
    Ok(fsutil::sha256_of(&check, &to)?)
}

/// Copies the web UI bundle that lies beside `binary` (a package's payload, a kept release) into
/// `dir`, readable by the server (it reads it by `file://`). Ok(false) when there is none.
fn copy_bundle(dir: &Dir, binary: &Path) -> Result<bool, SwapError> {
    copy_bundle_as(dir, BUNDLE, binary)
}

fn copy_bundle_as(dir: &Dir, name: &str, binary: &Path) -> Result<bool, SwapError> {
    let Some(bundle) = binary.parent().and_then(crate::server::webui::bundled) else {
        return Ok(false);
    };
    copy_into(dir, OsStr::new(name), &bundle, 0o644)?;
    Ok(true)
}

/// bin.new, built and checked while it belongs to root; `hand_over` gives it the owners bin/ has.
#[derive(Debug)]
pub struct Staged {
    pub sha256: String,
    dir: Dir,
    dir_owner: (u32, u32, u32),
    files: Vec<(OsString, u32, u32)>,
}

/// The directory holding `path` and its name, for a directory we create or replace there.
fn parent_and_name(path: &Path) -> Result<(Dir, OsString), SwapError> {
    Ok(Dir::open_parent(path)?)
}

/// Builds `staged` (bin.new) as root's 0700 directory: every other entry of `bin` (files
/// copied with their mode, symlinks recreated as symlinks, never followed) plus `target` as
/// `stalwart`. Entries of `bin` are read through its descriptor, owner and mode from `fstat` of
/// what is read.
pub fn stage(bin: &Path, staged: &Path, target: &Path) -> Result<Staged, SwapError> {
    let bin_dir = Dir::open(bin)?;
    let bin_meta = bin_dir.meta()?;
    let (parent, staged_name) = parent_and_name(staged)?;
    parent.remove_tree(&staged_name)?;
    let dir = parent.create_dir(&staged_name, 0o700)?;
    let mut files = Vec::new();
    for name in bin_dir.entries()? {
        // The web UI bundle belongs to the binary: the new one's comes with it (below).
        if name == "stalwart" || name == BUNDLE {
            continue;
        }
        let Some(m) = bin_dir.stat(&name)? else {
            continue;
        };
        match m.kind {
            Kind::Symlink => {
                let target = bin_dir.read_link(&name)?;
                dir.symlink(&target, &name)?;
                files.push((name, m.uid, m.gid));
            }
            Kind::File => {
                let (src, fm) = bin_dir.open_file(&name)?;
                let to = dir.path().join(&name);
                let dst = dir.create_file(&name, 0o600)?;
                fsutil::copy_content(&src, &dst, fm.size, &to)?;
                fsutil::set_mode(&dst, &to, fm.mode)?;
                dst.sync_all().map_err(io(&to))?;
                files.push((name, fm.uid, fm.gid));
            }
            _ => {}
        }
    }
    let (uid, gid, mode) = match bin_dir.stat("stalwart")? {
        Some(m) if m.kind == Kind::File => (m.uid, m.gid, m.mode),
        _ => (bin_meta.uid, bin_meta.gid, 0o755),
    };
    let sha256 = copy_into(&dir, OsStr::new("stalwart"), target, mode)?;
    files.push(("stalwart".into(), uid, gid));
    if copy_bundle(&dir, target)? {
        files.push((BUNDLE.into(), uid, gid));
    }
    dir.fsync()?;
    parent.fsync()?;
    Ok(Staged {
        sha256,
        dir,
        dir_owner: (bin_meta.uid, bin_meta.gid, bin_meta.mode),
        files,
    })
}

impl Staged {
    /// The staged server binary, opened from bin.new (still root's 0700).
    pub fn program(&self) -> Result<Program, SwapError> {
        Ok(Program::open(&self.dir.path().join("stalwart"))?)
    }
}

/// Gives bin.new and its entries the owners (and bin.new the mode) that bin/ has: through the
/// descriptor of bin.new, which nobody else could write so far.
pub fn hand_over(staged: &Staged) -> Result<(), SwapError> {
    for (name, uid, gid) in &staged.files {
        staged.dir.chown_entry(name, *uid, *gid)?;
    }
    let (uid, gid, mode) = staged.dir_owner;
    staged.dir.set_mode(mode)?;
    staged.dir.set_owner(uid, gid)?;
    staged.dir.fsync()?;
    Ok(())
}

/// Removes a directory tree of ours (bin.new, a staged release); a missing one is fine.
pub fn remove_dir(dir: &Path) -> Result<(), SwapError> {
    match Dir::open_parent(dir) {
        Ok((parent, name)) => Ok(parent.remove_tree(name)?),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn aside(bin: &Path) -> PathBuf {
    let mut s = bin.as_os_str().to_owned();
    s.push(".old");
    PathBuf::from(s)
}

fn name_of(p: &Path) -> OsString {
    p.file_name().map(|n| n.to_owned()).unwrap_or_default()
}

/// Exchanges bin/ and bin.new (siblings) atomically, through the directory holding them.
pub fn exchange(bin: &Path, staged: &Path) -> Result<(), SwapError> {
    let (parent, bin_name) = parent_and_name(bin)?;
    let staged_name = name_of(staged);
    let forced = cfg!(feature = "fault-injection") && std::env::var_os(NO_EXCHANGE_ENV).is_some();
    if !forced {
        if parent.exchange(&staged_name, &parent, &bin_name)? {
            parent.fsync()?;
            return Ok(());
        }
        tracing::warn!(
            "{} does not support RENAME_EXCHANGE; using the three-rename fallback",
            bin.display()
        );
    } else {
        tracing::warn!("{NO_EXCHANGE_ENV} is set: using the three-rename fallback");
    }
    let old = name_of(&aside(bin));
    parent.rename_noreplace(&bin_name, &parent, &old)?;
    parent.fsync()?;
    parent.rename_noreplace(&staged_name, &parent, &bin_name)?;
    parent.fsync()?;
    parent.rename_noreplace(&old, &parent, &staged_name)?;
    parent.fsync()?;
    Ok(())
}

fn sha_of(dir: &Path) -> Option<String> {
    Program::open(&dir.join("stalwart"))
        .ok()
        .and_then(|p| p.sha256().ok())
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ensured {
    AlreadyThere,
    ExchangedBack,
    RestoredFromRelease,
}

/// Makes bin/ hold the binary with sha256 `want_sha` again, whatever state an interrupted
/// exchange left: bin/, bin.new, bin.old, or rebuilt from the kept release.
pub fn ensure_binary(
    bin: &Path,
    staged: &Path,
    release: &Path,
    want_sha: &str,
    version: &Version,
) -> Result<Ensured, SwapError> {
    let (parent, bin_name) = parent_and_name(bin)?;
    let old = aside(bin);
    if !exists(bin) && exists(&old) {
        parent.rename_noreplace(name_of(&old), &parent, &bin_name)?;
        parent.fsync()?;
    }
    if sha_of(bin).as_deref() == Some(want_sha) {
        return Ok(Ensured::AlreadyThere);
    }
    for candidate in [staged, old.as_path()] {
        if sha_of(candidate).as_deref() == Some(want_sha) {
            if candidate == staged && exists(bin) {
                exchange(bin, staged)?;
            } else {
                parent.remove_tree(&bin_name)?;
                parent.rename_noreplace(name_of(candidate), &parent, &bin_name)?;
                parent.fsync()?;
            }
            return Ok(Ensured::ExchangedBack);
        }
    }
    if exists(release) && sha256_file(release)? == want_sha {
        stage_from_release(bin, staged, release)?;
        if exists(bin) {
            exchange(bin, staged)?;
        } else {
            parent.rename_noreplace(name_of(staged), &parent, &bin_name)?;
            parent.fsync()?;
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
    if exists(bin) {
        hand_over(&stage(bin, staged, release)?)
    } else {
        fresh_bin(staged, release)
    }
}

/// A new bin-like directory `dir` (0755) holding only `binary` as `stalwart` (0755): the first
/// install's bin/ is built this way, as bin.new, then renamed into place.
pub fn fresh_bin(dir: &Path, binary: &Path) -> Result<(), SwapError> {
    let (parent, name) = parent_and_name(dir)?;
    parent.remove_tree(&name)?;
    let d = parent.create_dir(&name, 0o700)?;
    copy_into(&d, OsStr::new("stalwart"), binary, 0o755)?;
    copy_bundle(&d, binary)?;
    d.set_mode(0o755)?;
    d.fsync()?;
    parent.fsync()?;
    Ok(())
}

/// Renames the directory `from` to the absent `to` (siblings), durably.
pub fn rename_dir(from: &Path, to: &Path) -> Result<(), SwapError> {
    let (parent, from_name) = parent_and_name(from)?;
    parent.rename_noreplace(from_name, &parent, name_of(to))?;
    parent.fsync()?;
    Ok(())
}

/// Keeps a copy of a binary as a release (root-only state dir) so a rollback has it even after
/// dpkg deleted the old package's files.
pub fn keep_release(binary: &Path, release: &Path) -> Result<String, SwapError> {
    let sha = sha256_file(binary)?;
    let dir_path = release.parent().unwrap_or(Path::new("/"));
    // Durably: a rollback after a power loss needs the kept release, whose directory is new.
    crate::store::state::create_dir_all_durable(dir_path).map_err(io(dir_path))?;
    let dir = Dir::open(dir_path)?;
    // The web UI it ran with goes back with it on a rollback: the bundle beside `binary`, or
    // none (whatever an earlier keep of the same binary left there).
    dir.remove_file(".webui.tmp")?;
    if copy_bundle_as(&dir, ".webui.tmp", binary)? {
        dir.rename(".webui.tmp", &dir, BUNDLE)?;
    } else {
        dir.remove_file(BUNDLE)?;
    }
    if exists(release) && sha256_file(release)? == sha {
        dir.fsync()?;
        return Ok(sha);
    }
    dir.remove_file(".stalwart.tmp")?;
    let copied = copy_into(&dir, OsStr::new(".stalwart.tmp"), binary, 0o755)?;
    if copied != sha {
        dir.remove_file(".stalwart.tmp")?;
        return Err(SwapError::WrongVersion {
            path: binary.to_owned(),
            found: format!("sha256 {copied} while it was copied"),
            expected: format!("sha256 {sha}"),
        });
    }
    dir.rename(".stalwart.tmp", &dir, name_of(release))?;
    dir.write_atomic(
        "sha256",
        format!("{sha}  stalwart\n").as_bytes(),
        0o600,
        None,
    )?;
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::version::of_binary;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
            crate::server::version::of_binary(&staged.join("stalwart"))
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
    #[cfg(feature = "fault-injection")]
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
    fn version_check_never_runs_as_root() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("stalwart");
        std::fs::write(&p, "#!/bin/sh\necho 0.0.$(id -u)\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Root's own file: nobody runs it (a version check needs no privilege).
        assert_eq!(of_binary(&p).unwrap().to_string(), "0.0.65534");
        // Someone else's: they run it (they could change it anyway).
        std::os::unix::fs::chown(&p, Some(4242), Some(4242)).unwrap();
        assert_eq!(of_binary(&p).unwrap().to_string(), "0.0.4242");
        // Writable by others: nobody.
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(of_binary(&p).unwrap().to_string(), "0.0.65534");
    }

    #[test]
    fn version_check_refuses_a_symlink_and_runs_what_it_opened() {
        let t = tempfile::tempdir().unwrap();
        let real = script(t.path(), "real", "0.15.5");
        let link = t.path().join("stalwart");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            of_binary(&link),
            Err(crate::server::version::CheckError { .. })
        ));
        // The descriptor, not the name, is what runs.
        let prog = Program::open(&real).unwrap();
        std::fs::remove_file(&real).unwrap();
        script(t.path(), "real", "9.9.9");
        assert_eq!(
            crate::server::version::of_program(&prog)
                .unwrap()
                .to_string(),
            "0.15.5"
        );
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
            of_binary(&f),
            Err(crate::server::version::CheckError { .. })
        ));
    }
}
