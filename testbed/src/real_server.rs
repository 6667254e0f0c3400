//! A real Stalwart release installed in a container as upstream's install.sh installs its
//! generation, plus the accounts and mail a test checks across an upgrade.
//!
//! - 0.15: `/opt/stalwart/{bin,etc,data,logs}` all owned by the service user, config.toml, the
//!   unit install.sh 0.15 writes (`stalwart::UNIT_FILE`).
//! - 0.16 with `PREFIX=/opt/stalwart`: bin/ root's, etc/ logs/ data/ the service user's (0750),
//!   `etc/stalwart.env` root:stalwart 0640, config.json, the unit install.sh 0.16 writes
//!   (`EnvironmentFile=-`, `--config=.../config.json`, no ConditionPathExists). install.sh itself
//!   writes no config.json (the server would start in bootstrap mode); the test writes what the
//!   setup wizard would, and pins the administrator with `STALWART_RECOVERY_ADMIN` in the env file.
//!
//! Offline quirks measured with the real binaries (the containers have no network): 0.15 applies
//! its default rate limits and reloads nothing while the spam-filter rules cannot be fetched, so
//! the config points them at a local file, turns pyzor and the inbound limiters off, and the
//! first start is followed by one `GET /api/reload`; 0.16's settings reload fails until pyzor is
//! off.

use crate::mail::{self, Jmap016, Rest015};
use crate::real::{Backend, RealRelease};
use crate::Container;
use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;

pub const HTTP: &str = "http://127.0.0.1:8080";
pub const SMTP: &str = "127.0.0.1:25";
pub const ADMIN: &str = "admin";
/// 0.16 checks password strength: test passwords are long and uncommon.
pub const ADMIN_SECRET: &str = "Adm1n-staple-battery-42";
pub const DOMAIN: &str = "example.org";
/// The PostgreSQL password of the `stalwart` database user (Backend::Postgres).
pub const PG_SECRET: &str = "Pg-store-secret-7";
/// The MariaDB password of the `stalwart` database user (Backend::MariaDb).
pub const MARIADB_SECRET: &str = "Maria-store-secret-7";

/// The unit install.sh 0.16 writes with PREFIX=/opt/stalwart, verbatim.
pub const UNIT_FILE_016: &str = "\
[Unit]
Description=Stalwart
Conflicts=postfix.service sendmail.service exim4.service
After=network-online.target

[Service]
Type=simple
LimitNOFILE=65536
KillMode=process
KillSignal=SIGINT
Restart=on-failure
RestartSec=5
EnvironmentFile=-/opt/stalwart/etc/stalwart.env
ExecStart=/opt/stalwart/bin/stalwart --config=/opt/stalwart/etc/config.json
SyslogIdentifier=stalwart
User=stalwart
Group=stalwart
AmbientCapabilities=CAP_NET_BIND_SERVICE

[Install]
WantedBy=multi-user.target
";

/// A mail account of the fixture.
#[derive(Debug, Clone)]
pub struct Account {
    pub local: String,
    pub password: String,
}

impl Account {
    pub fn address(&self) -> String {
        format!("{}@{DOMAIN}", self.local)
    }
    /// What the server of `generation016` takes as the login: 0.15 the account name, 0.16 the
    /// full address (measured: a bare name is 401 there).
    pub fn login(&self, generation016: bool) -> String {
        if generation016 {
            self.address()
        } else {
            self.local.clone()
        }
    }
}

/// A real server in a container.
#[derive(Debug, Clone)]
pub struct RealServer {
    pub release: RealRelease,
    pub backend: Backend,
}

/// The fixture's accounts.
pub fn alice() -> Account {
    Account {
        local: "alice".into(),
        password: "Tr0ub4dor-alice-x9".into(),
    }
}
pub fn bob() -> Account {
    Account {
        local: "bob".into(),
        password: "Corr3ct-horse-bob-7".into(),
    }
}

impl RealServer {
    /// Installs `release` like install.sh, starts it and waits until it answers.
    pub fn install(ct: &Container, release: &RealRelease, backend: Backend) -> Result<RealServer> {
        let s = RealServer {
            release: release.clone(),
            backend,
        };
        ct.sh_ok(
            "id -u stalwart >/dev/null 2>&1 || useradd stalwart -s /usr/sbin/nologin -M -r -U",
        )?;
        ct.sh_ok(&format!(
            "mkdir -p /opt/stalwart/bin /opt/stalwart/etc /opt/stalwart/data /opt/stalwart/logs && \
             cp {} /opt/stalwart/bin/stalwart && chmod 0755 /opt/stalwart/bin/stalwart",
            release.in_container()
        ))?;
        if backend == Backend::Postgres {
            // The container's PostgreSQL (the rootfs has it, not started at boot).
            ct.sh_ok(&format!(
                "systemctl start postgresql && \
                 runuser -u postgres -- psql -q -c \"CREATE USER stalwart PASSWORD '{PG_SECRET}'\" && \
                 runuser -u postgres -- psql -q -c \"CREATE DATABASE stalwart OWNER stalwart\""
            ))?;
        }
        if backend == Backend::MariaDb {
            ensure!(
                release.is_016(),
                "{}: the 0.15 builds have no MySQL store",
                release.version
            );
            ct.sh_ok(&format!(
                "systemctl start mariadb && \
                 mariadb -e \"CREATE USER stalwart@'127.0.0.1' IDENTIFIED BY '{MARIADB_SECRET}'; \
                 CREATE DATABASE stalwart; GRANT ALL ON stalwart.* TO stalwart@'127.0.0.1'\""
            ))?;
        }
        if release.is_016() {
            s.install_016(ct)?;
        } else {
            s.install_015(ct)?;
        }
        ct.exec_ok(&["systemctl", "daemon-reload"])?;
        ct.exec_ok(&["systemctl", "enable", "--quiet", "stalwart.service"])?;
        ct.exec_ok(&["systemctl", "start", "stalwart.service"])?;
        s.wait_ready(ct)?;
        if release.is_016() {
            ct.in_netns(|| s.jmap().disable_pyzor())?;
        } else {
            ct.in_netns(|| s.rest().reload())?;
        }
        Ok(s)
    }

    /// Installs a 0.15 `release` as upstream's install.sh does, on upstream's DEFAULT
    /// configuration: the service user, PREFIX/bin, then `stalwart --init /opt/stalwart` (its own
    /// config.toml: RocksDB, the ten default listeners on `[::]`, the tracer, no
    /// `server.hostname`; the fallback admin's password from `STALWART_ADMIN_PASSWORD`, which
    /// `--init` reads instead of making one up), `chown -R` to the service user, the unit,
    /// enable, start. Nothing of the config is changed: the offline quirks of `install` are
    /// not needed here (measured with the real 0.15.5: ready in 2 s, mail delivered, the spam
    /// filter's and web admin's downloads fail without holding anything up).
    pub fn install_init(ct: &Container, release: &RealRelease) -> Result<RealServer> {
        if release.is_016() || !release.rocksdb {
            bail!(
                "install_init needs a 0.15 release with RocksDB (--init writes a RocksDB store), not {}",
                release.version
            );
        }
        let s = RealServer {
            release: release.clone(),
            backend: Backend::RocksDb,
        };
        ct.sh_ok(
            "id -u stalwart >/dev/null 2>&1 || useradd stalwart -s /usr/sbin/nologin -M -r -U",
        )?;
        ct.sh_ok(&format!(
            "mkdir -p /opt/stalwart/bin && cp {} /opt/stalwart/bin/stalwart && chmod 0755 /opt/stalwart/bin/stalwart && \
             STALWART_ADMIN_PASSWORD='{ADMIN_SECRET}' /opt/stalwart/bin/stalwart --init /opt/stalwart && \
             chown -R stalwart:stalwart /opt/stalwart",
            release.in_container()
        ))?;
        ct.write_file(
            "/etc/systemd/system/stalwart.service",
            crate::stalwart::UNIT_FILE,
        )?;
        ct.exec_ok(&["systemctl", "daemon-reload"])?;
        ct.exec_ok(&["systemctl", "enable", "--quiet", "stalwart.service"])?;
        ct.exec_ok(&["systemctl", "start", "stalwart.service"])?;
        s.wait_ready(ct)?;
        Ok(s)
    }

    fn install_015(&self, ct: &Container) -> Result<()> {
        let pg = format!(
            "[store.pg]\ntype = \"postgresql\"\nhost = \"127.0.0.1\"\nport = 5432\ndatabase = \"stalwart\"\nuser = \"stalwart\"\npassword = \"{PG_SECRET}\"\n"
        );
        let store = match self.backend {
            Backend::Sqlite => "[store.sqlite]\ntype = \"sqlite\"\npath = \"/opt/stalwart/data/index.sqlite3\"\n",
            Backend::RocksDb => "[store.rocksdb]\ntype = \"rocksdb\"\npath = \"/opt/stalwart/data\"\ncompression = \"lz4\"\n",
            Backend::Postgres => pg.as_str(),
            Backend::MariaDb => bail!("the 0.15 builds have no MySQL store"),
        };
        let id = match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::RocksDb => "rocksdb",
            Backend::Postgres => "pg",
            Backend::MariaDb => "mysql",
        };
        let config = format!(
            r#"[server]
hostname = "mx.{DOMAIN}"

[server.listener.smtp]
bind = "127.0.0.1:25"
protocol = "smtp"

[server.listener.submission]
bind = "127.0.0.1:587"
protocol = "smtp"

[server.listener.imap]
bind = "127.0.0.1:143"
protocol = "imap"

[server.listener.pop3]
bind = "127.0.0.1:110"
protocol = "pop3"

[server.listener.http]
bind = "127.0.0.1:8080"
protocol = "http"

[storage]
data = "{id}"
fts = "{id}"
blob = "{id}"
lookup = "{id}"
directory = "internal"

{store}
[directory.internal]
type = "internal"
store = "{id}"

[tracer.log]
type = "log"
level = "info"
path = "/opt/stalwart/logs"
prefix = "stalwart.log"
rotate = "daily"
ansi = false
enable = true

[authentication.fallback-admin]
user = "{ADMIN}"
secret = "{ADMIN_SECRET}"

[webadmin]
resource = "file:///opt/stalwart/webadmin.zip"

[spam-filter]
resource = "file:///opt/stalwart/etc/spam-filter.toml"

[spam-filter.pyzor]
enable = false

[queue.limiter.inbound.ip]
enable = false

[queue.limiter.inbound.sender]
enable = false
"#
        );
        ct.write_file("/opt/stalwart/etc/config.toml", config)?;
        ct.write_file(
            "/opt/stalwart/etc/spam-filter.toml",
            "[version]\nspam-filter = \"2.0.99\"\nserver = \"0.15.0\"\n",
        )?;
        ct.write_file(
            "/etc/systemd/system/stalwart.service",
            crate::stalwart::UNIT_FILE,
        )?;
        // install.sh 0.15: all of /opt/stalwart is the service user's.
        ct.exec_ok(&["chown", "-R", "stalwart:stalwart", "/opt/stalwart"])?;
        Ok(())
    }

    fn install_016(&self, ct: &Container) -> Result<()> {
        let pg = format!(
            r#"{{"@type":"PostgreSql","host":"127.0.0.1","port":5432,"database":"stalwart","authUsername":"stalwart","authSecret":{{"@type":"Value","secret":"{PG_SECRET}"}}}}"#
        );
        let maria = format!(
            r#"{{"@type":"MySql","host":"127.0.0.1","port":3306,"database":"stalwart","authUsername":"stalwart","authSecret":{{"@type":"Value","secret":"{MARIADB_SECRET}"}}}}"#
        );
        let store = match self.backend {
            Backend::Sqlite => r#"{"@type":"Sqlite","path":"/opt/stalwart/data/stalwart.db"}"#,
            Backend::RocksDb => r#"{"@type":"RocksDb","path":"/opt/stalwart/data"}"#,
            Backend::Postgres => pg.as_str(),
            Backend::MariaDb => maria.as_str(),
        };
        ct.write_file("/opt/stalwart/etc/config.json", store)?;
        ct.write_file(
            "/opt/stalwart/etc/stalwart.env",
            format!(
                "# Environment variables for the Stalwart service (install.sh's template, with the\n\
                 # administrator pinned as it suggests).\n\
                 #STALWART_HOSTNAME=mail.example.com\n\
                 #STALWART_RECOVERY_MODE=true\n\
                 STALWART_RECOVERY_ADMIN={ADMIN}:{ADMIN_SECRET}\n"
            ),
        )?;
        ct.write_file("/etc/systemd/system/stalwart.service", UNIT_FILE_016)?;
        // install.sh 0.16: conf, log and data dirs the service user's (0750), the env file
        // root:stalwart 0640, bin/ root's.
        ct.sh_ok(
            "chown stalwart:stalwart /opt/stalwart/etc /opt/stalwart/logs /opt/stalwart/data /opt/stalwart/etc/config.json && \
             chmod 0750 /opt/stalwart/etc /opt/stalwart/logs /opt/stalwart/data && \
             chown root:stalwart /opt/stalwart/etc/stalwart.env && chmod 0640 /opt/stalwart/etc/stalwart.env",
        )?;
        Ok(())
    }

    /// Is the running generation >= 0.16 (after a crossing, the installed release is not).
    pub fn is_016(&self) -> bool {
        self.release.is_016()
    }

    pub fn wait_ready(&self, ct: &Container) -> Result<Duration> {
        ct.in_netns(|| mail::wait_ready(HTTP, Duration::from_secs(90)))
            .with_context(|| {
                format!(
                    "the real Stalwart {} in {} did not become ready; journal:\n{}",
                    self.release.version,
                    ct.name(),
                    ct.journal("stalwart.service")
                )
            })
    }

    pub fn rest(&self) -> Rest015 {
        Rest015::new(HTTP, ADMIN, ADMIN_SECRET)
    }
    pub fn jmap(&self) -> Jmap016 {
        Jmap016::new(HTTP, ADMIN, ADMIN_SECRET)
    }

    /// The fixture on `generation016`'s API: the domain, alice (with an alias), bob.
    pub fn populate(ct: &Container, generation016: bool) -> Result<()> {
        Self::populate_as(ct, generation016, ADMIN, ADMIN_SECRET)
    }

    /// `populate` with another administrator (a package's generated one).
    pub fn populate_as(
        ct: &Container,
        generation016: bool,
        admin: &str,
        secret: &str,
    ) -> Result<()> {
        let (a, b) = (alice(), bob());
        ct.in_netns(|| -> Result<()> {
            if generation016 {
                let j = Jmap016::new(HTTP, admin, secret);
                let d = j.domain(DOMAIN)?;
                j.user(&a.local, &d, &a.password, &["alice.smith"], false)?;
                j.user(&b.local, &d, &b.password, &[], false)?;
            } else {
                let r = Rest015::new(HTTP, admin, secret);
                r.domain(DOMAIN)?;
                r.user(
                    &a.local,
                    &a.password,
                    &[&a.address(), &format!("alice.smith@{DOMAIN}")],
                    &[],
                )?;
                r.user(&b.local, &b.password, &[&b.address()], &[])?;
            }
            Ok(())
        })
    }

    /// Delivers a message with `subject` to `to` over SMTP and waits until they see it.
    pub fn deliver(ct: &Container, generation016: bool, to: &Account, subject: &str) -> Result<()> {
        ct.in_netns(|| -> Result<()> {
            mail::smtp_send(
                SMTP,
                "sender@external.test",
                &[&to.address()],
                subject,
                "Hello.\n",
            )?;
            mail::wait_for_mail(HTTP, &to.login(generation016), &to.password, subject)
        })
    }

    /// `who` logs in with their password and sees every one of `subjects`.
    pub fn sees(
        ct: &Container,
        generation016: bool,
        who: &Account,
        subjects: &[&str],
    ) -> Result<()> {
        let seen =
            ct.in_netns(|| mail::jmap_subjects(HTTP, &who.login(generation016), &who.password))?;
        for s in subjects {
            if !seen.iter().any(|x| x == s) {
                bail!("{} does not see {s:?} (sees {seen:?})", who.address());
            }
        }
        Ok(())
    }

    /// sha256 of the executable the unit's main process runs (/proc/PID/exe), i.e. what runs,
    /// not what the file on disk is.
    pub fn running_sha256(ct: &Container) -> Result<String> {
        let pid = ct.exec_ok(&["systemctl", "show", "-P", "MainPID", "stalwart.service"])?;
        let pid = pid.trim();
        if pid == "0" || pid.is_empty() {
            bail!("stalwart.service has no main process");
        }
        let out = ct.exec_ok(&["sha256sum", &format!("/proc/{pid}/exe")])?;
        Ok(out
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    }
}

/// The listeners upstream's `--init` config declares (0.15.5 boot.rs, QUICKSTART_CONFIG):
/// port, protocol, implicit TLS, listener id.
pub const INIT_LISTENERS: [(u16, &str, bool, &str); 10] = [
    (25, "smtp", false, "smtp"),
    (587, "smtp", false, "submission"),
    (465, "smtp", true, "submissions"),
    (143, "imap", false, "imap"),
    (993, "imap", true, "imaptls"),
    (110, "pop3", false, "pop3"),
    (995, "pop3", true, "pop3s"),
    (4190, "managesieve", false, "sieve"),
    (443, "http", true, "https"),
    (8080, "http", false, "http"),
];

/// Every listener of `--init`'s config answers on loopback with its protocol's greeting (after
/// a TLS handshake where it is implicit TLS); `when` names the moment in the message. SMTP
/// drops a connection past upstream's default inbound limit (`queue.limiter.inbound.ip`: 5
/// connections a second per IP, checked at the connect, measured: closed right after the TLS
/// handshake), which the deliveries before and the three SMTP ports reach: each port gets a
/// few tries a second apart.
#[track_caller]
pub fn every_init_listener_greets(ct: &Container, when: &str) {
    for (port, proto, tls, id) in INIT_LISTENERS {
        let addr = format!("127.0.0.1:{port}");
        let mut tries = 0;
        let line = loop {
            tries += 1;
            match ct.in_netns(|| crate::mail::first_line(&addr, proto, tls)) {
                Ok(l) => break l,
                Err(_) if tries < 5 => std::thread::sleep(std::time::Duration::from_secs(1)),
                Err(e) => panic!("{when}: listener {id} ({addr}) does not answer: {e:#}"),
            }
        };
        assert!(
            crate::mail::greets_as(proto, &line),
            "{when}: listener {id} ({addr}, {proto}, TLS {tls}) answers {line:?}"
        );
    }
}

/// A 0.16 answers in normal mode: the anonymous JMAP session names an absolute API URL
/// (recovery and bootstrap mode a relative one; measured with the real 0.16.17/0.16.18).
#[track_caller]
pub fn assert_normal_mode(ct: &Container) {
    let (status, session) = ct
        .in_netns(|| Ok::<_, anyhow::Error>(mail::http_get(&format!("{HTTP}/jmap/session"), None)))
        .expect("the anonymous JMAP session");
    assert_eq!(status, 200, "{session}");
    let json: serde_json::Value = serde_json::from_str(&session)
        .unwrap_or_else(|e| panic!("the JMAP session is not JSON ({e}): {session}"));
    assert!(
        json["apiUrl"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http"),
        "not in normal mode: {session}"
    );
}
