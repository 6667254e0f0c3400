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
//!   PREFIX/etc/stalwart.env (its password hash works there unchanged), so the admin's login
//!   keeps working.

pub mod apply;
pub mod convert;
pub mod dump;
pub mod listeners;

pub use convert::{Carried, Op};
pub use dump::Dump;

use crate::config::Settings;
use crate::fsutil::Dir;
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
pub fn dir(state: &crate::state::StateDir, txid: &str) -> PathBuf {
    state.root.join("carry").join(txid)
}

/// Reads and converts 0.15's directory through `api` (the running 0.15, the admin's
/// credentials).
pub fn prepare(api: &crate::webadmin::Api, hostname: &str) -> Result<(Dump, Carried), CarryError> {
    let d = dump::dump(api).map_err(CarryError::Dump)?;
    let c = convert::convert(&d, hostname, &sha512_crypt)?;
    Ok((d, c))
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
    if let Some((u, _)) = &c.admin {
        out.push(format!(
            "admin:         the 0.15 fallback admin `{u}` keeps its password, as 0.16's STALWART_RECOVERY_ADMIN in etc/stalwart.env"
        ));
    }
    for (what, n) in &c.left_behind {
        out.push(format!("left behind:   {n} x {what}"));
    }
    out
}

/// Keeps the dump and the converted objects in the crossing's dir, 0600.
pub fn save(dir: &Path, d: &Dump, c: &Carried) -> Result<(), CarryError> {
    let err = |message: String| CarryError::File {
        path: dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let d_json = serde_json::to_vec_pretty(d).map_err(|e| err(e.to_string()))?;
    let c_json = serde_json::to_vec_pretty(c).map_err(|e| err(e.to_string()))?;
    crate::state::write_atomic(&dir.join("dump.json"), &d_json, 0o600)
        .map_err(|e| err(e.to_string()))?;
    crate::state::write_atomic(&dir.join("objects.json"), &c_json, 0o600)
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The one-time administrator of the recovery-mode start: a random login only this run knows.
pub fn one_time_admin() -> Result<(String, String), CarryError> {
    let pw = crate::hooks::system::random_password(32).map_err(|e| CarryError::File {
        path: "/dev/urandom".into(),
        message: e.to_string(),
    })?;
    Ok(("stalwart-upgrade".into(), pw))
}

/// The name of stalwart.env's saved original in the crossing's dir; `ENV_CREATED` marks an env
/// file the crossing created.
const ENV_ORIGINAL: &str = "stalwart.env.before";
const ENV_CREATED: &str = "stalwart.env.created";

/// Pins the 0.15 fallback admin as 0.16's `STALWART_RECOVERY_ADMIN` in PREFIX/etc/stalwart.env
/// (root:stalwart 0640 as install.sh 0.16 makes it), replacing any such line; what was there is
/// kept in `dir` for the undo. Single-quoted: systemd takes the value verbatim then (a `$6$`
/// hash has `$` in it).
pub fn pin_admin(s: &Settings, dir: &Path, admin: &(String, String)) -> Result<(), CarryError> {
    let path = s.prefix.join("etc/stalwart.env");
    let ferr = |e: crate::fsutil::FsError| CarryError::File {
        path: path.clone(),
        message: e.to_string(),
    };
    let (etc, name) = Dir::open_parent(&path).map_err(ferr)?;
    let before = match etc.stat(&name).map_err(ferr)? {
        Some(_) => Some(etc.read_file(&name, 1 << 20).map_err(ferr)?),
        None => None,
    };
    let save_err = |e: crate::state::StateError| CarryError::File {
        path: dir.to_owned(),
        message: e.to_string(),
    };
    match &before {
        Some(b) if !dir.join(ENV_ORIGINAL).exists() => {
            crate::state::write_atomic(&dir.join(ENV_ORIGINAL), b, 0o600).map_err(save_err)?
        }
        None if !dir.join(ENV_ORIGINAL).exists() => {
            crate::state::write_atomic(&dir.join(ENV_CREATED), b"", 0o600).map_err(save_err)?
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
    let gid = etc.meta().map(|m| m.gid).map_err(ferr)?;
    etc.write_atomic(&name, text.as_bytes(), 0o640, Some((0, gid)))
        .map_err(ferr)?;
    Ok(())
}

/// Undo of `pin_admin`: the env file as it was (or gone, if the crossing created it).
pub fn unpin_admin(s: &Settings, dir: &Path) -> Result<(), CarryError> {
    let path = s.prefix.join("etc/stalwart.env");
    let ferr = |e: crate::fsutil::FsError| CarryError::File {
        path: path.clone(),
        message: e.to_string(),
    };
    if let Ok(before) = std::fs::read(dir.join(ENV_ORIGINAL)) {
        let (etc, name) = Dir::open_parent(&path).map_err(ferr)?;
        let gid = etc.meta().map(|m| m.gid).map_err(ferr)?;
        etc.write_atomic(&name, &before, 0o640, Some((0, gid)))
            .map_err(ferr)?;
    } else if dir.join(ENV_CREATED).exists() {
        let (etc, name) = Dir::open_parent(&path).map_err(ferr)?;
        etc.remove_file(&name).map_err(ferr)?;
    }
    Ok(())
}
