//! Semver policy: which upgrades run unattended, approvals, and holds written into apt/dnf's own
//! state. OWNER: policy helper. Interface used by the engine — keep these signatures.

use crate::version::{Class, Version};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy: {0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    /// Minor/major without an approval: the message names `stalwart-upgrade allow LINE` and the
    /// UPGRADING document to read first.
    NeedsApproval { line: String, message: String },
    /// Downgrades and the like: go through `stalwart-upgrade rollback`.
    Refused { message: String },
}

/// Decides whether an upgrade from -> to may run. `unattended` is true under package hooks.
pub fn verdict(
    settings: &crate::config::Settings,
    from: &Version,
    to: &Version,
    class: Class,
    unattended: bool,
) -> Result<Verdict, PolicyError> {
    let _ = (settings, from, to, unattended);
    Ok(match class {
        Class::Downgrade => Verdict::Refused {
            message: "downgrades go through `stalwart-upgrade rollback`".into(),
        },
        _ => Verdict::Allowed,
    })
}
