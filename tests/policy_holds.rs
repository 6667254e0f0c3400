//! Policy state, approvals and hold files in a temporary root; the env override through `verdict`.

use stalwart_upgrade::config::Settings;
use stalwart_upgrade::policy::{self, HoldPaths, Verdict};
use stalwart_upgrade::server::version::{Class, Version};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn setup() -> (tempfile::TempDir, Settings, HoldPaths) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc/apt/preferences.d")).unwrap();
    fs::create_dir_all(root.join("etc/dnf/plugins")).unwrap();
    let settings = Settings {
        state_dir: dir.path().join("state"),
        ..Settings::default()
    };
    (dir, settings, HoldPaths::for_root(&root))
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

#[test]
fn hold_writes_apt_and_dnf_files_and_is_idempotent() {
    let (_d, s, paths) = setup();
    fs::write(
        &paths.dnf_versionlock,
        "# Added lock on Mon\nbash-0:5.2.15-5.fc39.*\n",
    )
    .unwrap();
    let st = policy::hold_at(&s, &paths, Some("0.15")).unwrap();
    assert_eq!(st.hold_line.as_deref(), Some("0.15"));
    assert!(
        st.files.iter().all(|f| f.present && f.ours_present),
        "{st:#?}"
    );
    let apt = read(&paths.apt_prefs);
    assert!(
        apt.contains("Pin: version 0.15.*\nPin-Priority: 990"),
        "{apt}"
    );
    let dnf = read(&paths.dnf_versionlock);
    assert!(
        dnf.starts_with("# Added lock on Mon\nbash-0:5.2.15-5.fc39.*\n"),
        "{dnf}"
    );
    assert!(dnf.contains("\nstalwart-0.15.*\n"), "{dnf}");
    let dnf5 = read(&paths.dnf5_versionlock);
    assert!(dnf5.starts_with("version = \"1.0\"\n"), "{dnf5}");
    let parsed: toml::Table = toml::from_str(&dnf5).unwrap();
    assert_eq!(parsed["packages"].as_array().unwrap().len(), 1);

    let snapshot = (read(&paths.apt_prefs), dnf.clone(), dnf5.clone());
    policy::hold_at(&s, &paths, Some("0.15.5")).unwrap();
    policy::hold_at(&s, &paths, None).unwrap();
    assert_eq!(
        snapshot,
        (
            read(&paths.apt_prefs),
            read(&paths.dnf_versionlock),
            read(&paths.dnf5_versionlock)
        )
    );
    // the state file is root-only
    let mode = fs::metadata(policy::state_path(&s))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Display names the line and the files
    let text = st.to_string();
    assert!(
        text.contains("0.15") && text.contains("preferences.d/stalwart-upgrade"),
        "{text}"
    );
    serde_json::to_string(&st).unwrap();
}

#[test]
fn hold_without_a_line_names_the_command() {
    let (_d, s, paths) = setup();
    let e = policy::hold_at(&s, &paths, None).unwrap_err().to_string();
    assert!(e.contains("stalwart-upgrade hold 0.15"), "{e}");
    let e = policy::hold_at(&s, &paths, Some("latest"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("latest"), "{e}");
}

#[test]
fn allow_moves_the_pin_and_after_upgrade_consumes_the_approval() {
    let (_d, s, paths) = setup();
    policy::hold_at(&s, &paths, Some("0.15")).unwrap();
    let (from, to) = (v("0.15.5"), v("0.16.0"));
    assert!(matches!(
        policy::verdict(&s, &from, &to, Class::Minor, true, None).unwrap(),
        Verdict::NeedsApproval { .. }
    ));
    let st = policy::allow_at(&s, &paths, "0.16.2").unwrap();
    assert_eq!(st.hold_line.as_deref(), Some("0.16"));
    assert_eq!(st.approvals.len(), 1);
    assert_eq!(st.approvals[0].line, "0.16");
    assert!(read(&paths.apt_prefs).contains("Pin: version 0.16.*\n"));
    let dnf = read(&paths.dnf_versionlock);
    assert!(
        dnf.contains("stalwart-0.16.*") && !dnf.contains("stalwart-0.15.*"),
        "{dnf}"
    );
    assert_eq!(dnf.matches("BEGIN stalwart-upgrade").count(), 1, "{dnf}");
    assert_eq!(
        policy::verdict(&s, &from, &to, Class::Minor, true, None).unwrap(),
        Verdict::Allowed
    );
    // allowing twice records one approval
    assert_eq!(
        policy::allow_at(&s, &paths, "0.16")
            .unwrap()
            .approvals
            .len(),
        1
    );

    let st = policy::after_upgrade_at(&s, &paths, &to).unwrap();
    assert!(st.approvals.is_empty());
    assert_eq!(st.hold_line.as_deref(), Some("0.16"));
    // the approval is consumed: the next minor needs a new one
    assert!(matches!(
        policy::verdict(&s, &to, &v("0.17.0"), Class::Minor, true, None).unwrap(),
        Verdict::NeedsApproval { .. }
    ));
}

#[test]
fn unhold_removes_only_our_parts() {
    let (_d, s, paths) = setup();
    fs::write(&paths.dnf_versionlock, "bash-0:5.2.15-5.fc39.*\n").unwrap();
    fs::write(
        &paths.dnf5_versionlock,
        "version = \"1.0\"\n\n[[packages]]\nname = \"bash\"\n[[packages.conditions]]\nkey = \"evr\"\ncomparator = \"=\"\nvalue = \"0:5.2.15-5.fc39\"\n",
    )
    .unwrap();
    policy::hold_at(&s, &paths, Some("0.15")).unwrap();
    let st = policy::unhold_at(&s, &paths).unwrap();
    assert!(!st.holds_enabled && st.hold_line.is_none());
    assert!(!paths.apt_prefs.exists());
    assert_eq!(read(&paths.dnf_versionlock), "bash-0:5.2.15-5.fc39.*\n");
    let dnf5: toml::Table = toml::from_str(&read(&paths.dnf5_versionlock)).unwrap();
    let pkgs = dnf5["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 1);
    assert_eq!(pkgs[0]["name"].as_str(), Some("bash"));
    // after unhold, allow and after_upgrade do not write holds again
    policy::allow_at(&s, &paths, "0.16").unwrap();
    policy::after_upgrade_at(&s, &paths, &v("0.16.0")).unwrap();
    assert!(!paths.apt_prefs.exists());
    // hold turns them back on
    assert!(
        policy::hold_at(&s, &paths, Some("0.16"))
            .unwrap()
            .holds_enabled
    );
    assert!(paths.apt_prefs.exists());
}

#[test]
fn unmarked_leftovers_of_ours_are_replaced() {
    // `dnf versionlock delete` rewrites versionlock.list without comments; dnf5 rewrites the TOML.
    let (_d, s, paths) = setup();
    fs::write(
        &paths.dnf_versionlock,
        "stalwart-0.14.*\nbash-0:5.2.15-5.fc39.*\n",
    )
    .unwrap();
    fs::write(
        &paths.dnf5_versionlock,
        "version = \"1.0\"\n[[packages]]\nname = \"stalwart\"\ncomment = \"stalwart-upgrade hold 0.14\"\n",
    )
    .unwrap();
    policy::hold_at(&s, &paths, Some("0.15")).unwrap();
    let dnf = read(&paths.dnf_versionlock);
    assert!(
        !dnf.contains("0.14") && dnf.contains("bash-0:5.2.15") && dnf.contains("stalwart-0.15.*"),
        "{dnf}"
    );
    let dnf5: toml::Table = toml::from_str(&read(&paths.dnf5_versionlock)).unwrap();
    assert_eq!(dnf5["packages"].as_array().unwrap().len(), 1);
    assert!(!read(&paths.dnf5_versionlock).contains("0.14"));
}

#[test]
fn no_package_manager_dirs_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        state_dir: dir.path().join("state"),
        ..Settings::default()
    };
    let paths = HoldPaths::for_root(&dir.path().join("empty-root"));
    let st = policy::hold_at(&s, &paths, Some("0.15")).unwrap();
    assert!(st.files.iter().all(|f| !f.present));
    let mut s2 = s.clone();
    s2.policy.manage_holds = false;
    let e = policy::hold_at(&s2, &paths, Some("0.15"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("manage_holds"), "{e}");
}

#[test]
fn corrupt_state_is_an_error_naming_the_file() {
    let (_d, s, paths) = setup();
    fs::create_dir_all(&s.state_dir).unwrap();
    fs::write(policy::state_path(&s), "{not json").unwrap();
    let e = policy::state_at(&s, &paths).unwrap_err().to_string();
    assert!(e.contains("policy.json"), "{e}");
}

/// STALWART_UPGRADE_ALLOW, which the CLI reads once and passes down.
#[test]
fn env_override_allows_one_run() {
    let (_d, s, _paths) = setup();
    let (from, to) = (v("0.15.5"), v("0.16.1"));
    let run = |allow: &str| policy::verdict(&s, &from, &to, Class::Minor, true, Some(allow));
    let (line, class, other, bad) = (run("0.16"), run("minor"), run("0.17"), run("yes-please"));
    assert_eq!(line.unwrap(), Verdict::Allowed);
    assert_eq!(class.unwrap(), Verdict::Allowed);
    assert!(matches!(other.unwrap(), Verdict::NeedsApproval { .. }));
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("STALWART_UPGRADE_ALLOW"));
    // nothing was recorded
    assert!(policy::load(&s).unwrap().approvals.is_empty());
}

#[test]
fn dnf5_inline_packages_array_is_edited_structurally() {
    let (_d, s, paths) = setup();
    fs::write(
        &paths.dnf5_versionlock,
        "version = \"1.0\"\npackages = [{ name = \"bash\" }]\n",
    )
    .unwrap();
    policy::hold_at(&s, &paths, Some("0.15")).unwrap();
    let t: toml::Table = toml::from_str(&read(&paths.dnf5_versionlock)).unwrap();
    let pkgs = t["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), 2);
    assert_eq!(pkgs[1]["name"].as_str(), Some("stalwart"));
    assert_eq!(t["version"].as_str(), Some("1.0"));
    policy::unhold_at(&s, &paths).unwrap();
    let t: toml::Table = toml::from_str(&read(&paths.dnf5_versionlock)).unwrap();
    assert_eq!(t["packages"].as_array().unwrap().len(), 1);
}
