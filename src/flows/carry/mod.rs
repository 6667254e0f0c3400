//! Carrying 0.15's directory and settings across the 0.16 line (upstream's UPGRADING/v0_16.md):
//! 0.16's migration of schema 5 wipes every account, group, list, domain and setting while it
//! keeps the mail, so without this the mail is there and nobody can log in to read it.
//!
//! * before any downtime, `prepare` reads 0.15's settings and directory through its management
//!   API with the admin's credentials (`dump`) and converts them (`convert`, `listeners`); `plan`
//!   prints what goes over and what stays behind, and the transaction keeps both files in the
//!   state dir (0600);
//! * during the crossing's recovery-mode start (a one-time recovery administrator made by the
//!   helper, in a root-only runtime env file), `apply` creates the objects and queues the quota
//!   recalculation; any refusal fails the step and the crossing rolls back to 0.15;
//! * the 0.15 fallback administrator becomes 0.16's `STALWART_RECOVERY_ADMIN` in
//!   the server's env file (its password hash works there unchanged), so the admin's login
//!   keeps working.

pub mod accept;
pub mod apply;
pub mod convert;
pub mod defaults;
pub mod dump;
pub mod listeners;
pub mod settings;

pub use convert::{Carried, Machine, Op};
pub use dump::Dump;

use crate::config::Settings;
use crate::os::fsutil::Dir;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    #[error("the 0.15 -> 0.16 crossing reads 0.15's accounts and settings through its management API first (0.16's migration wipes them): {0}; nothing was changed")]
    Dump(dump::DumpError),
    #[error("converting 0.15's directory for 0.16: {0}; nothing was changed")]
    Convert(#[from] convert::ConvertError),
    #[error("creating the carried objects in 0.16: {0}")]
    Apply(#[from] apply::ApplyError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Where a crossing keeps its dump and converted objects (root-only, part of its record).
pub fn dir(state: &crate::store::state::StateDir, txid: &str) -> PathBuf {
    state.root.join("carry").join(txid)
}

/// Reads and converts 0.15's directory through `api` (the running 0.15, the admin's
/// credentials).
pub fn prepare(
    api: &crate::server::webadmin::Api,
    machine: &Machine,
) -> Result<(Dump, Carried), CarryError> {
    let d = dump::dump(api).map_err(CarryError::Dump)?;
    let c = convert::convert(&d, machine, &sha512_crypt)?;
    Ok((d, c))
}

/// The machine's names: `gethostname` (0.15's fallback) and the fully qualified name
/// `hostname -f` prints (getaddrinfo's canonical name of it). The resolver may wait on a DNS
/// server that does not answer: after 5 s the machine has no fully qualified name.
pub fn machine() -> Machine {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let n = name.clone();
    // Detached on purpose: a resolver stuck past the timeout must not hold the upgrade.
    std::thread::spawn(move || {
        let _ = tx.send(canonical_name(&n));
    });
    let fqdn = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .ok()
        .flatten();
    Machine { name, fqdn }
}

/// getaddrinfo(name, AI_CANONNAME)'s canonical name, as `hostname -f` asks for it.
fn canonical_name(name: &str) -> Option<String> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a zeroed addrinfo is a valid hints value; getaddrinfo's result is freed below and
    // ai_canonname read before that.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_flags = libc::AI_CANONNAME;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res) != 0 || res.is_null() {
            return None;
        }
        let canon = (*res).ai_canonname;
        let out = (!canon.is_null()).then(|| {
            std::ffi::CStr::from_ptr(canon)
                .to_string_lossy()
                .into_owned()
        });
        libc::freeaddrinfo(res);
        out.filter(|s| !s.is_empty())
    }
}

/// A plain-text password as sha512-crypt (what 0.15's `--init` writes too), which 0.16 stores
/// verbatim instead of applying its strength policy to it.
fn sha512_crypt(pw: &str) -> String {
    let params = sha_crypt::Sha512Params::new(5000).unwrap_or_default();
    sha_crypt::sha512_simple(pw, &params).unwrap_or_default()
}

/// The lines `plan` shows.
pub fn describe(c: &Carried) -> Vec<String> {
    let mut out = Vec::new();
    let counts = c.counts();
    if counts.is_empty() {
        out.push("carried over:  nothing (0.15's directory is empty)".into());
    } else {
        let list: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push(format!("carried over:  {}", list.join(", ")));
    }
    if let Some(h) = &c.hostname {
        out.push(format!(
            "hostname:      {} (0.16's default hostname: {})",
            h.name, h.source
        ));
    }
    for r in &c.refused {
        out.push(format!("0.16 refuses:  {r}"));
    }
    if let Some((u, _)) = &c.admin {
        out.push(format!(
            "admin:         the 0.15 fallback admin `{u}` keeps its password, as 0.16's STALWART_RECOVERY_ADMIN in the server's env file"
        ));
    }
    if !c.carried_settings.is_empty() {
        out.push(format!(
            "settings:      {} an admin changed, carried: {}",
            c.carried_settings.len(),
            c.carried_settings.join(", ")
        ));
    }
    for (what, n) in &c.left_behind {
        out.push(format!("left behind:   {n} x {what}"));
    }
    out
}

/// The files of a crossing's dir that hold no secret: what `plan` showed (counts, the admin's
/// login name), and the settings an admin changed that stay behind (secret values left out),
/// kept when the rest goes (`expire`).
const REPORT: &str = "report.txt";
pub const LEFT_BEHIND: &str = "left-behind.txt";

/// `left-behind.txt`: each setting an admin changed from 0.15's defaults that 0.16 does not get,
/// `key = value` as 0.15 lists it, to set again in 0.16 where it has a counterpart. A value
/// whose key names a secret (password, secret, key, token) is left out: it is in dump.json,
/// which goes at the next commit, while this file stays.
pub fn left_behind_report(c: &Carried) -> String {
    let mut out = String::from(
        "# Settings of 0.15 that an admin changed from its defaults and that the crossing did not\n\
         # carry to 0.16 (0.16 has no such setting, or keeps it elsewhere): set them again in 0.16\n\
         # where it has a counterpart. Settings still at 0.15's defaults are not listed.\n",
    );
    for (k, v) in &c.changed {
        let last = k.rsplit('.').next().unwrap_or(k).to_lowercase();
        let secret = ["secret", "password", "key", "token"]
            .iter()
            .any(|w| last.contains(w));
        if secret {
            out.push_str(&format!(
                "{k} = (a secret: see dump.json until the next commit)\n"
            ));
        } else {
            out.push_str(&format!("{k} = {v:?}\n"));
        }
    }
    out
}

/// How long a crossing's dump stays when no other transaction commits after it.
pub const DUMP_KEEP_DAYS: u64 = 14;

/// Keeps the dump and the converted objects in the crossing's dir, 0600, with a report of what
/// was carried that outlives them.
pub fn save(dir: &Path, d: &Dump, c: &Carried) -> Result<(), CarryError> {
    let err = |message: String| CarryError::File {
        path: dir.to_owned(),
        message,
    };
    // Durably: the undo restores stalwart.env from these files, which power loss must not take
    // with a new directory's entry.
    crate::store::state::create_dir_all_durable(dir).map_err(|e| err(e.to_string()))?;
    let d_json = serde_json::to_vec_pretty(d).map_err(|e| err(e.to_string()))?;
    let c_json = serde_json::to_vec_pretty(c).map_err(|e| err(e.to_string()))?;
    crate::store::state::write_atomic(&dir.join("dump.json"), &d_json, 0o600)
        .map_err(|e| err(e.to_string()))?;
    crate::store::state::write_atomic(&dir.join("objects.json"), &c_json, 0o600)
        .map_err(|e| err(e.to_string()))?;
    let report: String = describe(c).iter().map(|l| format!("{l}\n")).collect();
    crate::store::state::write_atomic(&dir.join(REPORT), report.as_bytes(), 0o600)
        .map_err(|e| err(e.to_string()))?;
    crate::store::state::write_atomic(
        &dir.join(LEFT_BEHIND),
        left_behind_report(c).as_bytes(),
        0o600,
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// At a commit: removes what crossings kept that holds secrets (the dump and the converted
/// objects carry every password hash and DKIM private key of 0.15's directory, and the saved
/// stalwart.env the credentials of the server's admin), keeping each one's report. A crossing
/// needs them only until it is committed or undone: the undo restores stalwart.env from them.
/// So they go once a later transaction (`current` is the one committing) commits, or once
/// `current` itself is older than `max_age` (its commit came long after: a recovery). Removed
/// durably (the directories fsync'd): a crash must not bring them back. Returns the crossings
/// whose secrets were removed.
pub fn expire(
    state: &crate::store::state::StateDir,
    current: &str,
    now_secs: u64,
    max_age_secs: u64,
) -> Result<Vec<String>, CarryError> {
    let root = state.root.join("carry");
    let ferr = |e: crate::os::fsutil::FsError| CarryError::File {
        path: e.path.clone(),
        message: e.to_string(),
    };
    let carry = match Dir::open(&root) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(ferr(e)),
    };
    let mut cleared = Vec::new();
    for txid in carry.entries().map_err(ferr)? {
        let dir = match carry.open_dir(&txid) {
            Ok(d) => d,
            // Not a directory of ours (the state dir is root's: nothing else is put here).
            Err(_) => continue,
        };
        let secrets: Vec<_> = dir
            .entries()
            .map_err(ferr)?
            .into_iter()
            .filter(|n| n != REPORT && n != LEFT_BEHIND)
            .collect();
        if secrets.is_empty() {
            continue;
        }
        // The crossing's age: when its dump was written.
        let written = dir
            .stat("dump.json")
            .ok()
            .flatten()
            .or_else(|| dir.meta().ok())
            .map_or(0, |m| m.mtime.0.max(0) as u64);
        let old = now_secs.saturating_sub(written) > max_age_secs;
        if txid == current && !old {
            continue;
        }
        for n in &secrets {
            dir.remove_tree(n).map_err(ferr)?;
        }
        dir.fsync().map_err(ferr)?;
        if dir.entries().map_err(ferr)?.is_empty() {
            carry.remove_tree(&txid).map_err(ferr)?;
            carry.fsync().map_err(ferr)?;
        }
        cleared.push(txid.to_string_lossy().into_owned());
    }
    Ok(cleared)
}

/// The one-time administrator of the recovery-mode start: a random login only this run knows.
pub fn one_time_admin() -> Result<(String, String), CarryError> {
    let pw = crate::server::credentials::random_password(32).map_err(|e| CarryError::File {
        path: "/dev/urandom".into(),
        message: e.to_string(),
    })?;
    Ok(("stalwart-upgrade".into(), pw))
}

/// The name of stalwart.env's saved original in the crossing's dir; `ENV_CREATED` marks an env
/// file the crossing created.
const ENV_ORIGINAL: &str = "stalwart.env.before";
const ENV_CREATED: &str = "stalwart.env.created";

/// Pins the 0.15 fallback admin as 0.16's `STALWART_RECOVERY_ADMIN` in the server's env file
/// (`Settings::server_env`, root's directory), replacing any such line; what was there is kept
/// in `dir` for the undo. Single-quoted: systemd takes the value verbatim then (a `$6$` hash has
/// `$` in it).
pub fn pin_admin(s: &Settings, dir: &Path, admin: &(String, String)) -> Result<(), CarryError> {
    let path = s.server_env.clone();
    let ferr = |e: crate::server::serverenv::EnvFileError| CarryError::File {
        path: path.clone(),
        message: e.to_string(),
    };
    crate::server::serverenv::move_legacy_env(s).map_err(ferr)?;
    let before = crate::server::serverenv::read_server_env(s).map_err(ferr)?;
    let save_err = |e: crate::store::state::StateError| CarryError::File {
        path: dir.to_owned(),
        message: e.to_string(),
    };
    match &before {
        Some(b) if !dir.join(ENV_ORIGINAL).exists() => {
            crate::store::state::write_atomic(&dir.join(ENV_ORIGINAL), b, 0o600)
                .map_err(save_err)?
        }
        None if !dir.join(ENV_ORIGINAL).exists() => {
            crate::store::state::write_atomic(&dir.join(ENV_CREATED), b"", 0o600)
                .map_err(save_err)?
        }
        _ => {}
    }
    let mut text: String = before
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("STALWART_RECOVERY_ADMIN="))
        .map(|l| format!("{l}\n"))
        .collect();
    if before.is_none() {
        text.push_str("# Environment of the Stalwart service (0.16 and later).\n");
    }
    text.push_str(&format!(
        "# The 0.15 fallback administrator, carried over by stalwart-upgrade: log in as `{}` with its old password.\n\
         STALWART_RECOVERY_ADMIN='{}:{}'\n",
        admin.0, admin.0, admin.1
    ));
    crate::server::serverenv::write_server_env(s, text.as_bytes()).map_err(ferr)?;
    Ok(())
}

/// Undo of `pin_admin`: the env file as it was (or gone, if the crossing created it).
pub fn unpin_admin(s: &Settings, dir: &Path) -> Result<(), CarryError> {
    let ferr = |e: crate::server::serverenv::EnvFileError| CarryError::File {
        path: s.server_env.clone(),
        message: e.to_string(),
    };
    if let Ok(before) = std::fs::read(dir.join(ENV_ORIGINAL)) {
        crate::server::serverenv::write_server_env(s, &before).map_err(ferr)?;
    } else if dir.join(ENV_CREATED).exists() {
        crate::server::serverenv::remove_server_env(s).map_err(ferr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::StateDir;

    fn crossing(state: &StateDir, txid: &str) -> PathBuf {
        let dir = super::dir(state, txid);
        let d = Dump {
            settings: [("k".to_string(), "v".to_string())].into(),
            principals: vec![serde_json::json!({"id": 1, "secrets": ["$6$hash"]})],
        };
        save(&dir, &d, &Carried::default()).unwrap();
        crate::store::state::write_atomic(&dir.join(ENV_ORIGINAL), b"X=1\n", 0o600).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_dump_goes_at_the_next_commit_and_its_report_stays() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: t.path().to_owned(),
        };
        let old = crossing(&state, "tx-crossing");
        let now = crate::os::clock::now_secs();
        let age = DUMP_KEEP_DAYS * 86_400;
        // The crossing's own commit keeps it (its undo may still need stalwart.env.before).
        assert!(expire(&state, "tx-crossing", now, age).unwrap().is_empty());
        assert_eq!(
            names(&old),
            [
                "dump.json",
                "left-behind.txt",
                "objects.json",
                "report.txt",
                "stalwart.env.before"
            ]
        );
        // The next transaction commits: the secrets go, the report stays.
        assert_eq!(
            expire(&state, "tx-next", now, age).unwrap(),
            ["tx-crossing"]
        );
        assert_eq!(names(&old), ["left-behind.txt", "report.txt"]);
        let report = std::fs::read_to_string(old.join("report.txt")).unwrap();
        assert!(
            report.contains("carried over") && !report.contains("$6$"),
            "{report}"
        );
        // Nothing left to do the next time.
        assert!(expire(&state, "tx-later", now, age).unwrap().is_empty());
        // A crossing without a report (written before reports existed) goes whole.
        let bare = crossing(&state, "tx-bare");
        std::fs::remove_file(bare.join("report.txt")).unwrap();
        std::fs::remove_file(bare.join("left-behind.txt")).unwrap();
        expire(&state, "tx-later", now, age).unwrap();
        assert!(!bare.exists());
    }

    #[test]
    fn left_behind_lists_changed_settings_with_values_but_no_secret() {
        let c = Carried {
            changed: vec![
                ("queue.schedule.remote.expire".into(), "5d".into()),
                ("queue.route.relay.auth.secret".into(), "hunter2".into()),
                ("session.auth.key".into(), "k3y".into()),
            ],
            ..Carried::default()
        };
        let r = left_behind_report(&c);
        assert!(r.contains("queue.schedule.remote.expire = \"5d\"\n"), "{r}");
        assert!(
            r.contains("queue.route.relay.auth.secret = (a secret"),
            "{r}"
        );
        assert!(!r.contains("hunter2") && !r.contains("k3y"), "{r}");
    }

    #[test]
    fn a_crossing_committed_long_after_its_dump_clears_it_at_once() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: t.path().to_owned(),
        };
        let dir = crossing(&state, "tx-slow");
        let age = DUMP_KEEP_DAYS * 86_400;
        let later = crate::os::clock::now_secs() + age + 60;
        assert_eq!(expire(&state, "tx-slow", later, age).unwrap(), ["tx-slow"]);
        assert_eq!(names(&dir), ["left-behind.txt", "report.txt"]);
        // No crossing at all: nothing to do, no error.
        let empty = tempfile::tempdir().unwrap();
        let none = StateDir {
            root: empty.path().to_owned(),
        };
        assert!(expire(&none, "tx", later, age).unwrap().is_empty());
    }
}
