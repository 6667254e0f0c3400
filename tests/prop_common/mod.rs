//! Shared driver of the `prop_*` property tests (fuzzing on stable Rust with proptest).
//!
//! - `cargo test` (CI): each property runs a SMALL number of cases (`default_cases`, or
//!   `PROPTEST_CASES` when set), so a whole `prop_*` file stays well under 20 s in a debug build.
//! - `scripts/fuzz` sets `FUZZ_SECONDS=N`: each property then runs batches of random cases until
//!   N seconds are over and prints how many cases it ran (`fuzz: NAME: N cases in S s`).
//!
//! A failing case is shrunk by proptest and reported with the minimal input; copy it into
//! `tests/corpus/<target>/` so it stays a regression test.
#![allow(dead_code)]

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long one case may take before it counts as a hang (super-linear or endless work on a
/// hostile input). Generous: debug builds on a loaded 2-core machine.
pub const SLOW_CASE: Duration = Duration::from_secs(5);

fn fuzz_seconds() -> Option<u64> {
    std::env::var("FUZZ_SECONDS").ok()?.trim().parse().ok()
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Crashers go into tests/corpus by hand; do not write proptest-regressions/ files.
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// Runs `test` on values of `strategy`: `default_cases` in CI, for `FUZZ_SECONDS` under
/// `scripts/fuzz`. Panics (failing the test) with proptest's shrunk counterexample.
pub fn check<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let timed = |v: S::Value| {
        let t0 = Instant::now();
        let r = test(v);
        let took = t0.elapsed();
        if took > SLOW_CASE {
            return Err(TestCaseError::fail(format!(
                "{name}: one case took {took:?} (hang or super-linear work?)"
            )));
        }
        r
    };
    match fuzz_seconds() {
        None => {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default_cases);
            let mut runner = TestRunner::new(config(cases));
            if let Err(e) = runner.run(&strategy, timed) {
                panic!("{name}: {e}");
            }
        }
        Some(secs) => {
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs(secs);
            let mut total: u64 = 0;
            let mut batch: u32 = 64;
            while Instant::now() < deadline {
                let b0 = Instant::now();
                // A fresh runner per batch draws a fresh random seed.
                let mut runner = TestRunner::new(config(batch));
                if let Err(e) = runner.run(&strategy, timed) {
                    panic!("{name}: failed after {total} cases: {e}");
                }
                total += u64::from(batch);
                // Next batch: at most double, at most a second's worth, and it must fit in the
                // time left, so the deadline is kept.
                let per_case = b0.elapsed().as_secs_f64() / f64::from(batch);
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64();
                let fit = (left.min(1.0) / per_case.max(1e-9)) as u64;
                batch = fit.clamp(1, u64::from(batch) * 2).min(1 << 20) as u32;
            }
            println!(
                "fuzz: {name}: {total} cases in {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

/// The files of `tests/corpus/<target>/`, sorted.
pub fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

/// The expectation a corpus file's name states: `ok-*` must be accepted, `err-*` refused,
/// anything else only must not panic or hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Err,
    Any,
}

pub fn expect_of(p: &std::path::Path) -> Expect {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with("ok-") {
        Expect::Ok
    } else if name.starts_with("err-") {
        Expect::Err
    } else {
        Expect::Any
    }
}
