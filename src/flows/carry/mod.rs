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

use crate::store::carried::{LEFT_BEHIND, REPORT};
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
    #[error(transparent)]
    Record(#[from] crate::store::carried::CarriedError),
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

/// The one-time administrator of the recovery-mode start: a random login only this run knows.
pub fn one_time_admin() -> Result<(String, String), CarryError> {
    let pw = crate::server::credentials::random_password(32).map_err(|e| CarryError::File {
        path: "/dev/urandom".into(),
        message: e.to_string(),
    })?;
    Ok(("stalwart-upgrade".into(), pw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::carried::{expire, DUMP_KEEP_DAYS, ENV_ORIGINAL};
    use crate::store::state::StateDir;

    fn crossing(state: &StateDir, txid: &str) -> PathBuf {
        let dir = crate::store::carried::dir(state, txid);
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
