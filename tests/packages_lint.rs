//! Package checks that need no container: the shipped default helper config matches the
//! helper's defaults, and the built packages pass lintian and rpmlint (project config).

mod packages_common;
use packages_common::*;
use stalwart_upgrade::config::Settings;
use std::path::Path;
use std::process::Command;

fn shipped_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml"))
        .expect("packaging/config.toml")
}

/// Every `#key = value` line uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_config_is_all_defaults_and_names_every_key() {
    let text = shipped_config();
    assert_eq!(Settings::parse(&text).unwrap(), Settings::default());

    // Uncommented, the values shown are the defaults (keys without a default show an example).
    let mut s = Settings::parse(&uncommented(&text)).expect("uncommented config parses");
    s.server_config = None;
    s.health.url = None;
    s.snapshots.dir = None;
    s.snapshots.store_paths = Vec::new();
    s.snapshots.database_ca_file = None;
    s.webadmin.url = None;
    s.webadmin.credentials_file = None;
    s.webadmin.ca_file = None;
    assert_eq!(s, Settings::default());

    // Every key of the settings is shown.
    let v = serde_json::to_value(Settings::default()).unwrap();
    for (k, val) in v.as_object().unwrap() {
        match val.as_object() {
            Some(table) => {
                assert!(text.contains(&format!("[{k}]")), "[{k}] missing");
                for sub in table.keys() {
                    assert!(text.contains(&format!("#{sub} = ")), "{k}.{sub} missing");
                }
            }
            None => assert!(text.contains(&format!("#{k} = ")), "{k} missing"),
        }
    }
}

#[test]
fn packages_pass_lintian_and_rpmlint() {
    for tool in ["lintian", "rpmlint", "rpmbuild", "dpkg-buildpackage"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success(),
            "{tool} is missing: run scripts/setup"
        );
    }
    // Compressed as released (lintian rejects the uncompressed test builds).
    let dir = tempfile::tempdir().unwrap();
    let release = testbed::standin_release("0.15.5", testbed::Fault::None, 0);
    let built = packaging_build_as_released(
        &[
            "--helper-binary",
            env!("CARGO_BIN_EXE_stalwart-upgrade"),
            "--server-binary",
            release.to_str().unwrap(),
            "--server-version",
            "0.15.5",
        ],
        dir.path(),
    );
    assert_eq!(built.len(), 4, "{built:?}");
    let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/lint"))
        .arg(dir.path())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
}

/// `systemd-analyze security` of the shipped unit stays at most 3.0 (upstream's install.sh unit:
/// 9.3 "UNSAFE"; ours 1.9 with systemd 252).
#[test]
fn server_unit_exposure_is_at_most_3() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stalwart.service");
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd)");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Overall exposure level for stalwart.service"),
        "{out}"
    );
}
