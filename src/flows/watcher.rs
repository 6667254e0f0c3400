//! The probation's watcher (`stalwart-upgrade probation`, the transient unit
//! [`UNIT`](crate::flows::probation::UNIT)): looks at the server every [`TICK`] until the probation
//! ends, and rolls a release that crashed back with the admin's `rollback`. Apart from
//! `flows::probation` (its state, begun by the upgrade's commit) because it runs a flow of its
//! own: the rollback.

use crate::flows::probation::{current, end, end_of, look, Look, Probation, FAILS, TICK};
use crate::store::state::{FailedUpgrade, StateDir};
use crate::{Context, Error};

/// The watcher (`stalwart-upgrade probation`): looks every [`TICK`] until the probation ends.
pub fn watch(ctx: &Context) -> Result<(), Error> {
    let state = StateDir::open(&ctx.settings.state_dir)?;
    let sys = crate::os::systemd::Systemd::connect()?;
    let mut fails = 0u32;
    loop {
        let Some(p) = current(&state) else {
            end(&state);
            return Ok(());
        };
        let st = sys.state(&p.unit)?;
        let installed = crate::server::version::of_binary(&ctx.settings.server_binary()).ok();
        let now = crate::os::clock::now_ms();
        let mut verdict = look(&p, &st, installed.as_ref(), now);
        // A process younger than the gate's own bound (an admin's restart, a slow start) is not
        // judged by its readiness yet.
        let young = st.exec_main_start_us / 1000
            + ctx.settings.timeouts.ready_secs.saturating_mul(1000)
            > now;
        if verdict == Look::Running && young {
            fails = 0;
        } else if verdict == Look::Running {
            match crate::server::health::probe_ready(&p.health_url) {
                // 429: upstream's anonymous rate limit answered, so the server is up.
                Ok(200) | Ok(429) => fails = 0,
                other => {
                    fails += 1;
                    if fails >= FAILS {
                        verdict = Look::Crashed(format!(
                            "{}/healthz/ready failed {FAILS} times in a row after the commit (last: {})",
                            p.health_url,
                            match other {
                                Ok(code) => format!("HTTP {code}"),
                                Err(e) => e,
                            }
                        ));
                    }
                }
            }
        }
        match verdict {
            Look::Running => std::thread::sleep(TICK),
            // A later upgrade may have begun its own probation meanwhile: this watcher (the
            // one unit) goes on with it.
            Look::Passed => {
                tracing::info!(unit = %p.unit, to = %p.to, "{} passed its probation", p.to);
                end_of(&state, &p.txid);
                fails = 0;
            }
            Look::TakenOver(why) => {
                tracing::info!(unit = %p.unit, to = %p.to, "probation of {} ended: {why}", p.to);
                end_of(&state, &p.txid);
                fails = 0;
                std::thread::sleep(TICK);
            }
            // The probation ends after the rollback, not before: a watcher killed in between
            // leaves it on disk, and the watcher `recover` starts judges the release again.
            Look::Crashed(why) => {
                crate::engine::journal::test_point("probation:judged");
                let r = roll_back(ctx, &state, &p, &why);
                end_of(&state, &p.txid);
                return r;
            }
        }
    }
}

/// The release failed its probation: the admin's `rollback` to the version it came from, then
/// the failure marker (after the rollback, whose commit clears the marker), so neither apt nor
/// dnf nor a hook tries it again on its own.
fn roll_back(ctx: &Context, state: &StateDir, p: &Probation, why: &str) -> Result<(), Error> {
    tracing::error!(unit = %p.unit, from = %p.from, to = %p.to, "{} failed its probation: {why}; rolling back to {}", p.to, p.from);
    let req = crate::flows::rollback::RollbackRequest {
        to: Some(p.from.to_string()),
        binary_only: false,
        cluster_stopped: false,
        start: true,
    };
    let report = crate::flows::rollback::run(ctx, &req);
    let marker = FailedUpgrade {
        version: p.to.clone(),
        from: p.from.clone(),
        txid: p.txid.clone(),
        reason: format!("failed its probation after the commit: {why}"),
        at: crate::os::clock::now_secs(),
    };
    if let Err(e) = state.set_failed(&marker) {
        tracing::warn!("recording the failure of {} failed: {e}", p.to);
    }
    let (from, to) = (p.from.to_string(), p.to.to_string());
    match report {
        Ok(r) => {
            tracing::error!(unit = %p.unit, "probation rollback of {}: {}", p.to, r.message);
            crate::engine::announce::probation_rolled_back(&p.unit, &p.txid, &from, &to, why, true);
            Ok(())
        }
        Err(e) => {
            tracing::error!(unit = %p.unit, "probation rollback of {} FAILED: {e}", p.to);
            crate::engine::announce::probation_rolled_back(
                &p.unit, &p.txid, &from, &to, why, false,
            );
            Err(e)
        }
    }
}
