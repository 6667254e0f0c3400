//! What the helper does, each as one short list of steps: the upgrade, the rollback, the
//! snapshot restore, the crossing of the 0.16 line and what it carries, the probation, `status`.

pub mod carry;
pub mod crossing;
pub mod probation;
pub mod restore;
pub mod rollback;
pub mod status;
pub mod steps;
pub mod upgrade;
