//! systemd's unit states as types (its `DEFINE_STRING_TABLE_LOOKUP` tables: one name table per
//! enum serves reading and printing). A value systemd adds later parses as `Other(name)`, so an
//! unknown state is never mistaken for a known one.

use std::str::FromStr;

/// A unit's `ActiveState` (systemd `unit_active_state_table`).
#[derive(Debug, Clone, Default, PartialEq, Eq, strum::EnumString, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum ActiveState {
    Active,
    Reloading,
    #[default]
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Maintenance,
    Refreshing,
    #[strum(default)]
    Other(String),
}

impl ActiveState {
    /// Running or about to: what `systemctl is-active` calls up, and what a restart by
    /// `Restart=` passes through.
    pub fn is_up(&self) -> bool {
        matches!(
            self,
            ActiveState::Active | ActiveState::Activating | ActiveState::Reloading
        )
    }

    /// No process left to wait for.
    pub fn is_down(&self) -> bool {
        matches!(self, ActiveState::Inactive | ActiveState::Failed)
    }
}

/// A unit's `LoadState` (systemd `unit_load_state_table`).
#[derive(Debug, Clone, Default, PartialEq, Eq, strum::EnumString, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum LoadState {
    Stub,
    #[default]
    Loaded,
    NotFound,
    BadSetting,
    Error,
    Merged,
    Masked,
    #[strum(default)]
    Other(String),
}

/// A service's `SubState` (systemd `service_state_table`).
#[derive(Debug, Clone, Default, PartialEq, Eq, strum::EnumString, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum ServiceState {
    #[default]
    Dead,
    Condition,
    StartPre,
    Start,
    StartPost,
    Running,
    Exited,
    Reload,
    ReloadSignal,
    ReloadNotify,
    Stop,
    StopWatchdog,
    StopSigterm,
    StopSigkill,
    StopPost,
    FinalWatchdog,
    FinalSigterm,
    FinalSigkill,
    Failed,
    DeadBeforeAutoRestart,
    FailedBeforeAutoRestart,
    DeadResourcesPinned,
    AutoRestart,
    AutoRestartQueued,
    Cleaning,
    #[strum(default)]
    Other(String),
}

impl ServiceState {
    /// Between a crash and the restart `Restart=` schedules.
    pub fn is_auto_restart(&self) -> bool {
        matches!(
            self,
            ServiceState::AutoRestart
                | ServiceState::AutoRestartQueued
                | ServiceState::DeadBeforeAutoRestart
                | ServiceState::FailedBeforeAutoRestart
        )
    }
}

/// How a job ended (`JobRemoved`'s result, systemd `job_result_table`), plus `ConditionFailed`:
/// systemd reports a start skipped by a `Condition*=` as done, we report it as what it is.
#[derive(Debug, Clone, PartialEq, Eq, strum::EnumString, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    Dependency,
    Skipped,
    Invalid,
    Assert,
    Unsupported,
    Collected,
    Once,
    Frozen,
    ConditionFailed,
    #[strum(default)]
    Other(String),
}

/// Parses one of the tables above; with the `Other` variant the parse cannot fail.
pub(super) fn parse<T: FromStr + From<OtherName>>(name: &str) -> T {
    T::from_str(name).unwrap_or_else(|_| T::from(OtherName(name.to_string())))
}

/// A name no table knows (only reached if strum's default variant ever stops catching it).
pub(super) struct OtherName(String);

macro_rules! other_and_serialize {
    ($($t:ident),*) => {$(
        impl From<OtherName> for $t {
            fn from(n: OtherName) -> $t {
                $t::Other(n.0)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
other_and_serialize!(ActiveState, LoadState, ServiceState, JobResult);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_kept() {
        for name in ["active", "inactive", "failed", "activating", "deactivating"] {
            assert_eq!(parse::<ActiveState>(name).to_string(), name);
        }
        assert_eq!(parse::<LoadState>("not-found"), LoadState::NotFound);
        assert_eq!(parse::<LoadState>("bad-setting"), LoadState::BadSetting);
        assert_eq!(
            parse::<ServiceState>("auto-restart"),
            ServiceState::AutoRestart
        );
        assert_eq!(
            parse::<ActiveState>("someday"),
            ActiveState::Other("someday".into())
        );
        assert_eq!(parse::<ActiveState>("someday").to_string(), "someday");
        assert_eq!(
            serde_json::to_string(&LoadState::Masked).unwrap(),
            "\"masked\""
        );
        assert_eq!(JobResult::ConditionFailed.to_string(), "condition-failed");
    }
}
