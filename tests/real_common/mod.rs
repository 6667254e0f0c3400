//! Harness of the real-server tier (tests/real_*.rs): a container with upstream's real binaries
//! bound at /real, one installed as install.sh installs its generation, the fixture's accounts
//! and mail, and the helper (host-built, at /target) run inside. See testbed::real; the harness
//! is `testbed::scenario`, and these are the names the real-server tests know it by.
#![allow(dead_code, unused_imports)]

pub use testbed::scenario::{
    code, crossing, crossing_releases, real_container as container, releases, text,
    Real as RealScenario, REAL_HELPER_CONFIG as HELPER_CONFIG,
};
