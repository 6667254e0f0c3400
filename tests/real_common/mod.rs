//! Harness of the real-server tier (tests/real_*.rs): a container with upstream's real binaries
//! bound at /real, one installed as install.sh installs its generation, the fixture's accounts
//! and mail, and the helper (host-built, at /target) run inside. See testbed::real.
#![allow(dead_code)]

use std::process::Output;
use std::time::Duration;
use testbed::real::{Backend, RealRelease};
use testbed::real_server::{alice, bob, RealServer};
use testbed::Container;

#[path = "../common/mod.rs"]
mod common;
pub use common::{code, text};

/// Real servers start in well under a second here; a 0.15 start may wait for the spam-filter
/// and web-admin resources (local files in these tests).
pub const HELPER_CONFIG: &str = r#"
[timeouts]
stop_secs = 30
start_secs = 30
ready_secs = 60
settle_secs = 1
lock_wait_secs = 5

[webadmin]
credentials_file = "/etc/stalwart-upgrade/webadmin.cred"
"#;

pub struct RealScenario {
    pub ct: Container,
    pub helper: String,
    pub server: RealServer,
}

/// The releases and their common store, or None after a loud skip line.
pub fn releases(test: &str, versions: &[&str]) -> Option<(Vec<&'static RealRelease>, Backend)> {
    let rels = testbed::real::require(test, versions)?;
    match Backend::common(&rels) {
        Some(b) => Some((rels, b)),
        None => {
            testbed::real::skip(
                test,
                "the releases have no store backend in common (SQLite or RocksDB)",
            );
            None
        }
    }
}

/// The crossing's two releases: the real 0.15.5 and the newest 0.16, or None after a loud skip
/// line.
pub fn crossing_releases(test: &str) -> Option<[&'static RealRelease; 2]> {
    let Some(new) = testbed::real::newest("0.16") else {
        testbed::real::skip(test, "no 0.16 release in the real-server tier");
        return None;
    };
    let rels = testbed::real::require(test, &["0.15.5", &new.version.clone()])?;
    Some([rels[0], rels[1]])
}

/// `crossing_releases` and the store backend both have, or None after a loud skip line.
pub fn crossing(test: &str) -> Option<(&'static RealRelease, &'static RealRelease, Backend)> {
    let [old, new] = crossing_releases(test)?;
    let (rels, backend) = releases(test, &[&old.version, &new.version])?;
    Some((rels[0], rels[1], backend))
}

/// A booted container with /real bound, nothing installed.
pub fn container() -> Container {
    testbed::preflight().expect("testbed preflight");
    Container::builder()
        .bind_ro(testbed::real::cache_dir(), testbed::real::IN_CONTAINER)
        .boot()
        .expect("boot container")
}

impl RealScenario {
    /// `release` installed like install.sh, the fixture's accounts, one mail each
    /// ("before-alice", "before-bob"), and the helper configured with the admin's credentials.
    pub fn new(release: &RealRelease, backend: Backend) -> RealScenario {
        let ct = container();
        let server = RealServer::install(&ct, release, backend).expect("install the real server");
        Self::populated(ct, server, release)
    }

    /// `new` on upstream's default installation: `release` (a 0.15 with RocksDB) installed
    /// the install.sh way with the config its own `--init` writes (`RealServer::install_init`).
    pub fn with_init(release: &RealRelease) -> RealScenario {
        let ct = container();
        let server = RealServer::install_init(&ct, release).expect("install with --init");
        Self::populated(ct, server, release)
    }

    fn populated(ct: Container, server: RealServer, release: &RealRelease) -> RealScenario {
        let g = release.is_016();
        RealServer::populate(&ct, g).expect("accounts");
        RealServer::deliver(&ct, g, &alice(), "before-alice").expect("deliver to alice");
        RealServer::deliver(&ct, g, &bob(), "before-bob").expect("deliver to bob");
        ct.write_file("/etc/stalwart-upgrade/config.toml", HELPER_CONFIG)
            .unwrap();
        ct.write_file(
            "/etc/stalwart-upgrade/webadmin.cred",
            format!(
                "{}:{}",
                testbed::real_server::ADMIN,
                testbed::real_server::ADMIN_SECRET
            ),
        )
        .unwrap();
        ct.exec_ok(&["chmod", "0600", "/etc/stalwart-upgrade/webadmin.cred"])
            .unwrap();
        let helper = ct
            .target_path(testbed::target_dir().join("debug/stalwart-upgrade"))
            .expect("helper binary under target/");
        RealScenario { ct, helper, server }
    }

    pub fn helper(&self, args: &[&str]) -> Output {
        let mut full = vec![self.helper.as_str()];
        full.extend(args);
        self.ct.exec_timeout(&full, Duration::from_secs(300))
    }

    /// `upgrade --to` the real binary of `to`.
    pub fn upgrade(&self, to: &RealRelease) -> Output {
        let p = to.in_container();
        self.helper(&["upgrade", "--to", &p, "--yes"])
    }

    /// The server answers, runs exactly `release`'s bytes (the running process's executable),
    /// and alice and bob log in with their passwords and see `alice_sees` and "before-bob".
    #[track_caller]
    pub fn serves(&self, release: &RealRelease, generation016: bool, alice_sees: &[&str]) {
        self.server.wait_ready(&self.ct).expect("ready");
        assert_eq!(
            RealServer::running_sha256(&self.ct).expect("running binary"),
            release.sha256,
            "the server does not run the bytes of {}",
            release.version
        );
        RealServer::sees(&self.ct, generation016, &alice(), alice_sees)
            .unwrap_or_else(|e| panic!("after {}: {e:#}", release.version));
        RealServer::sees(&self.ct, generation016, &bob(), &["before-bob"])
            .unwrap_or_else(|e| panic!("after {}: {e:#}", release.version));
    }

    /// The helper's `status` exit code.
    pub fn status_code(&self) -> i32 {
        code(&self.helper(&["status"]))
    }
}

impl RealScenario {
    /// An upgrade that stops itself (SIGSTOP) once the journal has `pause_at`, runs `meanwhile`
    /// (a shell script) while it is stopped, then lets it go on (as `common::Scenario` does).
    pub fn upgrade_pausing(&self, to: &RealRelease, pause_at: &str, meanwhile: &str) -> Output {
        let script = format!(
            r#"STALWART_UPGRADE_TEST_PAUSE_AT={pause_at} {helper} upgrade --to {to} --yes >/root/paused.out 2>&1 &
pid=$!
state=
for _ in $(seq 1 1200); do
  state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
  [ "$state" = T ] && break
  [ -z "$state" ] && break
  sleep 0.05
done
if [ "$state" != T ]; then echo "the helper never paused at {pause_at} (state '$state')"; cat /root/paused.out; exit 99; fi
( {meanwhile} ) >&2
kill -CONT $pid
wait $pid
rc=$?
cat /root/paused.out
exit $rc
"#,
            helper = self.helper,
            to = to.in_container(),
        );
        self.ct
            .exec_timeout(&["sh", "-c", &script], Duration::from_secs(300))
    }

    /// The schema number in the SQLite store (4 bytes big-endian in table `p`, key 0x00:
    /// measured with the real 0.15.5 and 0.16.18).
    pub fn sqlite_schema(&self, db: &str) -> u32 {
        let out = self
            .ct
            .exec_ok(&[
                "python3",
                "-c",
                &format!(
                    "import sqlite3; c=sqlite3.connect('file:{db}?mode=ro', uri=True); print(int.from_bytes(c.execute(\"SELECT v FROM p WHERE k=X'00'\").fetchone()[0], 'big'))"
                ),
            ])
            .expect("schema");
        out.trim().parse().expect("schema number")
    }

    /// A web UI bundle zip at `path` whose index.html says `marker` (index.html at the root:
    /// both generations serve the zip's entries by name and fall back to it).
    pub fn webui_zip(&self, path: &str, marker: &str) {
        self.ct
            .exec_ok(&[
                "python3",
                "-c",
                &format!(
                    "import zipfile; z=zipfile.ZipFile('{path}','w'); z.writestr('index.html','<!doctype html><base href=\"/\"><title>{marker}</title>'); z.writestr('app.js','// {marker}'); z.close()"
                ),
            ])
            .expect("zip");
        self.ct.exec_ok(&["chmod", "0644", path]).unwrap();
    }

    /// GET `path` on the server's HTTP port: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", testbed::real_server::HTTP);
        self.ct.in_netns(|| testbed::mail::http_get(&url, None))
    }
}
