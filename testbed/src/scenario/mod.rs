//! The one test harness of the end-to-end tests: a booted container, a server installed in it
//! (the stand-in, a real upstream release, or none: the package tests install it with apt/dnf),
//! the helper configured, and the data a test checks across an upgrade.
//!
//! [`Builder`] describes a scenario and [`Builder::boot`] runs one pipeline for every kind:
//! preflight, container boot (with its binds), the local package repository (apt or dnf), the
//! server's installation (`stalwart::install_server`, `RealServer::install` or `install_init`),
//! the helper's config and web-admin credentials, where the helper is (the host-built one under
//! /target, or the packaged one on PATH), and the fixture (stand-in: 20 mail records; real: the
//! accounts and one mail each). [`Scenario`] carries what every test asks of it.
//!
//! The three kinds of tests keep their own names for what differs between them (the helper's
//! arguments, what `upgrade` takes, what `serves` checks): [`Standin`], [`Real`] and [`Machine`]
//! are thin wrappers that dereference to [`Scenario`].

mod package;
mod pkgbuild;
mod real;
mod standin;

pub use package::{Machine, APT};
pub use pkgbuild::{
    helper_packages, new_signing_key, packaging_build, packaging_build_as_released, publish_signed,
    real_server_packages, real_server_packages_with_webui, relabelled_real_packages,
    server_packages, signing_key, webui_bundle, Built,
};
pub use real::{crossing, crossing_releases, real_container, releases, Real};
pub use standin::Standin;

use crate::real::{Backend, RealRelease};
use crate::real_server::{alice, bob, RealServer};
use crate::stalwart::{self, ServerLayout};
use crate::{Container, Fault, Halted};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Where the helper reads its settings inside the containers.
pub const HELPER_CONFIG_PATH: &str = "/etc/stalwart-upgrade/config.toml";

/// Where the helper's web-admin credentials are (`[webadmin] credentials_file`).
pub const WEBADMIN_CRED_PATH: &str = "/etc/stalwart-upgrade/webadmin.cred";

/// Where the package repository of a scenario is bound inside its container.
pub const REPO_IN_CONTAINER: &str = "/srv/repo";

/// The helper's settings with the stand-in server: short timeouts (the stand-in starts in well
/// under a second).
pub const STANDIN_HELPER_CONFIG: &str = r#"
[timeouts]
stop_secs = 20
start_secs = 30
ready_secs = 20
settle_secs = 1
lock_wait_secs = 2

[webadmin]
credentials_file = "/etc/stalwart-upgrade/webadmin.cred"
"#;

/// The helper's settings with a real server: real servers start in well under a second here; a
/// 0.15 start may wait for the spam-filter and web-admin resources (local files in these tests).
pub const REAL_HELPER_CONFIG: &str = r#"
[timeouts]
stop_secs = 30
start_secs = 30
ready_secs = 60
settle_secs = 1
lock_wait_secs = 5

[webadmin]
credentials_file = "/etc/stalwart-upgrade/webadmin.cred"
"#;

/// The helper's settings in the package tests: short timeouts (the stand-in starts in well
/// under a second), no web-admin refresh (first installs generate a random admin secret).
pub const PACKAGES_HELPER_CONFIG: &str = r#"
[timeouts]
stop_secs = 20
start_secs = 30
ready_secs = 20
settle_secs = 1
lock_wait_secs = 10

[webadmin]
enabled = false
"#;

/// A stamped stand-in release (`standin_release`).
pub fn release(version: &str, fault: Fault, migrate_ms: u64) -> PathBuf {
    crate::standin_release(version, fault, migrate_ms)
}

/// The part of a stand-in's digest that must not change across a same-schema upgrade or a
/// rollback.
pub fn data_of(d: &Value) -> (Value, Value, Value) {
    (
        d["schema"].clone(),
        d["records"].clone(),
        d["sha256"].clone(),
    )
}

/// An output for a failure message: exit code, stdout and stderr.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The exit code, -1 when killed by a signal.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The server a scenario installs before the test starts.
#[derive(Debug, Clone, Default)]
pub enum Server {
    /// None (the package tests install it with apt or dnf).
    #[default]
    None,
    /// A stand-in release installed as install.sh does, ready.
    Standin {
        binary: PathBuf,
        layout: ServerLayout,
    },
    /// A real release installed as install.sh installs its generation (`RealServer::install`).
    Real {
        release: RealRelease,
        backend: Backend,
    },
    /// A real 0.15 on upstream's default installation (`RealServer::install_init`).
    RealInit(RealRelease),
}

/// The package manager of a scenario's local repository.
#[derive(Debug, Clone)]
pub enum Pm {
    /// The flat apt repository /srv/repo/apt as the only source, unattended-upgrades set up.
    Apt,
    /// /srv/repo/rpm as the only dnf repository; the rpm database provides what dpkg installed
    /// and what the `extra` packages require.
    Dnf { extra: Vec<PathBuf> },
}

/// Which helper a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperAt {
    /// The host-built one, `<target>/debug/stalwart-upgrade` seen under /target.
    Target,
    /// `stalwart-upgrade` on the container's PATH (installed by the package).
    Path,
}

use crate::container::Bind;

/// What a scenario is made of; [`Builder::boot`] makes it.
#[derive(Debug, Clone)]
pub struct Builder {
    server: Server,
    packages: Option<Pm>,
    repo: bool,
    binds: Vec<Bind>,
    real_bins: bool,
    helper_config: Option<String>,
    webadmin_cred: Option<String>,
    fixture: bool,
    helper_at: HelperAt,
    helper_timeout: Option<Duration>,
    pause_polls: u32,
    pause_timeout: Option<Duration>,
}

impl Default for Builder {
    /// A container with nothing installed, the host-built helper, no config written.
    fn default() -> Self {
        Builder {
            server: Server::None,
            packages: None,
            repo: false,
            binds: Vec::new(),
            real_bins: false,
            helper_config: None,
            webadmin_cred: None,
            fixture: true,
            helper_at: HelperAt::Target,
            helper_timeout: None,
            pause_polls: 600,
            pause_timeout: None,
        }
    }
}

impl Builder {
    /// The server installed before the test.
    pub fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }

    /// A local package repository bound at /srv/repo, set up for `pm`.
    pub fn packages(mut self, pm: Pm) -> Self {
        self.packages = Some(pm);
        self.repo = true;
        self
    }

    /// A local package repository bound at /srv/repo (signed by `packaging/repo`), with no
    /// package manager set up for it.
    pub fn repo(mut self) -> Self {
        self.repo = true;
        self
    }

    /// Binds a host path read-write at `ct`.
    pub fn bind(mut self, host: impl AsRef<Path>, ct: &str) -> Self {
        self.binds.push(Bind {
            host: host.as_ref().to_path_buf(),
            ct: ct.to_string(),
            read_only: false,
        });
        self
    }

    /// Binds a host path read-only at `ct`.
    pub fn bind_ro(mut self, host: impl AsRef<Path>, ct: &str) -> Self {
        self.binds.push(Bind {
            host: host.as_ref().to_path_buf(),
            ct: ct.to_string(),
            read_only: true,
        });
        self
    }

    /// Upstream's real binaries (testbed::real) bound read-only at /real.
    pub fn real_bins(mut self) -> Self {
        self.real_bins = true;
        self
    }

    /// The helper's config.toml (at [`HELPER_CONFIG_PATH`]).
    pub fn helper_config(mut self, text: impl Into<String>) -> Self {
        self.helper_config = Some(text.into());
        self
    }

    /// The web-admin credentials file's content (`user:secret`, at [`WEBADMIN_CRED_PATH`], 0600).
    pub fn webadmin_cred(mut self, cred: impl Into<String>) -> Self {
        self.webadmin_cred = Some(cred.into());
        self
    }

    /// Whether the server gets its fixture (stand-in: 20 records; real: accounts and mail).
    pub fn fixture(mut self, on: bool) -> Self {
        self.fixture = on;
        self
    }

    /// Which helper runs.
    pub fn helper_at(mut self, at: HelperAt) -> Self {
        self.helper_at = at;
        self
    }

    /// How long a helper run may take (None: the testbed's exec timeout).
    pub fn helper_timeout(mut self, t: Option<Duration>) -> Self {
        self.helper_timeout = t;
        self
    }

    /// How many times (50 ms apart) `upgrade_pausing` looks whether the helper paused.
    pub fn pause_polls(mut self, n: u32) -> Self {
        self.pause_polls = n;
        self
    }

    /// How long the whole `upgrade_pausing` script may take (None: the testbed's exec timeout).
    pub fn pause_timeout(mut self, t: Option<Duration>) -> Self {
        self.pause_timeout = t;
        self
    }

    /// Boots a container with the binds and makes the scenario in it.
    pub fn boot(self) -> Scenario {
        crate::preflight().expect("testbed preflight");
        let repo = self.repo.then(pkgbuild::new_repo_dir);
        let mut b = Container::builder();
        if let Some(r) = &repo {
            b = b.bind(r, REPO_IN_CONTAINER);
        }
        if self.real_bins {
            b = b.bind_ro(crate::real::cache_dir(), crate::real::IN_CONTAINER);
        }
        for bind in &self.binds {
            b = if bind.read_only {
                b.bind_ro(&bind.host, &bind.ct)
            } else {
                b.bind(&bind.host, &bind.ct)
            };
        }
        let ct = b.boot().expect("boot container");
        self.set_up(ct, repo)
    }

    /// Makes the scenario in a container the caller booted (e.g. with file systems of its own
    /// bound in). Binds of this builder are not made (the container is booted already).
    pub fn on(self, ct: Container) -> Scenario {
        assert!(
            !self.repo,
            "a package repository is bound at boot: use Builder::boot"
        );
        self.set_up(ct, None)
    }

    fn set_up(self, ct: Container, repo: Option<PathBuf>) -> Scenario {
        let Builder {
            server,
            packages,
            helper_config,
            webadmin_cred,
            fixture,
            helper_at,
            helper_timeout,
            pause_polls,
            pause_timeout,
            ..
        } = self;
        let mut s = Scenario {
            ct,
            helper: String::new(),
            real: None,
            repo,
            helper_timeout,
            pause_polls,
            pause_timeout,
        };
        match &packages {
            Some(Pm::Apt) => s.set_up_apt(),
            Some(Pm::Dnf { extra }) => s.set_up_dnf(extra),
            None => {}
        }
        s.real = install(&s.ct, &server);
        if let Some(config) = &helper_config {
            s.ct.write_file(HELPER_CONFIG_PATH, config)
                .expect("helper config");
        }
        if let Some(cred) = &webadmin_cred {
            s.ct.write_file(WEBADMIN_CRED_PATH, cred)
                .expect("web-admin credentials");
            s.ct.exec_ok(&["chmod", "0600", WEBADMIN_CRED_PATH])
                .expect("chmod the web-admin credentials");
        }
        s.helper = match helper_at {
            HelperAt::Target => {
                s.ct.target_path(crate::target_dir().join("debug/stalwart-upgrade"))
                    .expect("helper binary under target/")
            }
            HelperAt::Path => "stalwart-upgrade".to_string(),
        };
        if fixture {
            s.put_fixture(&server);
        }
        s
    }
}

/// Installs `server` (and waits until it is ready); the real server's handle.
fn install(ct: &Container, server: &Server) -> Option<RealServer> {
    match server {
        Server::None => None,
        Server::Standin { binary, layout } => {
            stalwart::install_server(ct, binary, layout.clone()).expect("install server");
            stalwart::wait_ready(ct, Duration::from_secs(30)).expect("server ready");
            None
        }
        Server::Real { release, backend } => {
            Some(RealServer::install(ct, release, *backend).expect("install the real server"))
        }
        Server::RealInit(release) => {
            Some(RealServer::install_init(ct, release).expect("install with --init"))
        }
    }
}

/// A booted container with a server (or none), the helper configured: what every test drives.
pub struct Scenario {
    pub ct: Container,
    /// The helper as the container runs it: a path under /target, or `stalwart-upgrade`.
    pub helper: String,
    /// The real server installed, if any.
    pub real: Option<RealServer>,
    /// The host directory of the package repository bound at /srv/repo, if any.
    pub repo: Option<PathBuf>,
    helper_timeout: Option<Duration>,
    pause_polls: u32,
    pause_timeout: Option<Duration>,
}

impl Scenario {
    fn put_fixture(&self, server: &Server) {
        match server {
            Server::None => {}
            Server::Standin { .. } => self.deliver(20),
            Server::Real { release, .. } | Server::RealInit(release) => {
                let g = release.is_016();
                RealServer::populate(&self.ct, g).expect("accounts");
                RealServer::deliver(&self.ct, g, &alice(), "before-alice")
                    .expect("deliver to alice");
                RealServer::deliver(&self.ct, g, &bob(), "before-bob").expect("deliver to bob");
            }
        }
    }

    /// Runs the helper inside the container (outside any unit, like an admin's shell), with
    /// `env` added to its environment.
    pub fn run_helper(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut full: Vec<String> = Vec::new();
        if !env.is_empty() {
            full.push("env".into());
            full.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        full.push(self.helper.clone());
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(|s| s.as_str()).collect();
        match self.helper_timeout {
            Some(t) => self.ct.exec_timeout(&refs, t),
            None => self.ct.exec(&refs),
        }
    }

    /// Runs an upgrade to `to` (a path inside the container) that stops itself (SIGSTOP) once
    /// the journal has `pause_at` (`step:started|done`), runs `meanwhile` (a shell script) while
    /// it is stopped, then lets it go on: a change to the world past every preflight check, at a
    /// known step. `env`: more environment for the helper.
    pub fn upgrade_pausing_inside(
        &self,
        to: &str,
        env: &[(&str, &str)],
        pause_at: &str,
        meanwhile: &str,
    ) -> Output {
        let env: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let polls = self.pause_polls;
        let script = format!(
            r#"{env}STALWART_UPGRADE_TEST_PAUSE_AT={pause_at} {helper} upgrade --to {to} --yes >/root/paused.out 2>&1 &
pid=$!
state=
for _ in $(seq 1 {polls}); do
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
        );
        match self.pause_timeout {
            Some(t) => self.ct.exec_timeout(&["sh", "-c", &script], t),
            None => self.ct.sh(&script),
        }
    }

    /// `sh -c SCRIPT` inside, outside any unit.
    pub fn sh(&self, script: &str) -> Output {
        self.ct.sh(script)
    }

    /// `sh -c SCRIPT` inside, which must succeed; its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.ct.sh(script);
        assert!(o.status.success(), "{script}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The journal entries with `message_id` (what `journalctl MESSAGE_ID=...` shows an admin),
    /// as JSON objects.
    pub fn entries(&self, message_id: &str) -> Vec<Value> {
        self.sh_ok(&format!("journalctl -q -o json MESSAGE_ID={message_id}"))
            .lines()
            .map(|l| serde_json::from_str(l).expect("journalctl -o json"))
            .collect()
    }

    /// Installs the host-built helper at /usr/sbin and the packaged
    /// stalwart-upgrade-recover.service, enabled: what runs at boot before stalwart.service.
    pub fn install_recover_unit(&self) {
        let helper = crate::target_dir().join("debug/stalwart-upgrade");
        std::fs::copy(&helper, self.ct.path("/usr/sbin/stalwart-upgrade")).unwrap();
        let unit = std::fs::read_to_string(
            crate::workspace_root().join("systemd/stalwart-upgrade-recover.service"),
        )
        .unwrap();
        self.ct
            .write_file("/etc/systemd/system/stalwart-upgrade-recover.service", unit)
            .unwrap();
        self.ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
        self.ct
            .exec_ok(&[
                "systemctl",
                "enable",
                "--quiet",
                "stalwart-upgrade-recover.service",
            ])
            .unwrap();
    }

    /// Path of a host file under target/ as the container sees it.
    pub fn inside(&self, host: &Path) -> String {
        self.ct.target_path(host).expect("file under target/")
    }

    /// The admin's approval of a minor/major line (the policy refuses them otherwise).
    pub fn allow(&self, line: &str) {
        let out = self.run_helper(&["allow", line], &[]);
        assert!(out.status.success(), "allow {line}: {}", text(&out));
    }

    /// Asks the stand-in to deliver `n` more mail records.
    pub fn deliver(&self, n: u32) {
        let out = self.ct.exec(&[
            "curl",
            "-sS",
            "-f",
            "-X",
            "POST",
            &format!("{}/standin/deliver?n={n}", stalwart::HTTP),
        ]);
        assert!(out.status.success(), "deliver failed: {}", text(&out));
    }

    /// The stand-in's digest of its data: version, schema, record count, content hash.
    pub fn digest(&self) -> Value {
        let d = stalwart::digest(&self.ct).expect("digest");
        serde_json::from_str(&d).expect("digest is JSON")
    }

    /// Waits until the (stand-in's) GET /healthz/ready answers 200.
    pub fn ready(&self) {
        stalwart::wait_ready(&self.ct, Duration::from_secs(30)).expect("server ready");
    }

    /// What bin/stalwart reports.
    pub fn binary_version(&self) -> String {
        self.ct
            .exec_ok(&[stalwart::BINARY, "--version"])
            .expect("--version")
            .trim()
            .to_string()
    }

    /// What /opt/stalwart/bin/stalwart reports (as `binary_version`, through a shell).
    pub fn running_binary(&self) -> String {
        self.sh_ok("/opt/stalwart/bin/stalwart --version")
            .trim()
            .to_string()
    }

    /// The server's main PID as systemd sees it (unchanged = the server was not restarted).
    pub fn main_pid(&self) -> String {
        self.ct
            .exec_ok(&["systemctl", "show", "-P", "MainPID", "stalwart.service"])
            .expect("systemctl show")
    }

    /// The unit's invocation and main PID: unchanged means no restart, no outage.
    pub fn invocation(&self) -> String {
        self.sh_ok("systemctl show -p InvocationID -p MainPID -p ActiveState stalwart.service")
    }

    /// The helper's `status` exit code.
    pub fn status_code(&self) -> i32 {
        code(&self.run_helper(&["status"], &[]))
    }

    /// `history --json`, which must succeed.
    pub fn history_json(&self) -> Value {
        let out = self.run_helper(&["history", "--json"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("history json")
    }

    /// The transactions of `history --json`.
    pub fn history(&self) -> Vec<Value> {
        let o = self.run_helper(&["history", "--json"], &[]);
        assert!(o.status.success(), "history: {}", text(&o));
        match serde_json::from_slice(&o.stdout).expect("history json") {
            Value::Array(a) => a,
            other => panic!("history is not an array: {other}"),
        }
    }

    /// The last transaction of the history and the names of its finished steps.
    pub fn last_steps(&self) -> (Value, Vec<String>) {
        let h = self.history_json();
        let last = h
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or_else(|| panic!("no transaction in the history: {h}"));
        let steps = last["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|x| x["step"].as_str().expect("step name").to_string())
            .collect();
        (last, steps)
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
        let url = format!("{}{path}", crate::real_server::HTTP);
        self.ct.in_netns(|| crate::mail::http_get(&url, None))
    }

    /// Power loss (no shutdown), then `boot` boots the halted container again (e.g.
    /// `|h| h.boot_again().expect("boot again")`, or degraded, or after changing its disks).
    pub fn crash_then(self, boot: impl FnOnce(Halted) -> Container) -> Scenario {
        let Scenario {
            ct,
            helper,
            real,
            repo,
            helper_timeout,
            pause_polls,
            pause_timeout,
        } = self;
        let ct = boot(ct.crash());
        Scenario {
            ct,
            helper,
            real,
            repo,
            helper_timeout,
            pause_polls,
            pause_timeout,
        }
    }

    /// Power loss (no shutdown), then a boot on the same disk.
    pub fn crash_and_boot(self) -> Scenario {
        self.crash_then(|h| h.boot_again().expect("boot again"))
    }
}
