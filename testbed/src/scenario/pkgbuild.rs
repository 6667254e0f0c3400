//! The packages of the package tests: built with `packaging/build` (the helper once per test
//! process, one server package per stand-in or real release), signed and published with
//! `packaging/repo` in a local apt and dnf repository.

use super::text;
use crate::real::RealRelease;
use crate::Fault;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// `<target>/packages-test/<pid>`: this test process's packages, keys and repositories (those of
/// processes that are gone are removed).
pub(super) fn work_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = crate::target_dir().join("packages-test");
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

/// A new, empty repository directory (bound at /srv/repo in a scenario).
pub(super) fn new_repo_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let repo = work_dir().join(format!("repo-{n}"));
    std::fs::create_dir_all(&repo).expect("mkdir repo");
    repo
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
    crate::workspace_root().join("packaging/repo")
}

/// `packaging/repo` over `dir` (the apt suite of the unattended-upgrades pattern of
/// `Machine::apt`), signed with `key` (a fingerprint in `home`), adding `files`.
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
    let script = crate::workspace_root().join("packaging/build");
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
        let bin = crate::target_dir().join("debug/stalwart-upgrade");
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
    let release = crate::standin_release(version, fault, migrate_ms);
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
pub fn real_server_packages(release: &RealRelease) -> Built {
    real_packages_cached(release, false)
}

/// The packages of `release`, with a web UI bundle made for it or without, built once per
/// test process.
fn real_packages_cached(release: &RealRelease, webui: bool) -> Built {
    static CACHE: Mutex<Option<HashMap<(String, bool), Built>>> = Mutex::new(None);
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    let key = (release.version.clone(), webui);
    if let Some(b) = map.get(&key) {
        return b.clone();
    }
    let kind = if webui {
        "real-server-webui"
    } else {
        "real-server"
    };
    let out = work_dir().join(format!("{kind}-{}", release.version));
    let mut args = vec![
        "--server-only".to_string(),
        "--server-binary".into(),
        release.path.to_str().expect("utf-8 path").into(),
        "--server-version".into(),
        release.version.clone(),
    ];
    if webui {
        let bundle = webui_bundle(&format!("webui-for-{}", release.version));
        args.push("--webui-zip".into());
        args.push(bundle.to_str().expect("utf-8 path").into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = pick(&packaging_build(&args, &out));
    map.insert(key, b.clone());
    b
}

/// A web UI bundle as upstream's server takes it (index.html at the root, assets beside it),
/// marked `marker` in each file, so a test can tell which bundle /admin/ serves.
pub fn webui_bundle(marker: &str) -> PathBuf {
    use std::io::Write;
    let p = work_dir().join(format!("webui-{marker}.zip"));
    let f = std::fs::File::create(&p).expect("create the bundle");
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default();
    z.start_file("index.html", opts).expect("zip");
    write!(z, "<!doctype html><base href=\"/\"><title>{marker}</title>").expect("zip");
    z.start_file("app.js", opts).expect("zip");
    writeln!(z, "// {marker}").expect("zip");
    z.finish().expect("zip");
    p
}

/// The `stalwart` packages around a real upstream binary with a web UI bundle made for it
/// (`webui_bundle("webui-for-VERSION")`, `packaging/build --webui-zip`), cached per release.
pub fn real_server_packages_with_webui(release: &RealRelease) -> Built {
    real_packages_cached(release, true)
}

/// The `stalwart` packages around a real upstream binary whose version string is replaced by
/// `label` (same length, every occurrence, as ../shared/real-stalwart made 1.0.1-pre.1): real
/// server code that presents itself as another release. The demo's broken release is upstream's
/// 1.x store code labelled as a 0.16 patch: on a 0.16 store it adds its column families, then
/// panics (exit 101), and 0.16 can no longer open that store (measured, ../shared/facts).
pub fn relabelled_real_packages(release: &RealRelease, label: &str) -> Built {
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

/// A noarch package, installed with `--justdb`, that provides what our packages require and
/// Debian's dpkg provides (libc, /bin/sh, shadow-utils, ...), computed from the built rpms.
/// `extra`: more packages whose requirements it provides too (a real upstream build needs the
/// C++ runtime RocksDB links), each set built once.
pub(super) fn base_provides_rpm(extra: &[PathBuf]) -> PathBuf {
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
