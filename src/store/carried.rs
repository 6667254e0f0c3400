//! The record a 0.15 -> 0.16 crossing keeps in the state dir (carry/<txid>/, root-only): the
//! dump of 0.15's directory and the converted objects (secrets: password hashes, DKIM keys),
//! the env file as it was before the crossing pinned the admin in it (the undo puts it back),
//! and the reports that outlive the secrets. The engine's undo and commit use it as well as the
//! crossing's flow.

use crate::config::Settings;
use crate::os::fsutil::Dir;
use std::path::{Path, PathBuf};

/// A file of the crossing's record that could not be read, written or removed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CarriedError {
    pub path: PathBuf,
    pub message: String,
}

/// Where a crossing keeps its dump and converted objects (root-only, part of its record).
pub fn dir(state: &crate::store::state::StateDir, txid: &str) -> PathBuf {
    state.root.join("carry").join(txid)
}

/// The files of a crossing's dir that hold no secret: what `plan` showed (counts, the admin's
/// login name), and the settings an admin changed that stay behind (secret values left out),
/// kept when the rest goes (`expire`).
pub const REPORT: &str = "report.txt";
pub const LEFT_BEHIND: &str = "left-behind.txt";

/// How long a crossing's dump stays when no other transaction commits after it.
pub const DUMP_KEEP_DAYS: u64 = 14;

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
) -> Result<Vec<String>, CarriedError> {
    let root = state.root.join("carry");
    let ferr = |e: crate::os::fsutil::FsError| CarriedError {
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

/// The name of stalwart.env's saved original in the crossing's dir; `ENV_CREATED` marks an env
/// file the crossing created.
pub const ENV_ORIGINAL: &str = "stalwart.env.before";
const ENV_CREATED: &str = "stalwart.env.created";

/// Pins the 0.15 fallback admin as 0.16's `STALWART_RECOVERY_ADMIN` in the server's env file
/// (`Settings::server_env`, root's directory), replacing any such line; what was there is kept
/// in `dir` for the undo. Single-quoted: systemd takes the value verbatim then (a `$6$` hash has
/// `$` in it).
pub fn pin_admin(s: &Settings, dir: &Path, admin: &(String, String)) -> Result<(), CarriedError> {
    let path = s.server_env.clone();
    let ferr = |e: crate::server::serverenv::EnvFileError| CarriedError {
        path: path.clone(),
        message: e.to_string(),
    };
    crate::server::serverenv::move_legacy_env(s).map_err(ferr)?;
    let before = crate::server::serverenv::read_server_env(s).map_err(ferr)?;
    let save_err = |e: crate::store::state::StateError| CarriedError {
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
pub fn unpin_admin(s: &Settings, dir: &Path) -> Result<(), CarriedError> {
    let ferr = |e: crate::server::serverenv::EnvFileError| CarriedError {
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
