//! Shared scenario harness for the end-to-end tests: a booted container with a stand-in server
//! installed the way install.sh does, and the helper (host-built, bound at /target) run inside.
//! The harness is `testbed::scenario` (one for the stand-in, real-server and package tests);
//! these are the names the stand-in tests know it by.
#![allow(dead_code, unused_imports)]

pub use testbed::scenario::{
    code, data_of, release, text, Standin as Scenario, HELPER_CONFIG_PATH as HELPER_CONFIG,
    STANDIN_HELPER_CONFIG as DEFAULT_HELPER_CONFIG,
};
