//! Harness of the package tests (tests/packages_*.rs): builds the .deb/.rpm packages with
//! `packaging/build` (the helper once per test process, one server package per stand-in release),
//! publishes them in a local apt or dnf repository bound into a booted container, and runs
//! apt-get / unattended-upgrades / dnf there. The harness is `testbed::scenario`; these are the
//! names the package tests (and examples/demo.rs) know it by.
#![allow(dead_code, unused_imports)]

pub use testbed::scenario::{
    code, helper_packages, new_signing_key, packaging_build, packaging_build_as_released,
    publish_signed, real_server_packages, real_server_packages_with_webui,
    relabelled_real_packages, server_packages, signing_key, text, webui_bundle, Built, Machine,
    APT, PACKAGES_HELPER_CONFIG as HELPER_CONFIG,
};
