//! Installs the (stand-in) server inside a container the way upstream's install.sh does (0.15
//! layout under /opt/stalwart), and talks to its HTTP listener.

use crate::Container;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The unit install.sh writes to /etc/systemd/system/stalwart.service (0.15), verbatim.
pub const UNIT_FILE: &str = "\
[Unit]
Description=Stalwart
Conflicts=postfix.service sendmail.service exim4.service
ConditionPathExists=/opt/stalwart/etc/config.toml
After=network-online.target
[Service]
Type=simple
LimitNOFILE=65536
KillMode=process
KillSignal=SIGINT
Restart=on-failure
RestartSec=5
ExecStart=/opt/stalwart/bin/stalwart --config=/opt/stalwart/etc/config.toml
SyslogIdentifier=stalwart
User=stalwart
Group=stalwart
AmbientCapabilities=CAP_NET_BIND_SERVICE
[Install]
WantedBy=multi-user.target
";

pub const UNIT: &str = "stalwart.service";
pub const BASE: &str = "/opt/stalwart";
pub const BINARY: &str = "/opt/stalwart/bin/stalwart";
pub const CONFIG: &str = "/opt/stalwart/etc/config.toml";
pub const HTTP: &str = "http://127.0.0.1:8080";
pub const ADMIN_USER: &str = "admin";
pub const DEFAULT_ADMIN_SECRET: &str = "testbed-admin-secret";

/// Which store backs every role (`storage.data`, `fts`, `blob`, `lookup`, the internal directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Store {
    #[default]
    RocksDb,
    Sqlite,
}

/// How to install the server.
#[derive(Debug, Clone)]
pub struct ServerLayout {
    pub store: Store,
    /// Fallback admin secret (`[authentication.fallback-admin]`, user `admin`).
    pub admin_secret: String,
    /// Appended verbatim to config.toml.
    pub extra_config: String,
    /// Enable and start the unit after installing (install.sh does).
    pub start: bool,
}

impl Default for ServerLayout {
    fn default() -> Self {
        ServerLayout {
            store: Store::RocksDb,
            admin_secret: DEFAULT_ADMIN_SECRET.to_string(),
            extra_config: String::new(),
            start: true,
        }
    }
}

impl ServerLayout {
    pub fn rocksdb() -> Self {
        ServerLayout::default()
    }
    pub fn sqlite() -> Self {
        ServerLayout {
            store: Store::Sqlite,
            ..ServerLayout::default()
        }
    }
}

/// The config.toml install.sh's `--init` would leave, reduced to the HTTP listener on
/// 127.0.0.1:8080, the chosen store, the log tracer and the fallback admin.
pub fn config_toml(layout: &ServerLayout) -> String {
    let (id, store) = match layout.store {
        Store::RocksDb => (
            "rocksdb",
            "[store.rocksdb]\ntype = \"rocksdb\"\npath = \"/opt/stalwart/data\"\ncompression = \"lz4\"\n",
        ),
        Store::Sqlite => (
            "sqlite",
            "[store.sqlite]\ntype = \"sqlite\"\npath = \"/opt/stalwart/data/index.sqlite3\"\n",
        ),
    };
    format!(
        "[server.listener.http]\n\
         bind = [\"127.0.0.1:8080\"]\n\
         protocol = \"http\"\n\
         \n\
         [storage]\n\
         data = \"{id}\"\n\
         fts = \"{id}\"\n\
         blob = \"{id}\"\n\
         lookup = \"{id}\"\n\
         directory = \"internal\"\n\
         \n\
         {store}\
         \n\
         [directory.internal]\n\
         type = \"internal\"\n\
         store = \"{id}\"\n\
         \n\
         [tracer.log]\n\
         type = \"log\"\n\
         level = \"info\"\n\
         path = \"/opt/stalwart/logs\"\n\
         prefix = \"stalwart.log\"\n\
         rotate = \"daily\"\n\
         ansi = false\n\
         enable = true\n\
         \n\
         [authentication.fallback-admin]\n\
         user = \"{ADMIN_USER}\"\n\
         secret = \"{}\"\n\
         {}",
        layout.admin_secret, layout.extra_config
    )
}

/// Does inside `ct` what upstream's install.sh does: the `stalwart` system user, /opt/stalwart/
/// {bin,etc,data,logs} owned by it, the binary at /opt/stalwart/bin/stalwart (0755), config.toml,
/// the unit at /etc/systemd/system/stalwart.service; then daemon-reload, enable and start
/// (unless `layout.start` is false).
pub fn install_server(ct: &Container, release_binary: &Path, layout: ServerLayout) -> Result<()> {
    if !release_binary.is_file() {
        bail!("release binary {} does not exist", release_binary.display());
    }
    ct.sh_ok("id -u stalwart >/dev/null 2>&1 || useradd stalwart -s /usr/sbin/nologin -M -r -U")?;
    for d in ["bin", "etc", "data", "logs"] {
        std::fs::create_dir_all(ct.path(format!("{BASE}/{d}")))?;
    }
    let bin = ct.path(BINARY);
    std::fs::copy(release_binary, &bin)
        .with_context(|| format!("copying {} to {}", release_binary.display(), bin.display()))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    ct.write_file(CONFIG, config_toml(&layout))?;
    ct.write_file("/etc/systemd/system/stalwart.service", UNIT_FILE)?;
    ct.exec_ok(&["chown", "-R", "stalwart:stalwart", BASE])?;
    ct.exec_ok(&["systemctl", "daemon-reload"])?;
    if layout.start {
        ct.exec_ok(&["systemctl", "enable", "--quiet", UNIT])?;
        ct.exec_ok(&["systemctl", "start", UNIT])?;
    }
    Ok(())
}

/// `curl` inside the container: (HTTP status, body). Status 0 when nothing answered.
pub fn http_get(ct: &Container, path: &str) -> Result<(u16, String)> {
    let url = format!("{HTTP}{path}");
    let out = ct.exec_timeout(
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &url,
        ],
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code: u16 = code.trim().parse().unwrap_or(0);
    Ok((code, body.to_string()))
}

/// Polls GET /healthz/ready until it answers 200; returns how long that took.
pub fn wait_ready(ct: &Container, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut last = (0, String::new());
    while started.elapsed() < timeout {
        last = http_get(ct, "/healthz/ready")?;
        if last.0 == 200 {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = ct.exec(&["systemctl", "status", "--no-pager", "-n", "20", UNIT]);
    bail!(
        "{UNIT} in {} not ready within {} s (last answer {} {:?}); systemctl status:\n{}",
        ct.name(),
        timeout.as_secs(),
        last.0,
        last.1,
        String::from_utf8_lossy(&status.stdout)
    )
}

/// GET /standin/digest: the stand-in's digest of its data (to compare data before/after).
pub fn digest(ct: &Container) -> Result<String> {
    let (code, body) = http_get(ct, "/standin/digest")?;
    if code != 200 {
        bail!(
            "GET /standin/digest in {} answered {code}: {body}",
            ct.name()
        );
    }
    Ok(body.trim().to_string())
}
