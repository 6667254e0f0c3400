//! Harness of the package tests (tests/packages_*.rs): builds the .deb/.rpm packages with
//! `packaging/build` (the helper once per test process, one server package per stand-in release),
//! publishes them in a local apt or dnf repository bound into a booted container, and runs
//! apt-get / unattended-upgrades / dnf there.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use testbed::{stalwart, Container, Fault};

/// The helper's settings inside the containers: short timeouts (the stand-in starts in well
/// under a second), no web-admin refresh (first installs generate a random admin secret).
pub const HELPER_CONFIG: &str = r#"
[timeouts]
stop_secs = 20
start_secs = 30
ready_secs = 20
settle_secs = 1
lock_wait_secs = 10

[webadmin]
enabled = false
"#;

// The output helpers of the other end-to-end tests.
#[path = "../common/mod.rs"]
mod common;
pub use common::{code, text};

fn work_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = testbed::target_dir().join("packages-test");
        // Leftovers of test processes that are gone.
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name();
            let pid = name.to_string_lossy();
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(&*pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = parent.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir packages-test");
        d
    })
    .clone()
}

/// The GnuPG home of this test process and the fingerprint of its repository signing key,
/// made once (`packaging/repo --new-key`), like an admin's own key.
pub fn signing_key() -> &'static (PathBuf, String) {
    static KEY: OnceLock<(PathBuf, String)> = OnceLock::new();
    KEY.get_or_init(|| new_signing_key(&work_dir().join("signing")))
}

/// A new signing key in `dir`/gnupg (`packaging/repo --new-key`): its GnuPG home and fingerprint.
pub fn new_signing_key(dir: &Path) -> (PathBuf, String) {
    let home = dir.join("gnupg");
    let o = Command::new(repo_script())
        .arg("--dir")
        .arg(dir.join("key-scratch"))
        .arg("--gnupghome")
        .arg(&home)
        .arg("--new-key")
        .output()
        .expect("packaging/repo");
    assert!(o.status.success(), "packaging/repo --new-key: {}", text(&o));
    let fpr = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(fpr.len(), 40, "a fingerprint: {fpr}");
    (home, fpr)
}

fn repo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/repo")
}

/// `packaging/repo` over `dir` (the apt suite of the unattended-upgrades pattern below), signed
/// with `key` (a fingerprint in `home`), adding `files`.
pub fn publish_signed(dir: &Path, home: &Path, key: &str, files: &[&Path]) -> Output {
    Command::new(repo_script())
        .arg("--dir")
        .arg(dir)
        .arg("--gnupghome")
        .arg(home)
        .args([
            "--key",
            key,
            "--origin",
            "stalwart-test",
            "--codename",
            "ci",
        ])
        .args(files)
        .output()
        .expect("packaging/repo")
}

/// `packaging/build ARGS --fast --out OUT`: the built files.
pub fn packaging_build(args: &[&str], out: &Path) -> Vec<PathBuf> {
    let mut all = args.to_vec();
    all.push("--fast");
    packaging_build_as_released(&all, out)
}

/// `packaging/build ARGS --out OUT`, compressed as for a release.
pub fn packaging_build_as_released(args: &[&str], out: &Path) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build");
    let o = Command::new(&script)
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run packaging/build");
    assert!(o.status.success(), "packaging/build {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The built packages of one kind: the .deb and the .rpm.
#[derive(Debug, Clone)]
pub struct Built {
    pub deb: PathBuf,
    pub rpm: PathBuf,
}

fn pick(files: &[PathBuf]) -> Built {
    let find = |ext: &str| {
        files
            .iter()
            .find(|f| f.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {files:?}"))
            .clone()
    };
    Built {
        deb: find("deb"),
        rpm: find("rpm"),
    }
}

/// stalwart-upgrade_*.deb / .rpm of the helper binary cargo built for these tests.
pub fn helper_packages() -> Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let out = work_dir().join("helper");
        // (Not CARGO_BIN_EXE_*: the demo example builds this harness too, and cargo sets that only
        // for integration tests.)
        let bin = testbed::target_dir().join("debug/stalwart-upgrade");
        let bin = bin.to_string_lossy();
        pick(&packaging_build(
            &["--helper-only", "--helper-binary", &bin],
            &out,
        ))
    })
    .clone()
}

/// The `stalwart` packages of a stand-in release (cached per release in this process).
pub fn server_packages(version: &str, fault: Fault, migrate_ms: u64) -> Built {
    static CACHE: Mutex<Option<HashMap<String, Built>>> = Mutex::new(None);
    let key = format!("{version}-{fault}-{migrate_ms}");
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(&key) {
        return b.clone();
    }
    let release = testbed::standin_release(version, fault, migrate_ms);
    let out = work_dir().join(format!("server-{key}"));
    let b = pick(&packaging_build(
        &[
            "--server-only",
            "--server-binary",
            release.to_str().expect("utf-8 path"),
            "--server-version",
            version,
        ],
        &out,
    ));
    map.insert(key, b.clone());
    b
}

/// The `stalwart` packages around a real upstream binary (testbed::real), cached per release.
pub fn real_server_packages(release: &testbed::real::RealRelease) -> Built {
    static CACHE: Mutex<Option<HashMap<String, Built>>> = Mutex::new(None);
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(&release.version) {
        return b.clone();
    }
    let out = work_dir().join(format!("real-server-{}", release.version));
    let b = pick(&packaging_build(
        &[
            "--server-only",
            "--server-binary",
            release.path.to_str().expect("utf-8 path"),
            "--server-version",
            &release.version,
        ],
        &out,
    ));
    map.insert(release.version.clone(), b.clone());
    b
}

/// The `stalwart` packages around a real upstream binary whose version string is replaced by
/// `label` (same length, every occurrence, as ../shared/real-stalwart made 1.0.1-pre.1): real
/// server code that presents itself as another release. The demo's broken release is upstream's
/// 1.x store code labelled as a 0.16 patch: on a 0.16 store it adds its column families, then
/// panics (exit 101), and 0.16 can no longer open that store (measured, ../shared/facts).
pub fn relabelled_real_packages(release: &testbed::real::RealRelease, label: &str) -> Built {
    assert_eq!(
        release.version.len(),
        label.len(),
        "a label must keep the length of {}",
        release.version
    );
    let dir = work_dir().join(format!("relabelled-{label}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bytes = std::fs::read(&release.path).expect("read the real binary");
    let (from, to) = (release.version.as_bytes(), label.as_bytes());
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let bin = dir.join("stalwart");
    std::fs::write(&bin, out).expect("write the relabelled binary");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    pick(&packaging_build(
        &[
            "--server-only",
            "--server-binary",
            bin.to_str().expect("utf-8 path"),
            "--server-version",
            label,
        ],
        &dir.join("out"),
    ))
}

/// A booted container with a local package repository bound at /srv/repo: built and signed on
/// the host by `packaging/repo` (apt suite in apt/, dnf repository in rpm/), used inside with
/// signature checks on.
pub struct Machine {
    pub ct: Container,
    pub repo: PathBuf,
}

impl Machine {
    pub fn boot() -> Machine {
        Self::boot_with(false)
    }

    /// `boot`, with upstream's real binaries (testbed::real) bound at /real when `real`.
    fn boot_with(real: bool) -> Machine {
        testbed::preflight().expect("testbed preflight");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let repo = work_dir().join(format!("repo-{n}"));
        std::fs::create_dir_all(&repo).expect("mkdir repo");
        let mut b = Container::builder().bind(&repo, "/srv/repo");
        if real {
            b = b.bind_ro(testbed::real::cache_dir(), testbed::real::IN_CONTAINER);
        }
        let ct = b.boot().expect("boot container");
        ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG)
            .expect("helper config");
        Machine { ct, repo }
    }

    pub fn sh(&self, script: &str) -> Output {
        self.ct.sh(script)
    }

    /// Power loss (no shutdown), then a boot on the same disk.
    pub fn crash_and_boot(self) -> Machine {
        let Machine { ct, repo } = self;
        let ct = ct.crash().boot_again().expect("boot again");
        Machine { ct, repo }
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.ct.sh(script);
        assert!(o.status.success(), "{script}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Adds packages to the signed repository /srv/repo (host `packaging/repo`): the apt
    /// suite in /srv/repo/apt, the dnf repository in /srv/repo/rpm.
    pub fn publish(&self, files: &[&Path]) {
        let (home, key) = signing_key();
        let o = publish_signed(&self.repo, home, key, files);
        assert!(o.status.success(), "packaging/repo: {}", text(&o));
    }

    /// The journal entries with `message_id` (what `journalctl MESSAGE_ID=...` shows an admin),
    /// as JSON objects.
    pub fn entries(&self, message_id: &str) -> Vec<Value> {
        self.sh_ok(&format!("journalctl -q -o json MESSAGE_ID={message_id}"))
            .lines()
            .map(|l| serde_json::from_str(l).expect("journalctl -o json"))
            .collect()
    }

    pub fn helper(&self, args: &[&str]) -> Output {
        let mut full = vec!["stalwart-upgrade"];
        full.extend_from_slice(args);
        self.ct.exec(&full)
    }

    pub fn status_code(&self) -> i32 {
        code(&self.helper(&["status"]))
    }

    pub fn history(&self) -> Vec<Value> {
        let o = self.helper(&["history", "--json"]);
        assert!(o.status.success(), "history: {}", text(&o));
        match serde_json::from_slice(&o.stdout).expect("history json") {
            Value::Array(a) => a,
            other => panic!("history is not an array: {other}"),
        }
    }

    pub fn ready(&self) {
        stalwart::wait_ready(&self.ct, Duration::from_secs(30)).expect("server ready");
    }

    /// What /opt/stalwart/bin/stalwart reports.
    pub fn running_binary(&self) -> String {
        self.sh_ok("/opt/stalwart/bin/stalwart --version")
            .trim()
            .to_string()
    }

    /// The unit's invocation and main PID: unchanged means no restart, no outage.
    pub fn invocation(&self) -> String {
        self.sh_ok("systemctl show -p InvocationID -p MainPID -p ActiveState stalwart.service")
    }

    pub fn digest(&self) -> Value {
        serde_json::from_str(&stalwart::digest(&self.ct).expect("digest")).expect("digest json")
    }

    pub fn deliver(&self, n: u32) {
        self.sh_ok(&format!(
            "curl -sS -f -X POST {}/standin/deliver?n={n}",
            stalwart::HTTP
        ));
    }
}

// ------------------------------------------------------------------------------------------
// apt

/// apt options of every run: keep a modified conffile (our test config), never prompt.
pub const APT: &str =
    "DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold";

impl Machine {
    /// A container with the flat apt repository /srv/repo as its only source, and
    /// unattended-upgrades set up for it.
    pub fn apt() -> Machine {
        Self::apt_with(false)
    }

    /// `apt`, with upstream's real binaries bound at /real.
    pub fn apt_real() -> Machine {
        Self::apt_with(true)
    }

    fn apt_with(real: bool) -> Machine {
        let m = Machine::boot_with(real);
        // Signature checks on, as an admin adds the repository: the key in /etc/apt/keyrings,
        // named by signed-by (no trusted=yes).
        m.publish(&[]);
        m.sh_ok("install -D -m 0644 /srv/repo/stalwart-archive-keyring.gpg /etc/apt/keyrings/stalwart-archive-keyring.gpg");
        m.ct.write_file(
            "/etc/apt/sources.list.d/local.list",
            "deb [signed-by=/etc/apt/keyrings/stalwart-archive-keyring.gpg] file:/srv/repo/apt ./\n",
        )
        .expect("sources");
        m.ct.write_file(
            "/etc/apt/apt.conf.d/51stalwart-test",
            r#"Dpkg::Options { "--force-confold"; };
Unattended-Upgrade::Origins-Pattern { "origin=stalwart-test,codename=ci"; };
Unattended-Upgrade::Package-Blacklist { };
APT::Periodic::Update-Package-Lists "always";
APT::Periodic::Unattended-Upgrade "always";
APT::Periodic::RandomSleep "0";
"#,
        )
        .expect("apt.conf");
        m
    }

    /// Adds the .debs to the signed apt repository (Packages, Release, InRelease regenerated).
    pub fn publish_debs(&self, debs: &[&Path]) {
        self.publish(debs);
    }

    pub fn apt_get(&self, args: &str) -> Output {
        self.sh(&format!("{APT} {args} 2>&1"))
    }

    pub fn apt_ok(&self, args: &str) -> String {
        let o = self.apt_get(args);
        assert!(o.status.success(), "apt-get {args}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `dpkg-query` status and version of a package, e.g. "install ok installed 0.15.6-1".
    pub fn dpkg_status(&self, pkg: &str) -> String {
        self.sh_ok(&format!(
            "dpkg-query -W -f '${{Status}} ${{Version}}' {pkg} 2>/dev/null || true"
        ))
    }

    /// `dpkg --audit`: empty when no package is half-installed or half-configured.
    pub fn dpkg_audit(&self) -> String {
        self.sh_ok("dpkg --audit")
    }
}

// ------------------------------------------------------------------------------------------
// dnf

impl Machine {
    /// A container whose rpm database knows what dpkg installed (a metadata-only package
    /// providing every requirement of our packages), with /srv/repo as the only dnf repository.
    pub fn dnf() -> Machine {
        Self::dnf_with(&[])
    }

    /// `dnf`, with the rpm database also providing what the `extra` packages require.
    pub fn dnf_with(extra: &[PathBuf]) -> Machine {
        let m = Machine::boot();
        // The key as an admin installs it, from a copy they checked, not from the repository
        // (whoever can change the repository could change a key it serves).
        m.publish(&[]);
        m.sh_ok("install -D -m 0644 /srv/repo/RPM-GPG-KEY-stalwart /etc/pki/rpm-gpg/RPM-GPG-KEY-stalwart");
        m.ct.write_file(
            "/etc/yum.repos.d/local.repo",
            "[local]\nname=local\nbaseurl=file:///srv/repo/rpm\nenabled=1\nmetadata_expire=0\n\
             gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-stalwart\n",
        )
        .expect("repo file");
        let base = base_provides_rpm(extra);
        let inside = m.ct.target_path(&base).expect("base rpm under target/");
        m.sh_ok(&format!("rpm -i --justdb --nodeps --force-debian {inside}"));
        m
    }

    /// Adds the .rpms to the signed dnf repository (each package signed, repomd.xml signed).
    pub fn publish_rpms(&self, rpms: &[&Path]) {
        self.publish(rpms);
    }

    pub fn dnf_run(&self, args: &str) -> Output {
        self.sh(&format!(
            "dnf -y --releasever=12 --setopt=install_weak_deps=False {args} 2>&1"
        ))
    }

    pub fn rpm_q(&self, pkg: &str) -> String {
        self.sh_ok(&format!("rpm -q {pkg} || true"))
            .trim()
            .to_string()
    }
}

/// A noarch package, installed with `--justdb`, that provides what our packages require and
/// Debian's dpkg provides (libc, /bin/sh, shadow-utils, ...), computed from the built rpms.
/// `extra`: more packages whose requirements it provides too (a real upstream build needs the
/// C++ runtime RocksDB links), each set built once.
fn base_provides_rpm(extra: &[PathBuf]) -> PathBuf {
    static CACHE: Mutex<Option<HashMap<Vec<PathBuf>, PathBuf>>> = Mutex::new(None);
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    let n = map.len();
    map.entry(extra.to_vec())
        .or_insert_with(|| {
        let dir = work_dir().join(format!("debian-base-{n}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut provides = std::collections::BTreeSet::new();
        let helper = helper_packages().rpm;
        let server = server_packages("0.15.5", Fault::None, 0).rpm;
        for rpm in [&helper, &server].into_iter().chain(extra) {
            let o = Command::new("rpm")
                .args(["-qp", "--requires"])
                .arg(rpm)
                .output()
                .expect("rpm -qp");
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let l = l.trim();
                if l.is_empty() || l.starts_with("rpmlib(") || l.starts_with("stalwart") {
                    continue;
                }
                provides.insert(l.to_string());
            }
        }
        let mut spec = String::from(
            "Name: debian-base\nVersion: 1\nRelease: 1\nSummary: what dpkg installed\nLicense: MIT\nBuildArch: noarch\n",
        );
        for p in &provides {
            spec.push_str(&format!("Provides: {p}\n"));
        }
        spec.push_str("%description\nMetadata only: the files belong to dpkg.\n%files\n");
        let spec_path = dir.join("debian-base.spec");
        std::fs::write(&spec_path, spec).expect("write spec");
        let o = Command::new("rpmbuild")
            .args(["-bb", "--quiet", "--nodeps"])
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("build").display()))
            .arg("--define")
            .arg(format!("_rpmdir {}", dir.display()))
            .arg(&spec_path)
            .output()
            .expect("rpmbuild");
        assert!(o.status.success(), "rpmbuild debian-base: {}", text(&o));
        dir.join("noarch/debian-base-1-1.noarch.rpm")
    })
    .clone()
}
