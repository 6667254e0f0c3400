//! The apt hold checked with the real apt: a local flat repository with trivial `stalwart`
//! packages, a fake dpkg status, and our preferences file, all in a temp dir (the host's apt
//! configuration is not touched). Skipped (with a message) when apt/dpkg tools are missing.

use stalwart_upgrade::policy::{self, HoldPaths};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn tools_present() -> bool {
    let ok = ["apt-get", "apt-cache", "dpkg-deb", "dpkg-scanpackages"]
        .iter()
        .all(|t| have(t));
    if !ok {
        eprintln!("SKIP: apt-get/apt-cache/dpkg-deb/dpkg-scanpackages not installed (apt-get install dpkg-dev)");
    }
    ok
}

struct AptLab {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

impl AptLab {
    /// A repository with `available` versions of `stalwart`, and `installed` in the dpkg status.
    fn new(available: &[&str], installed: Option<&str>) -> AptLab {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_owned();
        let root = base.join("root");
        for d in [
            "repo",
            "build",
            "etc/sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
            "root/etc/apt/preferences.d",
        ] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        for ver in available {
            let safe = ver.replace([':', '~'], "_");
            let pkg = base.join("build").join(&safe);
            fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
            fs::write(
                pkg.join("DEBIAN/control"),
                format!(
                    "Package: stalwart\nVersion: {ver}\nArchitecture: all\n\
                     Maintainer: test <test@example.org>\nDescription: test package\n"
                ),
            )
            .unwrap();
            let deb = base.join("repo").join(format!("stalwart_{safe}_all.deb"));
            run(Command::new("dpkg-deb")
                .args(["-Zxz", "--build"])
                .arg(&pkg)
                .arg(&deb));
        }
        // -m: keep every version, not only the newest
        let out = Command::new("dpkg-scanpackages")
            .args(["-m", ".", "/dev/null"])
            .current_dir(base.join("repo"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(base.join("repo/Packages"), &out.stdout).unwrap();
        fs::write(
            base.join("etc/sources.list"),
            format!(
                "deb [trusted=yes] file:{} ./\n",
                base.join("repo").display()
            ),
        )
        .unwrap();
        let status = match installed {
            Some(v) => format!(
                "Package: stalwart\nStatus: install ok installed\nVersion: {v}\nArchitecture: all\n\
                 Maintainer: test <test@example.org>\nDescription: test package\n\n"
            ),
            None => String::new(),
        };
        fs::write(base.join("state/status"), status).unwrap();
        let lab = AptLab {
            _dir: dir,
            base,
            root,
        };
        // A flat repo has no Release file: apt reports that, but still reads Packages.
        let _ = lab.apt("apt-get", &["update"]);
        lab
    }

    fn opts(&self) -> Vec<String> {
        let b = |p: &str| self.base.join(p).display().to_string();
        vec![
            format!("Dir::Etc::sourcelist={}", b("etc/sources.list")),
            format!("Dir::Etc::sourceparts={}", b("etc/sources.list.d")),
            format!("Dir::Etc::preferences={}", b("etc/no-preferences")),
            format!(
                "Dir::Etc::preferencesparts={}",
                self.root.join("etc/apt/preferences.d").display()
            ),
            format!("Dir::State={}", b("state")),
            format!("Dir::State::status={}", b("state/status")),
            format!("Dir::Cache={}", b("cache")),
            "Acquire::AllowInsecureRepositories=true".into(),
            "Debug::NoLocking=true".into(),
            "APT::Sandbox::User=root".into(),
        ]
    }

    fn apt(&self, tool: &str, args: &[&str]) -> String {
        let mut c = Command::new(tool);
        for o in self.opts() {
            c.arg("-o").arg(o);
        }
        let out = c.args(args).env("LC_ALL", "C").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn paths(&self) -> HoldPaths {
        HoldPaths::for_root(&self.root)
    }

    fn hold(&self, line: &str) {
        policy::write_holds(&self.paths(), line).unwrap();
    }

    /// (candidate, [(version, priority)]) from `apt-cache policy stalwart`.
    fn policy(&self) -> (String, Vec<(String, i32)>) {
        let text = self.apt("apt-cache", &["policy", "stalwart"]);
        let candidate = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .unwrap_or_else(|| panic!("no candidate in:\n{text}"))
            .trim()
            .to_string();
        let mut table = Vec::new();
        let mut in_table = false;
        for l in text.lines() {
            if l.trim() == "Version table:" {
                in_table = true;
                continue;
            }
            if !in_table {
                continue;
            }
            let t = l.trim_start_matches(' ').trim_start_matches("***").trim();
            let parts: Vec<&str> = t.split_whitespace().collect();
            // version lines have two fields "VERSION PRIO"; origin lines start with a priority
            if parts.len() == 2 && parts[0].parse::<i32>().is_err() {
                table.push((parts[0].to_string(), parts[1].parse().unwrap()));
            }
        }
        (candidate, table)
    }
}

fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn prio(table: &[(String, i32)], v: &str) -> i32 {
    table
        .iter()
        .find(|(x, _)| x == v)
        .unwrap_or_else(|| panic!("{v} not in {table:?}"))
        .1
}

const AVAILABLE: &[&str] = &["0.15.4-1", "0.15.6-1", "0.16.0~rc1-1", "0.16.0-1"];

#[test]
fn without_a_hold_apt_would_take_016() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(AVAILABLE, Some("0.15.5-1"));
    assert_eq!(
        lab.policy().0,
        "0.16.0-1",
        "the lab itself must offer 0.16.0"
    );
}

#[test]
fn hold_makes_the_lines_newest_patch_the_candidate_and_016_never() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(AVAILABLE, Some("0.15.5-1"));
    lab.hold("0.15");
    let (candidate, table) = lab.policy();
    assert_eq!(candidate, "0.15.6-1", "{table:?}");
    assert_eq!(prio(&table, "0.15.6-1"), 990);
    assert_eq!(prio(&table, "0.15.5-1"), 990);
    assert_eq!(prio(&table, "0.16.0-1"), -1);
    assert_eq!(prio(&table, "0.16.0~rc1-1"), -1);
    let sim = lab.apt("apt-get", &["-s", "upgrade"]);
    assert!(sim.contains("Inst stalwart [0.15.5-1] (0.15.6-1"), "{sim}");
    assert!(!sim.contains("0.16.0"), "{sim}");
}

#[test]
fn hold_on_a_fresh_system_installs_the_line() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(AVAILABLE, None);
    lab.hold("0.15");
    assert_eq!(lab.policy().0, "0.15.6-1");
}

#[test]
fn hold_never_downgrades() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(&["0.15.4-1", "0.16.0-1"], Some("0.15.6-1"));
    lab.hold("0.15");
    assert_eq!(lab.policy().0, "0.15.6-1");
    let sim = lab.apt("apt-get", &["-s", "upgrade"]);
    assert!(!sim.contains("Inst stalwart"), "{sim}");
}

#[test]
fn allow_moves_the_pin_to_the_next_line() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(AVAILABLE, Some("0.15.5-1"));
    lab.hold("0.15");
    lab.hold("0.16"); // what `allow 0.16` writes
    let (candidate, table) = lab.policy();
    assert_eq!(candidate, "0.16.0-1", "{table:?}");
    assert_eq!(prio(&table, "0.15.6-1"), -1);
}

#[test]
fn epochs_are_held_too() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(&["1:0.15.6-1", "1:0.16.0-1"], Some("1:0.15.5-1"));
    lab.hold("0.15");
    let (candidate, table) = lab.policy();
    assert_eq!(candidate, "1:0.15.6-1", "{table:?}");
    assert_eq!(prio(&table, "1:0.16.0-1"), -1);
}

#[test]
fn unhold_lets_apt_choose_freely_again() {
    if !tools_present() {
        return;
    }
    let lab = AptLab::new(AVAILABLE, Some("0.15.5-1"));
    lab.hold("0.15");
    policy::remove_holds(&lab.paths()).unwrap();
    assert_eq!(lab.policy().0, "0.16.0-1");
}
