//! What the helper does, each as one short list of steps: the upgrade, the rollback, the
//! snapshot restore, the crossing of the 0.16 line and what it carries, the probation, `status`.

pub mod carry;
pub mod crossing;
pub mod plan;
pub mod probation;
pub mod restore;
pub mod rollback;
pub mod status;
pub mod steps;
pub mod upgrade;
pub mod watcher;

use crate::engine::ending::Report;
use crate::engine::resources::Resources;
use crate::engine::transaction;
use crate::{Context, Error};

/// How every flow that changes the server begins: with the state dir's lock, an interrupted
/// transaction finished or undone first (and, when that was an upgrade that finished, its
/// probation started), then `f`. A recovery that leaves the server needing an admin is the
/// answer instead: nothing new starts on top of it.
pub fn after_recovery(
    ctx: &Context,
    f: impl FnOnce(&Resources) -> Result<Report, Error>,
) -> Result<Report, Error> {
    transaction::after_recovery(ctx, |m, recovered| {
        probation::recovered(m, recovered);
        f(m)
    })
}
