//! Property tests (fuzzing on stable) of the version parsers: `Version::parse_binary_output`,
//! `parse_dpkg`, `parse_rpm` and `version::parse_line` never panic, round-trip, and order like
//! dpkg where semver and dpkg agree. `scripts/fuzz` runs them for longer.

mod prop_common;

use prop_common::{check, corpus, expect_of, Expect};
use proptest::prelude::*;
use stalwart_upgrade::server::version::{classify, parse_line, Class, Version, VersionError};
use std::cmp::Ordering;

/// Every parser on one input; a parsed version must display and re-parse to itself.
fn all_parsers(s: &str) -> Result<(), TestCaseError> {
    for (which, r) in [
        ("binary", Version::parse_binary_output(s)),
        ("dpkg", Version::parse_dpkg(s)),
        ("rpm", Version::parse_rpm(s)),
    ] {
        match r {
            Ok(v) => {
                let shown = v.to_string();
                prop_assert_eq!(
                    Version::parse_binary_output(&shown),
                    Ok(v.clone()),
                    "{} {:?} -> {:?} does not re-parse",
                    which,
                    s,
                    shown
                );
                prop_assert!(v.0.build.is_empty(), "build metadata kept: {v}");
                // A version's own line is a line.
                prop_assert_eq!(parse_line(&shown), Ok(v.line()));
            }
            Err(VersionError::Unparseable { .. }) => {}
        }
    }
    if let Ok(line) = parse_line(s) {
        // Idempotent: a line names itself.
        prop_assert_eq!(parse_line(&line), Ok(line.clone()), "{:?}", s);
    }
    let _ = stalwart_upgrade::policy::parse_override(s);
    Ok(())
}

/// Characters that matter to the parsers, so random strings hit their branches.
fn versionish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9.:~+^v -]{0,24}",
        "[0-9a-z.:~+^-]{0,30}",
        "(v|[0-9]{1,3}:)?[0-9]{1,21}\\.[0-9]{1,8}\\.[0-9]{1,21}([~-][a-z0-9.~+-]{0,8})?(-[0-9a-z.+~]{0,8})?",
        "[ \t\n]{0,2}[a-z-]{0,9} v?[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-rc[0-9]?)?(\\+[a-z.0-9]{0,5})?[ \n]{0,2}",
    ]
}

#[test]
fn parsers_never_panic_and_round_trip() {
    check("version/parsers", 2048, versionish(), |s| all_parsers(&s));
}

/// Semver core + optional pre-release made of parts on which dpkg and semver order agree:
/// lowercase words and small numbers without leading zeros.
fn release() -> impl Strategy<Value = (u64, u64, u64, Option<String>)> {
    let num = prop_oneof![0u64..20, 0u64..=999_999];
    let pre = proptest::option::of("[a-z]{1,4}(\\.(0|[1-9][0-9]{0,2}))?");
    (num.clone(), num.clone(), num, pre)
}

fn upstream((a, b, c, pre): &(u64, u64, u64, Option<String>), tilde: bool) -> String {
    match pre {
        None => format!("{a}.{b}.{c}"),
        Some(p) if tilde => format!("{a}.{b}.{c}~{p}"),
        Some(p) => format!("{a}.{b}.{c}-{p}"),
    }
}

/// dpkg's own comparison of version strings (lib/dpkg/version.c `verrevcmp`), the reference
/// for the ordering property.
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = dpkg_order(a.get(i).copied());
            let bc = dpkg_order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = i32::from(a[i]) - i32::from(b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

#[test]
fn reference_verrevcmp_sanity() {
    assert_eq!(verrevcmp("0.16.0~rc1", "0.16.0"), Ordering::Less);
    assert_eq!(verrevcmp("0.15.10", "0.15.9"), Ordering::Greater);
    assert_eq!(verrevcmp("1.0", "1.0"), Ordering::Equal);
    assert_eq!(verrevcmp("1.0a", "1.0"), Ordering::Greater);
    assert_eq!(verrevcmp("1.0~", "1.0"), Ordering::Less);
}

#[test]
fn dpkg_and_rpm_spellings_round_trip_and_order_like_dpkg() {
    check(
        "version/dpkg-order",
        1024,
        (
            release(),
            release(),
            0u32..3,
            "[0-9]{1,2}(ubuntu[0-9]|\\+deb12u[0-9]|\\.el9|\\.fc4[0-9])?",
        ),
        |(x, y, epoch, rev)| {
            let ep = if epoch == 0 {
                String::new()
            } else {
                format!("{epoch}:")
            };
            let parse = |r: &(u64, u64, u64, Option<String>)| -> Result<Version, TestCaseError> {
                let semver_text = upstream(r, false);
                let want = Version::parse_binary_output(&semver_text)
                    .map_err(|e| TestCaseError::fail(format!("{semver_text}: {e}")))?;
                let deb = format!("{ep}{}-{rev}", upstream(r, true));
                prop_assert_eq!(Version::parse_dpkg(&deb), Ok(want.clone()), "{}", deb);
                let rpm = format!("{ep}{}-{}", upstream(r, true), rev.replace(['+', '-'], "."));
                prop_assert_eq!(Version::parse_rpm(&rpm), Ok(want.clone()), "{}", rpm);
                // A native package (no revision).
                let native = upstream(r, true);
                prop_assert_eq!(Version::parse_dpkg(&native), Ok(want.clone()), "{}", native);
                Ok(want)
            };
            let (vx, vy) = (parse(&x)?, parse(&y)?);
            let dpkg = verrevcmp(&upstream(&x, true), &upstream(&y, true));
            prop_assert_eq!(
                vx.cmp(&vy),
                dpkg,
                "{} vs {}: semver and dpkg disagree",
                upstream(&x, true),
                upstream(&y, true)
            );
            // The tilde pre-release sorts before its release, as in dpkg.
            if x.3.is_some() {
                let rel = parse(&(x.0, x.1, x.2, None))?;
                prop_assert!(vx < rel);
                prop_assert_eq!(classify(&rel, &vx), Class::Downgrade);
            }
            // classify agrees with the order.
            let c = classify(&vx, &vy);
            match vx.cmp(&vy) {
                Ordering::Equal => prop_assert_eq!(c, Class::Same),
                Ordering::Greater => prop_assert_eq!(c, Class::Downgrade),
                Ordering::Less => {
                    prop_assert!(matches!(c, Class::Patch | Class::Minor | Class::Major));
                    prop_assert_eq!(classify(&vy, &vx), Class::Downgrade);
                    prop_assert_eq!(
                        c == Class::Patch,
                        vx.same_line(&vy) && vx.0.minor == vy.0.minor
                    );
                }
            }
            Ok(())
        },
    );
}

#[test]
fn implausible_components_are_refused() {
    check(
        "version/limits",
        512,
        (1_000_000u64..=u64::MAX, 0usize..3),
        |(n, pos)| {
            let mut parts = ["0".to_string(), "15".to_string(), "5".to_string()];
            parts[pos] = n.to_string();
            let s = parts.join(".");
            prop_assert!(Version::parse_binary_output(&s).is_err(), "{}", s);
            prop_assert!(Version::parse_dpkg(&format!("{s}-1")).is_err(), "{}", s);
            prop_assert!(Version::parse_rpm(&format!("{s}-1.el9")).is_err(), "{}", s);
            Ok(())
        },
    );
}

#[test]
fn corpus_regressions() {
    for p in corpus("version") {
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            all_parsers(line).unwrap_or_else(|e| panic!("{}: {line:?}: {e}", p.display()));
            let any_ok = Version::parse_binary_output(line).is_ok()
                || Version::parse_dpkg(line).is_ok()
                || Version::parse_rpm(line).is_ok();
            match expect_of(&p) {
                Expect::Ok => assert!(any_ok, "{}: {line:?} refused", p.display()),
                Expect::Err => assert!(!any_ok, "{}: {line:?} accepted", p.display()),
                Expect::Any => {}
            }
        }
    }
}
