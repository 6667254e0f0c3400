//! Refresh the web admin after an upgrade (upstream's manual step "refresh the web admin").
//!
//! <= 0.15: `GET /api/update/webadmin` (permission WebadminUpdate): 200 `{"data":null}`, 401/403,
//! 500 problem+json on a download failure. >= 0.16: JMAP `x:Action/set` creating
//! `{"@type":"UpdateApps"}`. Upstream waits up to 60 s for the bundle download. A failure here is
//! reported, never rolled back: the server itself is healthy.

use crate::config::Settings;
use crate::os::tls;
use crate::server::serverconfig::ConfigFormat;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WebadminError {
    #[error("no credentials for the web admin refresh: set [webadmin] credentials_file in /etc/stalwart-upgrade/config.toml to a root-only file holding `user:password` (or `api_<key>`), or (0.16) STALWART_RECOVERY_ADMIN=user:password in the server's stalwart.env, then run `stalwart-upgrade webadmin refresh`")]
    NoCredentials,
    #[error("refusing credentials file {path}: mode {mode:04o} lets others read it; run `chmod 0600 {path}` (owner root)")]
    InsecureCredentials { path: PathBuf, mode: u32 },
    #[error("cannot read credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing plain HTTP to {url}: only loopback may be reached without TLS; use https:// (and [webadmin] ca_file for a self-signed certificate)")]
    PlainHttp { url: String },
    #[error("CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("the server refused the credentials for {url} (HTTP {status}); check the user and password in the credentials file")]
    Unauthorized { url: String, status: u16 },
    #[error("the account lacks the permission to update the web admin at {url} (forbidden); use an admin account")]
    Forbidden { url: String },
    #[error("the server could not update the web admin ({url}: HTTP {status}: {detail}); it keeps the old bundle; retry with `stalwart-upgrade webadmin refresh`")]
    Server {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("web admin refresh at {url} failed: {message}; retry with `stalwart-upgrade webadmin refresh`")]
    Transport { url: String, message: String },
    #[error("after the web admin refresh {url} answers HTTP {status}: the server reported success but could not fetch or unpack the bundle, and has dropped the old one; check the resourceUrl of its Application objects and the server's log, then run `stalwart-upgrade webadmin refresh`")]
    NotServed { url: String, status: u16 },
    #[error("the answer of {url} is larger than {limit} bytes, more than the management API ever sends: it was not read further. Check that {url} is the Stalwart server's management API")]
    TooLarge { url: String, limit: u64 },
    #[error("after the web admin refresh {url} does not serve the packaged web UI {bundle} (HTTP {status}{what}): the server did not take the bundle its package carries; check the server's log for `resource.` events, then run `stalwart-upgrade webadmin refresh`")]
    NotTheBundle {
        url: String,
        bundle: PathBuf,
        status: u16,
        what: String,
    },
    #[error("the server did not point its web UI at {bundle} ({url}: {detail}); run `stalwart-upgrade webadmin refresh` once it is healthy")]
    Application {
        url: String,
        bundle: PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Bundle(#[from] crate::server::webui::WebuiError),
    #[error("the credentials were not sent to {url}: no process of {unit} listens there (the address comes from the server's config, which its user can change); if the management API is elsewhere, set [webadmin] url in /etc/stalwart-upgrade/config.toml, then run `stalwart-upgrade webadmin refresh`")]
    NotTheServer { url: String, unit: String },
}

/// Where the management API is, and why it may be given the credentials.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Set by root in the helper's config (`[webadmin] url`, else `[health] url`).
    Configured(String),
    /// The server's own listener, from its config or upstream's default: trusted only when a
    /// process of `unit` (`pids`, its cgroup) holds the socket listening there.
    Server {
        base: String,
        unit: String,
        pids: Vec<u32>,
    },
}

impl Endpoint {
    /// The endpoint for a server with config `cfg`; `pids` are the unit's processes.
    pub fn of(
        settings: &Settings,
        cfg: Option<&crate::server::serverconfig::ServerConfig>,
        pids: Vec<u32>,
    ) -> Endpoint {
        if let Some(u) = settings
            .webadmin
            .url
            .as_ref()
            .or(settings.health.url.as_ref())
        {
            return Endpoint::Configured(u.trim_end_matches('/').to_string());
        }
        Endpoint::Server {
            base: crate::server::health::base_url(settings, cfg),
            unit: settings.unit.clone(),
            pids,
        }
    }

    pub fn base(&self) -> &str {
        match self {
            Endpoint::Configured(b) | Endpoint::Server { base: b, .. } => b,
        }
    }

    /// Refuses a server endpoint whose socket no process of the unit holds.
    fn check(&self) -> Result<(), WebadminError> {
        let Endpoint::Server { base, unit, pids } = self else {
            return Ok(());
        };
        let not_ours = || WebadminError::NotTheServer {
            url: base.clone(),
            unit: unit.clone(),
        };
        let hostport = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .unwrap_or("");
        let addr: std::net::SocketAddr = hostport.parse().map_err(|_| not_ours())?;
        if !addr.ip().is_loopback() {
            return Err(not_ours());
        }
        let inodes = crate::server::listener::listening_inodes(addr);
        if inodes.is_empty() || !crate::server::listener::held_by(&inodes, pids) {
            return Err(not_ours());
        }
        Ok(())
    }
}

enum Auth {
    Basic(String),
    Bearer(String),
}

fn read_credentials(path: &Path) -> Result<Auth, WebadminError> {
    let md = std::fs::metadata(path).map_err(|source| WebadminError::Credentials {
        path: path.to_owned(),
        source,
    })?;
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 || md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(WebadminError::InsecureCredentials {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| WebadminError::Credentials {
        path: path.to_owned(),
        source,
    })?;
    let t = text.trim();
    Ok(if t.starts_with("api_") {
        Auth::Bearer(t.to_string())
    } else {
        use base64::Engine;
        Auth::Basic(base64::engine::general_purpose::STANDARD.encode(t))
    })
}

/// The client: the CA file when one is configured; the server's own certificate on loopback
/// (see `tls`); the system's roots otherwise.
fn agent(settings: &Settings, base: &str) -> Result<ureq::Agent, WebadminError> {
    let mut b = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(settings.webadmin.timeout_secs))
        .redirects(0);
    if let Some(ca) = &settings.webadmin.ca_file {
        let bad = |message: String| WebadminError::CaFile {
            path: ca.clone(),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        b = b.tls_config(tls::roots_config(roots).map_err(|e| bad(e.to_string()))?);
    } else if base.starts_with("https://") && tls::is_loopback(base) {
        let cfg = tls::loopback_config().map_err(|e| WebadminError::Transport {
            url: base.into(),
            message: e.to_string(),
        })?;
        b = b.tls_config(cfg);
    }
    Ok(b.build())
}

/// The credentials: `[webadmin] credentials_file`, else the file a 0.15 first install of the
/// package keeps (`credentials::CREDENTIALS_FILE`), else 0.16's `STALWART_RECOVERY_ADMIN` from
/// the server's environment (what a 0.16 first install pins).
fn credentials(
    settings: &Settings,
    recovery_admin: Option<(String, String)>,
) -> Result<Auth, WebadminError> {
    if let Some(f) = &settings.webadmin.credentials_file {
        return read_credentials(f);
    }
    let kept = Path::new(crate::server::credentials::CREDENTIALS_FILE);
    if kept.exists() {
        return read_credentials(kept);
    }
    match recovery_admin {
        Some((u, p)) => {
            use base64::Engine;
            Ok(Auth::Basic(
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")),
            ))
        }
        None => Err(WebadminError::NoCredentials),
    }
}

/// Who the helper logs in as.
pub enum Login {
    /// The admin's credentials: the credentials file, else 0.16's `STALWART_RECOVERY_ADMIN`
    /// from the server's environment (given here).
    Configured(Option<(String, String)>),
    /// A login the helper made itself (the one-time recovery admin of the 0.16 crossing).
    Basic(String, String),
}

/// An authenticated client of the server's management API at a checked endpoint.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    header: String,
}

impl Api {
    pub fn connect(
        settings: &Settings,
        endpoint: &Endpoint,
        login: Login,
    ) -> Result<Api, WebadminError> {
        let base = endpoint.base().to_string();
        if base.starts_with("http://") && !tls::is_loopback(&base) {
            return Err(WebadminError::PlainHttp { url: base });
        }
        endpoint.check()?;
        let auth = match login {
            Login::Configured(recovery_admin) => credentials(settings, recovery_admin)?,
            Login::Basic(u, p) => {
                use base64::Engine;
                Auth::Basic(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
            }
        };
        let header = match &auth {
            Auth::Basic(b) => format!("Basic {b}"),
            Auth::Bearer(t) => format!("Bearer {t}"),
        };
        let agent = agent(settings, &base)?;
        Ok(Api {
            agent,
            base,
            header,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET base+path` as JSON: 0.15's REST answers `{"data": ...}` (returned), or `{"error":
    /// ...}` with HTTP 200 (measured), an error here.
    pub fn rest_get(&self, path: &str) -> Result<serde_json::Value, WebadminError> {
        self.rest_get_sized(path).map(|(v, _)| v)
    }

    /// [`Api::rest_get`], with the size of the answer in bytes (what a caller reading many
    /// pages adds up).
    pub fn rest_get_sized(&self, path: &str) -> Result<(serde_json::Value, u64), WebadminError> {
        let url = format!("{}{path}", self.base);
        let (mut v, size) = self.send_sized(
            &url,
            self.agent
                .get(&url)
                .set("Authorization", &self.header)
                .call(),
        )?;
        match v.get_mut("data") {
            Some(d) => Ok((d.take(), size)),
            None => Err(WebadminError::Server {
                url,
                status: 200,
                detail: excerpt(&v.to_string()),
            }),
        }
    }

    /// One JMAP request with upstream's registry capability: `calls` are the method calls,
    /// `created_ids` the creation ids of earlier requests (RFC 8620 3.3). The whole answer.
    pub fn jmap(
        &self,
        calls: serde_json::Value,
        created_ids: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, WebadminError> {
        let url = format!("{}/jmap", self.base);
        // The registry's methods (x:...) need upstream's own capability (measured with the
        // real 0.16: core alone is refused).
        let mut body = serde_json::json!({
            "using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
            "methodCalls": calls,
        });
        if !created_ids.is_empty() {
            body["createdIds"] = serde_json::Value::Object(created_ids.clone());
        }
        let r = self
            .agent
            .post(&url)
            .set("Authorization", &self.header)
            .send_json(body);
        self.send(&url, r)
    }

    fn send(
        &self,
        url: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<serde_json::Value, WebadminError> {
        self.send_sized(url, r).map(|(v, _)| v)
    }

    fn send_sized(
        &self,
        url: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<(serde_json::Value, u64), WebadminError> {
        match r {
            Ok(resp) => read_json(url, resp.into_reader(), MAX_ANSWER),
            Err(ureq::Error::Status(status, resp)) => Err(status_error(url, status, resp)),
            Err(e) => Err(WebadminError::Transport {
                url: url.into(),
                message: e.to_string(),
            }),
        }
    }
}

/// Refreshes the web admin of the server `settings.unit` runs with `cfg`: at its own endpoint,
/// as the admin of the credentials file or of its environment (0.16's
/// `STALWART_RECOVERY_ADMIN`). Returns where.
pub fn refresh_unit(
    settings: &Settings,
    sys: &crate::os::systemd::Systemd,
    cfg: &crate::server::serverconfig::ServerConfig,
) -> Result<String, WebadminError> {
    let endpoint = Endpoint::of(settings, Some(cfg), sys.unit_pids(&settings.unit));
    let admin = crate::server::serverenv::ServerEnv::of(sys, &settings.unit)
        .ok()
        .and_then(|e| e.recovery_admin());
    refresh(settings, cfg.format, &endpoint, admin)?;
    Ok(endpoint.base().to_string())
}

/// Refreshes the web admin of a server of the given format at `endpoint`. `recovery_admin`
/// is 0.16's `STALWART_RECOVERY_ADMIN` from the server's environment, used when no credentials
/// file is there.
pub fn refresh(
    settings: &Settings,
    format: ConfigFormat,
    endpoint: &Endpoint,
    recovery_admin: Option<(String, String)>,
) -> Result<(), WebadminError> {
    let api = Api::connect(settings, endpoint, Login::Configured(recovery_admin))?;
    // >= 0.16 with the package's bundle: the Application reads it, and never upstream's latest.
    let bundle = match format {
        ConfigFormat::Json => crate::server::webui::bundled(&settings.bin_dir()),
        ConfigFormat::Toml => None,
    };
    match (&bundle, format) {
        (Some(b), _) => pin_bundle(&api, b)?,
        (None, ConfigFormat::Json) => unpin_bundle(&api, &settings.bin_dir())?,
        (None, ConfigFormat::Toml) => {}
    }
    let (agent, base, header) = (&api.agent, api.base.clone(), &api.header);
    let (url, result) = match format {
        ConfigFormat::Toml => {
            let url = format!("{base}/api/update/webadmin");
            let r = agent.get(&url).set("Authorization", header).call();
            (url, r)
        }
        ConfigFormat::Json => {
            let url = format!("{base}/jmap");
            // The registry's methods (x:...) need upstream's own capability (measured with the
            // real 0.16: core alone is refused).
            let body = serde_json::json!({
                "using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
                "methodCalls": [["x:Action/set", {"create": {"u": {"@type": "UpdateApps"}}}, "0"]]
            });
            let r = agent
                .post(&url)
                .set("Authorization", header)
                .send_json(body);
            (url, r)
        }
    };
    match result {
        Ok(resp) => {
            check_body(&url, format, resp)?;
            match (&bundle, format) {
                (Some(b), _) => check_bundle_served(&api, b),
                (None, ConfigFormat::Json) => check_served(agent, &base),
                (None, ConfigFormat::Toml) => Ok(()),
            }
        }
        Err(ureq::Error::Status(status, resp)) => Err(status_error(&url, status, resp)),
        Err(e) => Err(WebadminError::Transport {
            url,
            message: e.to_string(),
        }),
    }
}

/// Points the web admin's Application at `bundle` and turns its automatic update off (module
/// `webui`), unless it already is.
fn pin_bundle(api: &Api, bundle: &Path) -> Result<(), WebadminError> {
    let url = crate::server::webui::resource_url(bundle);
    let fail = application_error(api, bundle);
    let got = applications(api)?;
    let list = got["methodResponses"][0][1]["list"]
        .as_array()
        .cloned()
        .ok_or_else(|| fail(format!("no list in {}", excerpt(&got.to_string()))))?;
    let (id, update) = crate::server::webui::application_update(&list, &url).ok_or_else(|| {
        fail(format!(
            "it has no Application under /admin: {}",
            excerpt(&serde_json::Value::Array(list.clone()).to_string())
        ))
    })?;
    match update {
        Some(update) => update_application(api, bundle, &id, update),
        None => Ok(()),
    }
}

/// Without a bundle in bin/ (a release packaged without one), an Application still pointed at
/// bin/'s bundle goes back to upstream's default source, or every refresh would fail on a file
/// that is gone.
fn unpin_bundle(api: &Api, bin: &Path) -> Result<(), WebadminError> {
    let bundle = bin.join(crate::server::webui::BUNDLE);
    let url = crate::server::webui::resource_url(&bundle);
    // Best effort: a server that does not list its Applications was never pinned by us.
    let Ok(got) = applications(api) else {
        return Ok(());
    };
    let list = got["methodResponses"][0][1]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match crate::server::webui::application_unpin(&list, &url) {
        Some((id, update)) => update_application(api, &bundle, &id, update),
        None => Ok(()),
    }
}

/// The server's `x:Application/get` answer (every Application).
fn applications(api: &Api) -> Result<serde_json::Value, WebadminError> {
    api.jmap(
        serde_json::json!([["x:Application/get", {"ids": null}, "g"]]),
        &serde_json::Map::new(),
    )
}

/// `x:Application/set` of `update` on Application `id`, checked to be reported updated.
fn update_application(
    api: &Api,
    bundle: &Path,
    id: &str,
    update: serde_json::Value,
) -> Result<(), WebadminError> {
    let set = api.jmap(
        serde_json::json!([["x:Application/set", {"update": {id: update}}, "s"]]),
        &serde_json::Map::new(),
    )?;
    if set["methodResponses"][0][1]["updated"].get(id).is_some() {
        Ok(())
    } else {
        Err(application_error(api, bundle)(excerpt(&set.to_string())))
    }
}

fn application_error<'a>(api: &'a Api, bundle: &'a Path) -> impl Fn(String) -> WebadminError + 'a {
    move |detail| WebadminError::Application {
        url: format!("{}/jmap", api.base),
        bundle: bundle.to_owned(),
        detail,
    }
}

/// UpdateApps answers success even when the fetch failed: what /admin/ serves must be the
/// bundle's own bytes (`webui::probe`).
fn check_bundle_served(api: &Api, bundle: &Path) -> Result<(), WebadminError> {
    let (path, want) = crate::server::webui::probe(bundle)?;
    let url = format!("{}{path}", api.base);
    let not = |status: u16, what: &str| WebadminError::NotTheBundle {
        url: url.clone(),
        bundle: bundle.to_owned(),
        status,
        what: what.into(),
    };
    let resp = match api.agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(not(code, "")),
        Err(e) => {
            return Err(WebadminError::Transport {
                url,
                message: e.to_string(),
            })
        }
    };
    let status = resp.status();
    let mut got = Vec::new();
    use std::io::Read;
    resp.into_reader()
        .take(want.len() as u64 + 1)
        .read_to_end(&mut got)
        .map_err(|e| WebadminError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
    if got == want {
        Ok(())
    } else {
        Err(not(status, ", other content"))
    }
}

/// 0.16's UpdateApps answers success even when the bundle could not be fetched, after it
/// deleted the cached one (measured): only `GET /admin/` tells whether the web admin is there.
fn check_served(agent: &ureq::Agent, base: &str) -> Result<(), WebadminError> {
    let url = format!("{base}/admin/");
    let status = match agent.get(&url).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => {
            return Err(WebadminError::Transport {
                url,
                message: e.to_string(),
            })
        }
    };
    if status == 200 {
        Ok(())
    } else {
        Err(WebadminError::NotServed { url, status })
    }
}

/// The largest answer read from the management API: a page of 200 principals or settings is
/// far below it, and the server at the other end runs as the service user, which must not make
/// root read (and hold in memory) whatever it sends.
pub const MAX_ANSWER: u64 = 64 << 20;

/// Reads a JSON answer of at most `limit` bytes from `body`; its size too.
fn read_json(
    url: &str,
    body: impl std::io::Read,
    limit: u64,
) -> Result<(serde_json::Value, u64), WebadminError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    body.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| WebadminError::Transport {
            url: url.into(),
            message: format!("unreadable answer: {e}"),
        })?;
    if bytes.len() as u64 > limit {
        return Err(WebadminError::TooLarge {
            url: url.into(),
            limit,
        });
    }
    let v = serde_json::from_slice(&bytes).map_err(|e| WebadminError::Transport {
        url: url.into(),
        message: format!("unreadable answer: {e}"),
    })?;
    Ok((v, bytes.len() as u64))
}

/// The start of a text the server sent, for a message (an error answer can be of any size).
fn excerpt(text: &str) -> String {
    const MAX: usize = 512;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn check_body(url: &str, format: ConfigFormat, resp: ureq::Response) -> Result<(), WebadminError> {
    let (v, _) = read_json(url, resp.into_reader(), MAX_ANSWER)?;
    // JMAP reports errors per method: a refused UpdateApps is a 200 whose `notCreated` says why.
    let not_created = &v["methodResponses"][0][1]["notCreated"];
    if format == ConfigFormat::Json && not_created.is_object() {
        let why = not_created
            .as_object()
            .and_then(|m| m.values().next())
            .cloned()
            .unwrap_or_default();
        if why["type"] == "forbidden" {
            return Err(WebadminError::Forbidden { url: url.into() });
        }
        return Err(WebadminError::Server {
            url: url.into(),
            status: 200,
            detail: excerpt(&why.to_string()),
        });
    }
    let ok = match format {
        ConfigFormat::Toml => v.get("data").is_some(),
        ConfigFormat::Json => v["methodResponses"][0][1]["created"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
    };
    if ok {
        Ok(())
    } else {
        Err(WebadminError::Server {
            url: url.into(),
            status: 200,
            detail: excerpt(&v.to_string()),
        })
    }
}

fn status_error(url: &str, status: u16, resp: ureq::Response) -> WebadminError {
    match status {
        401 => WebadminError::Unauthorized {
            url: url.into(),
            status,
        },
        403 => WebadminError::Forbidden { url: url.into() },
        _ => {
            // Only the start of an error answer is read: it gives a message, nothing more.
            let detail = read_json(url, resp.into_reader(), 64 << 10)
                .ok()
                .and_then(|(v, _)| {
                    v.get("detail")
                        .or_else(|| v.get("title"))
                        .and_then(|d| d.as_str().map(excerpt))
                })
                .unwrap_or_else(|| "no detail".into());
            WebadminError::Server {
                url: url.into(),
                status,
                detail,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_readable_credentials_refused_with_mode_advice() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("cred");
        std::fs::write(&p, "admin:secret").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_credentials(&p).err().unwrap().to_string();
        assert!(e.contains("chmod 0600"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_credentials(&p), Ok(Auth::Basic(_))));
    }

    /// Finding 10a: an answer is read up to `MAX_ANSWER` bytes, then refused with its URL; a
    /// server that sends forever (here: a JSON array that never ends) does not fill memory.
    #[test]
    fn an_endless_answer_is_cut_at_the_limit_and_named() {
        use std::io::{BufRead, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (sock, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(sock.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut w = std::io::BufWriter::with_capacity(1 << 16, sock);
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[");
            let chunk = "0,".repeat(1 << 15);
            let mut sent = 0u64;
            while w.write_all(chunk.as_bytes()).is_ok() {
                sent += chunk.len() as u64;
            }
            sent
        });
        let s = Settings::default();
        let api = Api::connect(
            &s,
            &Endpoint::Configured(base),
            Login::Basic("u".into(), "p".into()),
        )
        .unwrap();
        let e = api.rest_get("/api/settings/list?page=1").unwrap_err();
        assert!(
            matches!(&e, WebadminError::TooLarge { url, limit } if url.ends_with("/api/settings/list?page=1") && *limit == MAX_ANSWER),
            "{e:?}"
        );
        assert!(e.to_string().contains("/api/settings/list"), "{e}");
        drop(api);
        // The server was cut off soon after the limit, not read to its end.
        let sent = server.join().unwrap();
        assert!(
            (MAX_ANSWER..MAX_ANSWER + (64 << 20)).contains(&sent),
            "{sent}"
        );
    }

    #[test]
    fn answers_within_the_limit_are_read_and_error_details_are_short() {
        let (v, n) = read_json("u", std::io::Cursor::new(b"{\"data\":1}".to_vec()), 10).unwrap();
        assert_eq!((v["data"].as_u64(), n), (Some(1), 10));
        let e = read_json("http://x/y", std::io::Cursor::new(vec![b' '; 11]), 10).unwrap_err();
        assert!(
            matches!(e, WebadminError::TooLarge { limit: 10, .. }),
            "{e:?}"
        );
        let long = "y".repeat(10_000);
        assert!(excerpt(&long).len() < 600);
        assert_eq!(excerpt("short"), "short");
    }

    #[test]
    fn plain_http_to_a_remote_host_refused() {
        let mut s = Settings::default();
        s.webadmin.url = Some("http://mail.example.org:8080".into());
        let e = refresh(
            &s,
            ConfigFormat::Toml,
            &Endpoint::of(&s, None, vec![]),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, WebadminError::PlainHttp { .. }));
    }

    #[test]
    fn credentials_go_only_to_a_socket_of_the_servers_own_processes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let ours = Endpoint::Server {
            base: base.clone(),
            unit: "stalwart.service".into(),
            pids: vec![std::process::id()],
        };
        ours.check().unwrap();
        let theirs = Endpoint::Server {
            base,
            unit: "stalwart.service".into(),
            pids: vec![],
        };
        assert!(matches!(
            theirs.check(),
            Err(WebadminError::NotTheServer { .. })
        ));
        let nobody_there = Endpoint::Server {
            base: "http://127.0.0.1:1".into(),
            unit: "stalwart.service".into(),
            pids: vec![std::process::id()],
        };
        assert!(nobody_there.check().is_err());
    }
}
