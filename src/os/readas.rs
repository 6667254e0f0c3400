//! Files a server config names: `%{file:..}%` macros (0.15), `File` secrets (0.16) and the
//! `stalwart.env` next to the config.
//!
//! The helper runs as root inside package upgrades, but the config it reads may be writable by
//! the server's own user (the server rewrites config.toml itself, facts: "the server may rewrite
//! config.toml"). Read as root, such a config could make the helper read any file on the machine
//! (`%{file:/etc/shadow}%` as a store path or a database name) and carry it into a message, a
//! plan or a dump's command line. So a file the config names is read with the file-system
//! identity of whoever controls the config: exactly what the server itself could read, since it
//! runs as that user. The kernel makes the check (permissions, ACLs, every directory on the
//! way), on a thread of our own whose file-system uid/gid alone are changed.

use crate::NOBODY;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who may read the files a config names. Kept in a snapshot's manifest: the copy of the config
/// a snapshot keeps is root's, but what it names is read as whoever controlled the original.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reader {
    /// The helper itself: the config is root's alone (or the helper is not root, and the kernel
    /// checks its own identity anyway).
    Helper,
    /// A file-system identity to take for the read.
    As {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
}

impl Reader {
    /// The reader of a config whose controller is not known (a snapshot from before the reader
    /// was recorded): nobody, never root.
    pub(crate) fn nobody() -> Reader {
        Reader::As {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![NOBODY],
        }
    }

    /// The reader for the config at `cfg_path`: its owner when that is not root; `nobody` (with
    /// the file's group, when that group may write it) when it is root's but writable by others.
    /// A path that does not exist (text parsed from elsewhere, as in tests) reads as the helper.
    pub(crate) fn for_config(cfg_path: &Path) -> Reader {
        if nix::unistd::geteuid().as_raw() != 0 {
            return Reader::Helper;
        }
        match std::fs::metadata(cfg_path) {
            Ok(md) => Self::from_owner(md.uid(), md.gid(), md.mode()),
            Err(_) => Reader::Helper,
        }
    }

    /// The reader for a config opened as `file` in the directory `dir` (both from `fstat` of the
    /// descriptors read): its owner when that is not root; else the directory's owner when that
    /// is not root (they can put another file in its place); `nobody` when root owns both but
    /// others may write either.
    pub(crate) fn for_file(
        file: &crate::os::fsutil::Meta,
        dir: &crate::os::fsutil::Meta,
    ) -> Reader {
        if nix::unistd::geteuid().as_raw() != 0 {
            return Reader::Helper;
        }
        if file.uid == 0 && dir.uid != 0 {
            return Self::from_owner(dir.uid, dir.gid, dir.mode & !0o022);
        }
        if file.uid == 0 && dir.writable_by_others() {
            return Self::from_owner(0, dir.gid, 0o002);
        }
        Self::from_owner(file.uid, file.gid, file.mode)
    }

    fn from_owner(uid: u32, gid: u32, mode: u32) -> Reader {
        if uid == 0 && mode & 0o022 == 0 {
            return Reader::Helper;
        }
        if uid == 0 {
            let gid = if mode & 0o020 != 0 { gid } else { NOBODY };
            return Reader::As {
                uid: NOBODY,
                gid,
                groups: vec![gid],
            };
        }
        // The owner's primary group and supplementary groups, as a login of that user has.
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let (gid, groups) = match user {
            Some(u) => {
                let name = std::ffi::CString::new(u.name.as_bytes()).unwrap_or_default();
                let groups = nix::unistd::getgrouplist(&name, u.gid)
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_else(|_| vec![u.gid.as_raw()]);
                (u.gid.as_raw(), groups)
            }
            None => (gid, vec![gid]),
        };
        Reader::As { uid, gid, groups }
    }
}

/// A regular file of at most `limit` bytes, as UTF-8 text, read as `reader`; Err says why not
/// (never with any of the contents).
pub(crate) fn read_as(reader: &Reader, file: &Path, limit: u64) -> Result<String, String> {
    match reader {
        Reader::Helper => read_small_file(file, limit),
        Reader::As { uid, gid, groups } => std::thread::scope(|s| {
            s.spawn(|| {
                take_fs_identity(*uid, *gid, groups)?;
                read_small_file(file, limit)
            })
            .join()
            .unwrap_or_else(|_| Err("the thread reading it failed".into()))
        }),
    }
}

/// Gives the calling thread (only) the file-system identity `uid`/`gid`/`groups`. Raw system
/// calls on purpose: glibc's setgroups() changes every thread of the process, the kernel's call
/// changes one. Changing the fsuid from 0 drops the thread's CAP_DAC_OVERRIDE and
/// CAP_DAC_READ_SEARCH (capabilities(7)), so the kernel checks permissions as for that user.
/// Must run on a thread that ends afterwards.
fn take_fs_identity(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: plain system calls with a valid pointer/length pair and integer arguments; they
    // change this thread's credentials, nothing in memory.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(format!(
            "cannot take the groups of uid {uid} to read it: {}",
            std::io::Error::last_os_error()
        ));
    }
    // setfs[ug]id return the previous id and never fail loudly: ask again (with an invalid id,
    // which changes nothing) to know that the change took.
    let (now_gid, now_uid) = unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        (
            libc::syscall(libc::SYS_setfsgid, u32::MAX as libc::c_long),
            libc::syscall(libc::SYS_setfsuid, u32::MAX as libc::c_long),
        )
    };
    if now_uid != uid as libc::c_long || now_gid != gid as libc::c_long {
        return Err(format!("cannot take uid {uid} and gid {gid} to read it"));
    }
    Ok(())
}

/// A regular file of at most `limit` bytes, as UTF-8 text; Err says why not (never with any of
/// the contents). Only a regular file: a config naming `/dev/zero`, `/dev/stdin` or a FIFO must
/// not make the helper read forever or block.
fn read_small_file(file: &Path, limit: u64) -> Result<String, String> {
    // A symlink someone other than root made is not followed (issue #23): it could lead a read
    // made with more rights than its maker's to a file of root's.
    let link = fs_err::symlink_metadata(file).map_err(|e| e.to_string())?;
    if link.file_type().is_symlink() && link.uid() != 0 {
        return Err(format!(
            "it is a symbolic link made by uid {}, which is not followed",
            link.uid()
        ));
    }
    // Checked before opening (opening a FIFO for reading blocks), and again on the open file.
    let meta = fs_err::metadata(file).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(file)
            .map_err(|e| e.to_string())?
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "it is larger than {limit} bytes, too large for a secret or a value"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn who_reads_for_which_config() {
        assert_eq!(Reader::from_owner(0, 0, 0o100644), Reader::Helper);
        assert_eq!(Reader::from_owner(0, 0, 0o100600), Reader::Helper);
        assert_eq!(
            Reader::from_owner(0, 7, 0o100664),
            Reader::As {
                uid: NOBODY,
                gid: 7,
                groups: vec![7]
            }
        );
        assert_eq!(
            Reader::from_owner(0, 7, 0o100646),
            Reader::As {
                uid: NOBODY,
                gid: NOBODY,
                groups: vec![NOBODY]
            }
        );
        // A uid with no passwd entry keeps the file's group.
        assert_eq!(
            Reader::from_owner(4242, 4343, 0o100600),
            Reader::As {
                uid: 4242,
                gid: 4343,
                groups: vec![4343]
            }
        );
        let Reader::As { uid, gid, groups } = Reader::from_owner(NOBODY, 1, 0o100600) else {
            panic!("nobody's config read as the helper")
        };
        assert_eq!(
            (uid, gid),
            (NOBODY, NOBODY),
            "nobody's primary group from passwd"
        );
        assert!(groups.contains(&NOBODY));
    }

    /// Needs root (as the whole suite does): the point is what root may NOT read for a config
    /// someone else controls.
    #[test]
    fn a_config_someone_else_owns_reads_only_what_they_could() {
        assert_eq!(nix::unistd::geteuid().as_raw(), 0, "the suite runs as root");
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755);
        let root_only = t.path().join("root-only");
        std::fs::write(&root_only, "the root password\n").unwrap();
        chmod(&root_only, 0o600);
        let theirs = t.path().join("theirs");
        std::fs::write(&theirs, "their value\n").unwrap();
        chmod(&theirs, 0o600);
        std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
        let cfg = t.path().join("config.toml");
        std::fs::write(&cfg, "").unwrap();

        // Root's own config: root reads anything.
        let r = Reader::for_config(&cfg);
        assert_eq!(r, Reader::Helper);
        assert_eq!(
            read_as(&r, &root_only, 1024).unwrap(),
            "the root password\n"
        );

        // nobody's config: only nobody's file.
        std::os::unix::fs::chown(&cfg, Some(NOBODY), Some(NOBODY)).unwrap();
        let r = Reader::for_config(&cfg);
        assert!(matches!(r, Reader::As { uid: NOBODY, .. }), "{r:?}");
        let err = read_as(&r, &root_only, 1024).unwrap_err();
        assert!(err.contains("Permission denied"), "{err}");
        assert!(!err.contains("root password"));
        assert_eq!(read_as(&r, &theirs, 1024).unwrap(), "their value\n");

        // Root's config that others may write: as nobody too.
        std::os::unix::fs::chown(&cfg, Some(0), Some(0)).unwrap();
        chmod(&cfg, 0o666);
        let r = Reader::for_config(&cfg);
        assert!(read_as(&r, &root_only, 1024).is_err());

        // The identity stayed on the reading thread: this one is still root.
        assert_eq!(
            read_as(&Reader::Helper, &root_only, 1024).unwrap().len(),
            18
        );
        assert_eq!(std::fs::read(&root_only).unwrap().len(), 18);
    }

    #[test]
    fn only_small_regular_files() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b'a'; 2000]).unwrap();
        assert!(read_as(&Reader::Helper, &big, 1000)
            .unwrap_err()
            .contains("larger than 1000 bytes"));
        assert!(read_as(&Reader::Helper, Path::new("/dev/zero"), 1000)
            .unwrap_err()
            .contains("not a regular file"));
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_as(&Reader::Helper, &fifo, 1000)
            .unwrap_err()
            .contains("not a regular file"));
    }
}
