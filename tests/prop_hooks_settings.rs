//! Property tests (fuzzing on stable) of two small parsers of hostile-ish input:
//! - `hooks::deb_action` / `hooks::rpm_action`, the pure decisions from what dpkg/rpm pass a
//!   maintainer script: any strings give a defined action (or `Action::Unknown`, a typed refusal),
//!   never a panic; every invocation dpkg/rpm really make gives a known action.
//! - `config::Settings::parse`: any text gives Ok or Err, never a panic; what it accepts can be
//!   used (no timeout that overflows the clock) and serializes back to itself.

mod prop_common;

use prop_common::{check, corpus, expect_of, Expect};
use proptest::prelude::*;
use stalwart_upgrade::config::Settings;
use stalwart_upgrade::hooks::{deb_action, rpm_action, Action};
use stalwart_upgrade::server::version::Version;
use std::time::{Duration, Instant};

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "preinst",
            "postinst",
            "prerm",
            "postrm",
            "install",
            "upgrade",
            "configure",
            "abort-upgrade",
            "abort-remove",
            "abort-deconfigure",
            "abort-install",
            "remove",
            "purge",
            "disappear",
            "failed-upgrade",
            "deconfigure",
            "triggered",
            "in-favour",
            "removing",
            "",
            " ",
            "0.15.5-1",
            "1:0.16.0~rc1-1",
            "0.15.5",
            "pre",
            "post",
            "preun",
            "postun",
            "pretrans",
            "posttrans",
            "0",
            "1",
            "2",
            "-1",
            "+1",
            " 1 ",
            "4294967296",
        ])
        .prop_map(str::to_string),
        any::<String>(),
        "[a-z0-9.:~+-]{0,12}",
    ]
}

fn check_deb(script: &str, args: &[String]) -> Result<Action, TestCaseError> {
    let a = deb_action(script, args);
    match &a {
        Action::Unknown { what } => {
            prop_assert!(
                what.starts_with(script.trim_end()),
                "{:?} {:?}",
                what,
                script
            )
        }
        Action::Gate { to } => {
            // The gate only judges a version it could read, for a real upgrade.
            prop_assert_eq!(script, "preinst");
            prop_assert!(args.len() >= 3 && args[0] == "upgrade" && args[1] != args[2]);
            prop_assert_eq!(Version::parse_dpkg(&args[2]), Ok(to.clone()));
        }
        Action::Removed { rpm } => prop_assert!(!rpm),
        _ => {}
    }
    if !["preinst", "postinst", "prerm", "postrm"].contains(&script) {
        prop_assert!(
            matches!(a, Action::Unknown { .. }),
            "{} {:?} -> {:?}",
            script,
            args,
            a
        );
    }
    Ok(a)
}

#[test]
fn deb_action_of_anything_is_defined() {
    check(
        "hooks/deb-any",
        2048,
        (word(), proptest::collection::vec(word(), 0..6)),
        |(script, args)| check_deb(&script, &args).map(|_| ()),
    );
}

#[test]
fn rpm_action_of_anything_is_defined() {
    check(
        "hooks/rpm-any",
        2048,
        (word(), word(), proptest::option::of(word())),
        |(scriptlet, arg, version)| {
            let a = rpm_action(&scriptlet, &arg, version.as_deref());
            match &a {
                Action::Unknown { what } => prop_assert!(what.starts_with(scriptlet.trim_end())),
                Action::Gate { to } => {
                    prop_assert_eq!(scriptlet.as_str(), "pre");
                    let v = version.as_deref().unwrap_or("");
                    prop_assert_eq!(Version::parse_rpm(v), Ok(to.clone()));
                }
                Action::Removed { rpm } => prop_assert!(*rpm),
                Action::Purge | Action::RecoverAndStart => {
                    prop_assert!(false, "rpm has no {:?}", a)
                }
                _ => {}
            }
            Ok(())
        },
    );
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        "([0-9]:)?0\\.1[0-9]\\.[0-9]{1,2}(~rc[0-9])?-[0-9](ubuntu[0-9]|\\+deb12u1)?",
        any::<String>(),
    ]
}

/// Every invocation deb-preinst(5), deb-postinst(5), deb-prerm(5), deb-postrm(5) list.
fn dpkg_invocation() -> impl Strategy<Value = (String, Vec<String>)> {
    (version(), version(), "[a-z0-9.+-]{1,20}").prop_flat_map(|(old, new, pkg)| {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (o, n, p) = (old.as_str(), new.as_str(), pkg.as_str());
        proptest::sample::select(vec![
            ("preinst".to_string(), v(&["install"])),
            ("preinst".into(), v(&["install", o])),
            ("preinst".into(), v(&["upgrade", o])),
            ("preinst".into(), v(&["upgrade", o, n])),
            ("preinst".into(), v(&["abort-upgrade", n])),
            ("postinst".into(), v(&["configure"])),
            ("postinst".into(), v(&["configure", ""])),
            ("postinst".into(), v(&["configure", o])),
            ("postinst".into(), v(&["abort-upgrade", n])),
            ("postinst".into(), v(&["abort-remove"])),
            ("postinst".into(), v(&["abort-remove", "in-favour", p, n])),
            (
                "postinst".into(),
                v(&["abort-deconfigure", "in-favour", p, n, "removing", p, o]),
            ),
            ("postinst".into(), v(&["triggered", "/usr/lib/stalwart"])),
            ("prerm".into(), v(&["remove"])),
            ("prerm".into(), v(&["upgrade", n])),
            ("prerm".into(), v(&["failed-upgrade", o, n])),
            (
                "prerm".into(),
                v(&["deconfigure", "in-favour", p, n, "removing", p, o]),
            ),
            ("prerm".into(), v(&["remove", "in-favour", p, n])),
            ("postrm".into(), v(&["remove"])),
            ("postrm".into(), v(&["purge"])),
            ("postrm".into(), v(&["upgrade", n])),
            ("postrm".into(), v(&["disappear", p, n])),
            ("postrm".into(), v(&["failed-upgrade", o, n])),
            ("postrm".into(), v(&["abort-install"])),
            ("postrm".into(), v(&["abort-install", o, n])),
            ("postrm".into(), v(&["abort-upgrade", o, n])),
        ])
    })
}

#[test]
fn every_real_dpkg_invocation_is_known() {
    check(
        "hooks/deb-real",
        1024,
        dpkg_invocation(),
        |(script, args)| {
            let a = check_deb(&script, &args)?;
            prop_assert!(
                !matches!(a, Action::Unknown { .. }),
                "{} {:?}",
                script,
                args
            );
            let first = args.first().map(String::as_str);
            match (script.as_str(), first) {
                ("prerm", Some("remove")) => prop_assert_eq!(a, Action::Stop),
                ("postrm", Some("purge")) => prop_assert_eq!(a, Action::Purge),
                ("postinst", Some("configure")) => {
                    prop_assert!(matches!(a, Action::Converge { .. }), "not converge")
                }
                _ => {}
            }
            Ok(())
        },
    );
}

#[test]
fn every_real_rpm_invocation_is_known() {
    check(
        "hooks/rpm-real",
        1024,
        (
            proptest::sample::select(vec![
                "pretrans",
                "pre",
                "post",
                "preun",
                "postun",
                "posttrans",
            ]),
            0u32..4,
            proptest::option::of(version()),
        ),
        |(scriptlet, count, version)| {
            // rpm passes $1 = instances after the transaction: %pre/%post >= 1, %preun/%postun >= 0.
            if matches!(scriptlet, "pre" | "post") && count == 0 {
                return Ok(());
            }
            let a = rpm_action(scriptlet, &count.to_string(), version.as_deref());
            prop_assert!(
                !matches!(a, Action::Unknown { .. }),
                "{} {}",
                scriptlet,
                count
            );
            if scriptlet == "preun" && count == 0 {
                prop_assert_eq!(a, Action::Stop);
            }
            Ok(())
        },
    );
}

// ---- Settings::parse -----------------------------------------------------------------------

fn settings_contract(text: &str) -> Result<Option<Settings>, TestCaseError> {
    let Ok(s) = Settings::parse(text) else {
        return Ok(None);
    };
    // What the engine does with the values must not panic.
    let now = Instant::now();
    for secs in [
        s.timeouts.stop_secs,
        s.timeouts.start_secs,
        s.timeouts.ready_secs,
        s.timeouts.settle_secs,
        s.timeouts.lock_wait_secs,
        s.webadmin.timeout_secs,
    ] {
        prop_assert!(
            now.checked_add(Duration::from_secs(secs)).is_some(),
            "a timeout of {} s overflows the clock",
            secs
        );
    }
    let _ = (
        s.stop_timeout(),
        s.start_timeout(),
        s.snapshot_dir(),
        s.server_binary(),
    );
    // What it accepted writes back to the same settings.
    let written = toml::to_string(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(Settings::parse(&written), Ok(s.clone()), "{}", written);
    Ok(Some(s))
}

fn settings_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        proptest::sample::select(vec![
            "[timeouts]",
            "[health]",
            "[snapshots]",
            "[policy]",
            "[webadmin]",
            "",
        ])
        .prop_map(str::to_string),
        (
            proptest::sample::select(vec![
                "unit",
                "prefix",
                "server_config",
                "state_dir",
                "payload_dir",
                "stop_secs",
                "start_secs",
                "ready_secs",
                "settle_secs",
                "lock_wait_secs",
                "url",
                "failure_patterns",
                "keep",
                "dir",
                "database_ca_file",
                "unattended",
                "manage_holds",
                "enabled",
                "credentials_file",
                "ca_file",
                "timeout_secs",
                "timeouts.stop_secs",
                "policy.unattended",
                "unti",
            ]),
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                (0u64..1_000_000).prop_map(|i| i.to_string()),
                Just("18446744073709551615".to_string()),
                Just(i64::MAX.to_string()),
                Just("true".to_string()),
                Just("\"/opt/stalwart\"".to_string()),
                Just("\"\"".to_string()),
                Just("[\"patch\", \"minor\"]".to_string()),
                Just("[\"paatch\"]".to_string()),
                Just("[\"\"]".to_string()),
                Just("[]".to_string()),
                Just("1.5".to_string()),
                Just("{ a = 1 }".to_string()),
                "\"[a-z/ .]{0,12}\"",
            ]
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        any::<String>(),
    ];
    proptest::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

#[test]
fn settings_parse_never_panics_and_accepted_values_are_usable() {
    check("settings/parse", 1024, settings_text(), |t| {
        settings_contract(&t).map(|_| ())
    });
}

#[test]
fn corpus_regressions() {
    for p in corpus("settings") {
        let text = std::fs::read_to_string(&p).unwrap();
        let got = settings_contract(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        match expect_of(&p) {
            Expect::Ok => assert!(
                got.is_some(),
                "{}: {:?}",
                p.display(),
                Settings::parse(&text)
            ),
            Expect::Err => assert!(got.is_none(), "{} accepted", p.display()),
            Expect::Any => {}
        }
    }
    for p in corpus("hooks") {
        // One invocation per line: SCRIPT ARG... (deb) or `rpm SCRIPTLET ARG [VERSION]`.
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            let words: Vec<String> = line.split(' ').map(str::to_string).collect();
            let a = if words[0] == "rpm" {
                let get = |i: usize| words.get(i).map(String::as_str);
                rpm_action(get(1).unwrap_or(""), get(2).unwrap_or(""), get(3))
            } else {
                check_deb(&words[0], &words[1..]).unwrap_or_else(|e| panic!("{line}: {e}"))
            };
            let unknown = matches!(a, Action::Unknown { .. });
            match expect_of(&p) {
                Expect::Ok => assert!(!unknown, "{}: {line:?}", p.display()),
                Expect::Err => assert!(unknown, "{}: {line:?} -> {a:?}", p.display()),
                Expect::Any => {}
            }
        }
    }
}

/// The real load path (config.toml merged with config.d/*.toml drop-ins) refuses what
/// `Settings::parse` refuses: the corpus files, as the main file and as a drop-in.
#[test]
fn load_from_validates_like_parse() {
    for p in corpus("settings") {
        let text = std::fs::read_to_string(&p).unwrap();
        let want_ok = Settings::parse(&text).is_ok();
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, &text).unwrap();
        let got = Settings::load_from(&main);
        assert_eq!(
            got.is_ok(),
            want_ok,
            "{} as config.toml: {got:?}",
            p.display()
        );
        std::fs::write(&main, "").unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(dir.path().join("config.d/50-admin.toml"), &text).unwrap();
        let got = Settings::load_from(&main);
        assert_eq!(
            got.is_ok(),
            want_ok,
            "{} as a drop-in: {got:?}",
            p.display()
        );
    }
}
