//! Clients for a real Stalwart server, run on the host inside a container's network namespace
//! (`Container::in_netns`): SMTP delivery, mail read back over JMAP (and IMAP), and the
//! management APIs of both generations (0.15 REST under /api, 0.16 the JMAP registry).
//!
//! Shapes and behaviour measured against the real binaries (notes in the README's "The
//! real-server tier"): management errors come back as HTTP 200 with an `error` member (0.15) or
//! in `notCreated` (0.16); 0.15 logs in with the account name, 0.16 with the full address; 0.16
//! refuses weak passwords.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .redirects(0)
        .build()
}

/// GET `url`: (status, body); status 0 when nothing answered.
pub fn http_get(url: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut r = agent().get(url);
    if let Some((u, p)) = auth {
        r = r.set("Authorization", &basic(u, p));
    }
    match r.call() {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Polls `base`/healthz/ready until 200.
pub fn wait_ready(base: &str, timeout: Duration) -> Result<Duration> {
    let t = Instant::now();
    let mut last = (0, String::new());
    while t.elapsed() < timeout {
        last = http_get(&format!("{base}/healthz/ready"), None);
        if last.0 == 200 {
            return Ok(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{base}/healthz/ready not 200 within {} s (last {} {:?})",
        timeout.as_secs(),
        last.0,
        last.1
    )
}

// ------------------------------------------------------------------ SMTP

/// Delivers one message over plain SMTP (no AUTH, as from the internet) to `to` at `addr`
/// (e.g. "127.0.0.1:25"). Fails on any refused command.
pub fn smtp_send(addr: &str, from: &str, to: &[&str], subject: &str, body: &str) -> Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let reply = |r: &mut BufReader<TcpStream>| -> Result<(u16, String)> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                bail!("the SMTP server closed the connection (after {all:?})");
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, all));
            }
        }
    };
    let expect = |r: &mut BufReader<TcpStream>, want: u16, what: &str| -> Result<()> {
        let (code, text) = reply(r)?;
        if code != want {
            bail!("SMTP {what}: expected {want}, got {text:?}");
        }
        Ok(())
    };
    expect(&mut r, 220, "greeting")?;
    let cmd = |w: &mut TcpStream, line: &str| -> Result<()> {
        w.write_all(format!("{line}\r\n").as_bytes())?;
        Ok(())
    };
    cmd(&mut w, "EHLO client.external.test")?;
    expect(&mut r, 250, "EHLO")?;
    cmd(&mut w, &format!("MAIL FROM:<{from}>"))?;
    expect(&mut r, 250, "MAIL FROM")?;
    for rcpt in to {
        cmd(&mut w, &format!("RCPT TO:<{rcpt}>"))?;
        expect(&mut r, 250, &format!("RCPT TO {rcpt}"))?;
    }
    cmd(&mut w, "DATA")?;
    expect(&mut r, 354, "DATA")?;
    let msg = format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@external.test>\r\n\r\n{}\r\n.\r\n",
        to.iter().map(|t| format!("<{t}>")).collect::<Vec<_>>().join(", "),
        subject.replace(' ', "-"),
        body.replace("\n.", "\n..")
    );
    w.write_all(msg.as_bytes())?;
    expect(&mut r, 250, "end of DATA")?;
    cmd(&mut w, "QUIT")?;
    let _ = reply(&mut r);
    Ok(())
}

// ------------------------------------------------------------------ IMAP

/// Logs in over plain IMAP at `addr` with AUTHENTICATE PLAIN (both generations refuse a plain
/// LOGIN on a clear-text port by default, measured) and returns how many messages INBOX holds.
pub fn imap_inbox_count(addr: &str, user: &str, pass: &str) -> Result<u64> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    imap_count_on(stream, addr, user, pass)
}

/// `imap_inbox_count` over implicit TLS (IMAPS, e.g. "127.0.0.1:993"), whatever certificate the
/// server shows (its self-signed fallback, in these tests).
pub fn imaps_inbox_count(addr: &str, user: &str, pass: &str) -> Result<u64> {
    imap_count_on(tls_connect(addr)?, addr, user, pass)
}

fn imap_count_on<S: Read + Write>(stream: S, addr: &str, user: &str, pass: &str) -> Result<u64> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("* OK") {
        bail!("IMAP greeting at {addr}: {line:?}");
    }
    // Reads up to the tagged answer; the untagged lines before it.
    let tagged = |r: &mut BufReader<S>, tag: &str| -> Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            if r.read_line(&mut l)? == 0 {
                bail!("the IMAP server closed the connection (after {lines:?})");
            }
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                if !rest.starts_with("OK") {
                    bail!("IMAP {tag}: {rest:?}");
                }
                return Ok(lines);
            }
            lines.push(l);
        }
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    let send = |r: &mut BufReader<S>, line: &str| -> Result<()> {
        r.get_mut().write_all(line.as_bytes())?;
        r.get_mut().flush()?;
        Ok(())
    };
    send(&mut r, &format!("a AUTHENTICATE PLAIN {token}\r\n"))?;
    tagged(&mut r, "a").with_context(|| format!("IMAP login of {user}"))?;
    send(&mut r, "b SELECT INBOX\r\n")?;
    let lines = tagged(&mut r, "b")?;
    let _ = send(&mut r, "c LOGOUT\r\n");
    lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("* ")
                .and_then(|x| x.trim_end().strip_suffix(" EXISTS"))
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| anyhow!("no EXISTS in the SELECT answer: {lines:?}"))
}

// ------------------------------------------------------------------ any listener

/// A TLS connection to `addr` that accepts any certificate (the servers under test show their
/// self-signed fallback; what is tested is that TLS and the protocol behind it answer).
pub fn tls_connect(addr: &str) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name)?;
    let tcp = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .with_context(|| format!("TLS handshake with {addr}"))?;
    }
    Ok(s)
}

#[derive(Debug)]
struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a client of `protocol` ("smtp", "imap", "pop3", "managesieve", "http") meets at
/// `addr`, over implicit TLS when `tls`: the greeting line, or for HTTP the status line of
/// `GET /healthz/live`. Err when the connection, the handshake or the first line fails.
pub fn first_line(addr: &str, protocol: &str, tls: bool) -> Result<String> {
    fn line_of<S: Read + Write>(mut s: S, http: bool) -> Result<String> {
        if http {
            s.write_all(
                b"GET /healthz/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )?;
            s.flush()?;
        }
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
    let http = protocol == "http";
    if tls {
        line_of(tls_connect(addr)?, http)
    } else {
        let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        line_of(s, http)
    }
}

/// Does `line` (from `first_line`) greet as `protocol` does?
pub fn greets_as(protocol: &str, line: &str) -> bool {
    match protocol {
        "smtp" | "lmtp" => line.starts_with("220 "),
        "imap" => line.starts_with("* OK"),
        "pop3" => line.starts_with("+OK"),
        "managesieve" => line.starts_with("\"IMPLEMENTATION\""),
        "http" => line.starts_with("HTTP/1.1 200"),
        _ => false,
    }
}

// ------------------------------------------------------------------ JMAP mail

/// The subjects of the mail `user` sees (Email/query over all their mail, newest first), or an
/// error carrying the HTTP status (401: the login failed).
pub fn jmap_subjects(base: &str, user: &str, pass: &str) -> Result<Vec<String>> {
    let session: Value = agent()
        .get(&format!("{base}/jmap/session"))
        .set("Authorization", &basic(user, pass))
        .call()
        .map_err(|e| anyhow!("JMAP session as {user}: {e}"))?
        .into_json()?;
    let account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        .as_str()
        .ok_or_else(|| anyhow!("JMAP session of {user} has no mail account: {session}"))?
        .to_string();
    let body = json!({
        "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
        "methodCalls": [
            ["Email/query", {"accountId": account, "sort": [{"property": "receivedAt", "isAscending": false}], "limit": 200}, "q"],
            ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": ["subject"]}, "g"]
        ]
    });
    let v: Value = agent()
        .post(&format!("{base}/jmap/"))
        .set("Authorization", &basic(user, pass))
        .send_json(body)
        .map_err(|e| anyhow!("JMAP Email/query as {user}: {e}"))?
        .into_json()?;
    let list = v["methodResponses"][1][1]["list"]
        .as_array()
        .ok_or_else(|| anyhow!("unexpected Email/get answer: {v}"))?;
    Ok(list
        .iter()
        .filter_map(|m| m["subject"].as_str().map(String::from))
        .collect())
}

/// Waits until `user` sees a message with `subject` (delivery is asynchronous).
pub fn wait_for_mail(base: &str, user: &str, pass: &str, subject: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let seen = jmap_subjects(base, user, pass)?;
        if seen.iter().any(|s| s == subject) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("{user} does not see {subject:?} after 30 s (sees {seen:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------ management: 0.15 REST

/// 0.15's management API (`/api`), as an administrator.
pub struct Rest015 {
    pub base: String,
    auth: String,
}

impl Rest015 {
    pub fn new(base: &str, user: &str, pass: &str) -> Rest015 {
        Rest015 {
            base: base.to_string(),
            auth: basic(user, pass),
        }
    }

    /// The `data` of a successful answer; an `error` member (which 0.15 sends with HTTP 200)
    /// is an error.
    fn answer(&self, what: &str, r: Result<ureq::Response, ureq::Error>) -> Result<Value> {
        let v: Value = match r {
            Ok(resp) => resp.into_json()?,
            Err(ureq::Error::Status(code, resp)) => {
                bail!(
                    "{what}: HTTP {code}: {}",
                    resp.into_string().unwrap_or_default()
                )
            }
            Err(e) => bail!("{what}: {e}"),
        };
        if v.get("error").is_some() {
            bail!("{what}: {v}");
        }
        Ok(v["data"].clone())
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let r = agent()
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .call();
        self.answer(&format!("GET {path}"), r)
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        let r = agent()
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .send_json(body);
        self.answer(&format!("POST {path}"), r)
    }

    pub fn domain(&self, name: &str) -> Result<Value> {
        self.post("/api/principal", json!({"type": "domain", "name": name}))
    }

    pub fn user(
        &self,
        name: &str,
        pass: &str,
        emails: &[&str],
        member_of: &[&str],
    ) -> Result<Value> {
        self.post(
            "/api/principal",
            json!({"type": "individual", "name": name, "secrets": [pass], "emails": emails,
                   "roles": ["user"], "memberOf": member_of}),
        )
    }

    pub fn group(&self, name: &str, email: &str) -> Result<Value> {
        self.post(
            "/api/principal",
            json!({"type": "group", "name": name, "emails": [email]}),
        )
    }

    pub fn list(&self, name: &str, email: &str, members: &[&str]) -> Result<Value> {
        self.post(
            "/api/principal",
            json!({"type": "list", "name": name, "emails": [email], "members": members}),
        )
    }

    /// A DKIM key (`Ed25519` or `Rsa`) for `domain`.
    pub fn dkim(&self, algorithm: &str, domain: &str, selector: &str) -> Result<Value> {
        self.post(
            "/api/dkim",
            json!({"id": null, "algorithm": algorithm, "domain": domain, "selector": selector}),
        )
    }

    pub fn principal(&self, name: &str) -> Result<Value> {
        self.get(&format!("/api/principal/{name}"))
    }

    /// `GET /api/reload`: applies the database settings (the first start of an offline server
    /// needs one, see `real_server`).
    pub fn reload(&self) -> Result<Value> {
        self.get("/api/reload")
    }
}

// ------------------------------------------------------------------ management: 0.16 JMAP

/// 0.16's registry over JMAP, as an administrator (the recovery admin works in every mode).
pub struct Jmap016 {
    pub base: String,
    auth: String,
}

impl Jmap016 {
    pub fn new(base: &str, user: &str, pass: &str) -> Jmap016 {
        Jmap016 {
            base: base.to_string(),
            auth: basic(user, pass),
        }
    }

    /// One request; returns the methodResponses.
    pub fn call(&self, calls: Value) -> Result<Vec<Value>> {
        let body = json!({"using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"], "methodCalls": calls});
        let v: Value = match agent()
            .post(&format!("{}/jmap", self.base))
            .set("Authorization", &self.auth)
            .send_json(body)
        {
            Ok(r) => r.into_json()?,
            Err(ureq::Error::Status(code, resp)) => {
                bail!(
                    "POST /jmap: HTTP {code}: {}",
                    resp.into_string().unwrap_or_default()
                )
            }
            Err(e) => bail!("POST /jmap: {e}"),
        };
        v["methodResponses"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("no methodResponses: {v}"))
    }

    /// `x:TYPE/set` creating `objects` (creation id -> object): the created ids; any
    /// `notCreated` (or a method error) is an error naming it.
    pub fn create(&self, ty: &str, objects: Value) -> Result<serde_json::Map<String, Value>> {
        let r = self.call(json!([[format!("x:{ty}/set"), {"create": objects}, "0"]]))?;
        let ans = &r[0];
        if ans[0] == "error" {
            bail!("x:{ty}/set: {}", ans[1]);
        }
        if let Some(nc) = ans[1]["notCreated"].as_object().filter(|m| !m.is_empty()) {
            bail!("x:{ty}/set refused: {}", Value::Object(nc.clone()));
        }
        Ok(ans[1]["created"].as_object().cloned().unwrap_or_default())
    }

    fn create_one(&self, ty: &str, obj: Value) -> Result<String> {
        let c = self.create(ty, json!({"n": obj}))?;
        c["n"]["id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("x:{ty}/set created no id: {c:?}"))
    }

    pub fn update(&self, ty: &str, id: &str, patch: Value) -> Result<()> {
        let r = self.call(json!([[format!("x:{ty}/set"), {"update": {id: patch}}, "0"]]))?;
        let ans = &r[0];
        if ans[0] == "error" {
            bail!("x:{ty}/set update: {}", ans[1]);
        }
        if let Some(nu) = ans[1]["notUpdated"].as_object().filter(|m| !m.is_empty()) {
            bail!("x:{ty}/set update refused: {}", Value::Object(nu.clone()));
        }
        Ok(())
    }

    pub fn get(&self, ty: &str, ids: Value) -> Result<Vec<Value>> {
        let r = self.call(json!([[format!("x:{ty}/get"), {"ids": ids}, "0"]]))?;
        if r[0][0] == "error" {
            bail!("x:{ty}/get: {}", r[0][1]);
        }
        Ok(r[0][1]["list"].as_array().cloned().unwrap_or_default())
    }

    /// A domain with manual DKIM (no keys generated behind the test's back).
    pub fn domain(&self, name: &str) -> Result<String> {
        self.create_one(
            "Domain",
            json!({"name": name, "dkimManagement": {"@type": "Manual"}}),
        )
    }

    /// A user `local@domain` with a password and alias local parts.
    pub fn user(
        &self,
        local: &str,
        domain_id: &str,
        pass: &str,
        aliases: &[&str],
        admin: bool,
    ) -> Result<String> {
        let mut al = serde_json::Map::new();
        for (i, a) in aliases.iter().enumerate() {
            al.insert(
                i.to_string(),
                json!({"name": a, "domainId": domain_id, "enabled": true}),
            );
        }
        self.create_one(
            "Account",
            json!({"@type": "User", "name": local, "domainId": domain_id,
                   "credentials": {"0": {"@type": "Password", "secret": pass}},
                   "roles": {"@type": if admin { "Admin" } else { "User" }},
                   "aliases": al}),
        )
    }

    pub fn group(&self, local: &str, domain_id: &str) -> Result<String> {
        self.create_one(
            "Account",
            json!({"@type": "Group", "name": local, "domainId": domain_id}),
        )
    }

    pub fn add_to_group(&self, account_id: &str, group_id: &str) -> Result<()> {
        self.update(
            "Account",
            account_id,
            json!({format!("memberGroupIds/{group_id}"): true}),
        )
    }

    pub fn list(&self, local: &str, domain_id: &str, recipients: &[&str]) -> Result<String> {
        let r: serde_json::Map<String, Value> = recipients
            .iter()
            .map(|a| (a.to_string(), json!(true)))
            .collect();
        self.create_one(
            "MailingList",
            json!({"name": local, "domainId": domain_id, "recipients": r}),
        )
    }

    /// The Application objects (the web UI bundles).
    pub fn applications(&self) -> Result<Vec<Value>> {
        self.get("Application", Value::Null)
    }

    /// `x:Action` UpdateApps (what the helper's web-admin refresh sends).
    pub fn update_apps(&self) -> Result<()> {
        self.create_one("Action", json!({"@type": "UpdateApps"}))
            .map(|_| ())
    }

    /// Offline hosts: the pyzor check cannot resolve its server, and every settings reload then
    /// fails (measured); tests turn it off.
    pub fn disable_pyzor(&self) -> Result<()> {
        self.update("SpamPyzor", "singleton", json!({"enable": false}))
    }
}
