//! Committing a transaction whose health gate passed: hash the snapshot (off the downtime
//! path), refresh the web admin (reported, never rolled back), close the journal, clear the
//! failure marker, move the package hold to the new line, apply the snapshot retention.

use crate::engine::ending::{close, report, title, Outcome, Report};
use crate::engine::journal::{Begin, Ending, Journal, Phase, Step, Summary, TxKind};
use crate::engine::resources::Resources;
use crate::engine::warning::Warning;
use crate::{server::webadmin, store::swap, Error};

/// The steps of every commit, after the flow's own.
pub const STEPS: &[Step] = &[Step::Verify, Step::Webadmin];

/// Completes a transaction whose health gate passed: hash the snapshot (off the downtime path),
/// refresh the web admin (reported, not rolled back), then close it as committed.
pub fn finish(m: &Resources, j: &mut Journal, sum: &Summary) -> Result<Report, Error> {
    let begin = sum
        .begin
        .clone()
        .ok_or_else(|| Error::Preflight("journal without a begin record".into()))?;
    let mut warnings = Vec::new();
    if let Some(id) = sum.snapshot_id() {
        // At boot the server's unit is ordered after this recovery: hashing a large snapshot
        // here would hold the mail server down for it (issue #25). Its copies stay checkable
        // by size, and `snapshot verify` hashes them later.
        if m.ctx.boot && !sum.done(Step::Verify) {
            warnings.push(Warning::SnapshotNotHashed { id: id.to_string() });
        } else if !sum.done(Step::Verify) {
            j.step(Step::Verify, Phase::Started, None)?;
            match m.snapshots().hash(id) {
                Ok(_) => j.step(Step::Verify, Phase::Done, None)?,
                Err(e) => warnings.push(Warning::SnapshotHashFailed {
                    id: id.to_string(),
                    error: e.to_string(),
                }),
            }
        }
    }
    if !m.ctx.boot && !sum.done(Step::Webadmin) && m.settings().webadmin.enabled && begin.was_active
    {
        j.step(Step::Webadmin, Phase::Started, None)?;
        match refresh_webadmin(m, &begin) {
            Ok(()) => j.step(Step::Webadmin, Phase::Done, None)?,
            Err(e) => {
                tracing::warn!(unit = %begin.unit, step = "webadmin", "web admin refresh failed: {e}");
                let hint = match &e {
                    // The crossing carries the 0.15 fallback admin and the accounts over, but
                    // not API keys, and an account's login becomes its full address in 0.16.
                    Error::Webadmin(
                        webadmin::WebadminError::Unauthorized { .. }
                        | webadmin::WebadminError::Forbidden { .. },
                    ) if sum.started(Step::Crossing) => format!(
                        " (after crossing to 0.16: API keys are not carried over and accounts log in with their full address; put a 0.16 admin's user:password in {cred} (the 0.15 fallback admin works as it was), then run `stalwart-upgrade webadmin refresh`)",
                        cred = m
                            .settings()
                            .webadmin
                            .credentials_file
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "the [webadmin] credentials_file".into())
                    ),
                    _ => String::new(),
                };
                warnings.push(Warning::WebadminRefreshFailed {
                    error: e.to_string(),
                    hint,
                });
            }
        }
    }
    // A rollback that put older data back says where the newer data went (nothing is deleted).
    let data = match (&begin.restore_from, sum.snapshot_id()) {
        (Some(older), Some(kept)) if begin.kind == TxKind::Rollback => format!(
            "; the data is snapshot {older}'s again, and the data as it was under {from} is kept in snapshot {kept} (`stalwart-upgrade snapshot list`)",
            from = begin.from
        ),
        (Some(_), Some(kept)) if begin.kind == TxKind::Restore => format!(
            "; the live data it replaced is kept in snapshot {kept} until you remove it (`stalwart-upgrade snapshot remove {kept}`)"
        ),
        _ => String::new(),
    };
    let stopped = match begin.kind {
        _ if begin.was_active => String::new(),
        TxKind::Upgrade => format!(
            "; {unit} was stopped before and stays stopped: {to} has not run yet (`systemctl start {unit}`; `stalwart-upgrade rollback` goes back to {from})",
            unit = begin.unit,
            to = begin.to,
            from = begin.from
        ),
        TxKind::Restore => format!(
            "; {unit} was stopped before and stays stopped",
            unit = begin.unit
        ),
        TxKind::Rollback => String::new(),
    };
    let message = format!(
        "{title}{class} committed{data}{stopped}{w}",
        title = title(&begin),
        class = match begin.kind {
            TxKind::Restore => String::new(),
            _ => format!(" ({})", begin.class),
        },
        w = if warnings.is_empty() {
            String::new()
        } else {
            let w: Vec<String> = warnings.iter().map(Warning::to_string).collect();
            format!("; WARNING: {}", w.join("; "))
        }
    );
    // The new version runs healthy: what cannot be written from here on (a full disk) becomes a
    // warning, never an error that would hide it.
    if let Err(e) = close(m, j, &begin, sum, Ending::Committed, &message, &warnings) {
        warnings.push(Warning::JournalNotClosed {
            path: j.path().to_owned(),
            error: e.to_string(),
            rolled_back: false,
            unit: begin.unit.clone(),
        });
    }
    if let Err(e) = m.state.clear_failed() {
        warnings.push(Warning::FailureMarkerNotCleared {
            error: e.to_string(),
        });
    }
    if begin.kind == TxKind::Upgrade {
        if let Err(e) = swap::remove_dir(&begin.staged_dir) {
            warnings.push(Warning::StagedNotRemoved {
                error: e.to_string(),
            });
        }
        // The hold follows the new line and the approval that allowed it is used up.
        if m.settings().policy.manage_holds {
            if let Err(e) = crate::policy::after_upgrade(m.settings(), &begin.to) {
                warnings.push(Warning::HoldNotMoved {
                    line: begin.to.line(),
                    error: e.to_string(),
                });
            }
        }
    }
    prune(m, sum, &mut warnings);
    expire_carried(m, &begin, &mut warnings);
    tracing::info!(unit = %begin.unit, from = %begin.from, to = %begin.to, outcome = "committed", "{message}");
    Ok(report(&begin, sum, Outcome::Committed, message, warnings))
}

fn refresh_webadmin(m: &Resources, begin: &Begin) -> Result<(), Error> {
    let cfg = m.server_config(&crate::server::lines::server_config_path(
        m.settings(),
        &begin.to,
    ))?;
    webadmin::refresh_unit(m.settings(), m.sys()?, &cfg)?;
    Ok(())
}

/// What a 0.15 -> 0.16 crossing kept with secrets in it (its directory dump, with password
/// hashes and DKIM keys) goes once it is no longer needed: at the commit of the next
/// transaction, or of the crossing itself when that comes `DUMP_KEEP_DAYS` late.
fn expire_carried(m: &Resources, begin: &Begin, warnings: &mut Vec<Warning>) {
    let max_age = crate::store::carried::DUMP_KEEP_DAYS * 86_400;
    match crate::store::carried::expire(m.state, &begin.txid, crate::os::clock::now_secs(), max_age)
    {
        Ok(gone) if !gone.is_empty() => tracing::info!(
            "removed the directory dumps of the crossings {} (their report.txt stays)",
            gone.join(", ")
        ),
        Ok(_) => {}
        Err(e) => warnings.push(Warning::CarriedDumpNotRemoved {
            error: e.to_string(),
            dir: m.state.root.join("carry"),
        }),
    }
}

/// Retention: keep the newest `snapshots.keep`, and always the protected ones
/// (`history::protected_snapshots`: this transaction's, and what a rollback of the running
/// release restores) and the set-aside ones (`Manifest::set_aside`, whatever their age).
fn prune(m: &Resources, sum: &Summary, warnings: &mut Vec<Warning>) {
    let running = sum.begin.as_ref().map(|b| b.to.clone());
    let protect = match running
        .map(|v| crate::engine::history::protected_snapshots(m.state, &v, sum.snapshot_id()))
        .transpose()
    {
        Ok(Some(p)) => p,
        Ok(None) => sum.snapshot_id().map(String::from).into_iter().collect(),
        Err(e) => {
            warnings.push(Warning::PruneSkipped {
                error: e.to_string(),
            });
            return;
        }
    };
    match m
        .snapshots()
        .prune(m.settings().snapshots.keep, &protect, false)
    {
        Ok(pruned) => {
            if !pruned.gone.is_empty() {
                let ids: Vec<&str> = pruned.gone.iter().map(|g| g.id.as_str()).collect();
                tracing::info!("pruned snapshots {}", ids.join(", "));
            }
            for (id, why) in pruned.failed {
                warnings.push(Warning::SnapshotNotPruned { id, why });
            }
        }
        Err(e) => warnings.push(Warning::PruneFailed {
            error: e.to_string(),
        }),
    }
}
