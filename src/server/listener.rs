//! Who listens on a local TCP port: the kernel's socket tables (/proc/net/tcp, tcp6) and the
//! descriptors of the server unit's processes.
//!
//! The server's listeners come from its config (0.15) or its database (0.16), both of which the
//! server's user can change. Before the helper sends the web-admin credentials to such a port it
//! checks that the socket listening there is held by a process of the server's own unit: a
//! listener the service user started elsewhere (to collect the credentials) is not. The health
//! gate asks the same of the port it probes, and records every port the unit listens on before
//! an upgrade (`Probe`): for a mail server the proof that matters is that each of them answers
//! again, with the same kind of greeting, afterwards.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Inodes of the TCP sockets in LISTEN state on `port` that a connection to `addr` reaches
/// (bound to that address, or to the wildcard of its family; IPv4 connections also reach
/// IPv6 wildcard sockets).
pub fn listening_inodes(addr: SocketAddr) -> HashSet<u64> {
    let mut out = HashSet::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(parse_listeners(&text, v6, addr));
    }
    out
}

/// Parses one /proc/net/tcp{,6} table: the inodes of LISTEN sockets a connection to `addr`
/// would reach.
fn parse_listeners(text: &str, v6: bool, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != LISTEN {
            continue;
        }
        let Some((ip_hex, port_hex)) = f[1].split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(addr.port()) {
            continue;
        }
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        let reaches = match (v6, decode_ip(ip_hex, v6)) {
            (_, None) => false,
            (false, Some(ip)) => ip.is_unspecified() || ip == addr.ip(),
            (true, Some(ip)) => {
                ip.is_unspecified()
                    || ip == addr.ip()
                    || matches!((ip, addr.ip()), (std::net::IpAddr::V6(v6ip), std::net::IpAddr::V4(v4)) if v6ip.to_ipv4_mapped() == Some(v4))
            }
        };
        if reaches {
            out.push(inode);
        }
    }
    out
}

/// The kernel prints addresses as the bytes of the in-memory value, 32-bit words in host order.
fn decode_ip(hex: &str, v6: bool) -> Option<std::net::IpAddr> {
    let words = if v6 { 4 } else { 1 };
    if hex.len() != words * 8 {
        return None;
    }
    let mut bytes = Vec::with_capacity(words * 4);
    for w in 0..words {
        let word = u32::from_str_radix(&hex[w * 8..w * 8 + 8], 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    Some(if v6 {
        let a: [u8; 16] = bytes.try_into().ok()?;
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(a))
    } else {
        let a: [u8; 4] = bytes.try_into().ok()?;
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(a))
    })
}

/// Does one of `pids` hold one of the socket `inodes` (an fd reading `socket:[INODE]`)?
pub fn held_by(inodes: &HashSet<u64>, pids: &[u32]) -> bool {
    pids.iter().any(|pid| {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        rd.flatten().any(|e| {
            std::fs::read_link(e.path())
                .ok()
                .and_then(|t| {
                    let t = t.to_string_lossy().to_string();
                    t.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|i| inodes.contains(&i))
        })
    })
}

/// Every TCP socket in LISTEN state held by one of `pids`, as loopback addresses a client on
/// this machine connects to (a wildcard bind is reached on 127.0.0.1).
pub fn held_listeners(pids: &[u32]) -> Vec<SocketAddr> {
    let mut held: HashSet<u64> = HashSet::new();
    for pid in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            if let Some(i) = std::fs::read_link(e.path()).ok().and_then(|t| {
                let t = t.to_string_lossy().to_string();
                t.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            }) {
                held.insert(i);
            }
        }
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (ip, port, inode) in parse_all_listeners(&text, v6) {
            if !held.contains(&inode) {
                continue;
            }
            let ip = match ip {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                    std::net::Ipv4Addr::LOCALHOST.into()
                }
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    std::net::Ipv4Addr::LOCALHOST.into()
                }
                other => other,
            };
            let a = SocketAddr::new(ip, port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out.sort();
    out
}

fn parse_all_listeners(text: &str, v6: bool) -> Vec<(std::net::IpAddr, u16, u64)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let Some((ip_hex, port_hex)) = f[1].split_once(':') else {
            continue;
        };
        let (Some(ip), Ok(port), Ok(inode)) = (
            decode_ip(ip_hex, v6),
            u16::from_str_radix(port_hex, 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        out.push((ip, port, inode));
    }
    out
}

/// What a listener answers: its greeting, or for HTTP the answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Greeting {
    /// `220 ...` (SMTP, submission, LMTP).
    Smtp,
    /// `* OK ...` (IMAP).
    Imap,
    /// `+OK ...` (POP3).
    Pop3,
    /// `"IMPLEMENTATION" ...` (ManageSieve).
    Sieve,
    /// Says nothing first and answers an HTTP request with `HTTP/`.
    Http,
    /// Accepts the connection and says nothing (the only kind for a silent port in journals
    /// written before probes spoke TLS and HTTP).
    Silent,
}

/// What one probe of a port found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub greeting: Greeting,
    /// After a TLS handshake (implicit TLS: submissions, IMAPS, POP3S, HTTPS).
    pub tls: bool,
}

/// A listener as the server's config declares it (0.15's `[server.listener.<id>]`): names the
/// probe, which stays the judge of what answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declared {
    pub id: String,
    /// `smtp`, `lmtp`, `imap`, `pop3`, `managesieve`, `http`.
    pub protocol: String,
    /// `tls.implicit` (default false, upstream's listener.rs).
    pub tls: bool,
    pub ports: Vec<u16>,
}

/// A listener of the server and what it answered, recorded before an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub addr: SocketAddr,
    pub greeting: Greeting,
    /// It answered after a TLS handshake.
    #[serde(default)]
    pub tls: bool,
    /// The config's declaration of this port, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declared>,
}

impl Probe {
    /// Does `a` answer as this listener did before? A port recorded as `Silent` by an older
    /// helper (which neither spoke TLS nor HTTP to it) is satisfied by anything that does not
    /// greet in clear text.
    pub fn answered_by(&self, a: &Answer) -> bool {
        if self.greeting == Greeting::Silent && !self.tls {
            return a.tls || matches!(a.greeting, Greeting::Http | Greeting::Silent);
        }
        a.greeting == self.greeting && a.tls == self.tls
    }

    /// The protocol as an admin names it.
    pub fn label(&self) -> String {
        let lmtp = self.declared.as_ref().is_some_and(|d| d.protocol == "lmtp");
        let l = match (self.greeting, self.tls) {
            (Greeting::Smtp, false) if lmtp => "LMTP",
            (Greeting::Smtp, true) if lmtp => "LMTP over TLS",
            (Greeting::Smtp, false) => "SMTP",
            (Greeting::Smtp, true) => "SMTP submissions",
            (Greeting::Imap, false) => "IMAP",
            (Greeting::Imap, true) => "IMAPS",
            (Greeting::Pop3, false) => "POP3",
            (Greeting::Pop3, true) => "POP3S",
            (Greeting::Sieve, false) => "ManageSieve",
            (Greeting::Sieve, true) => "ManageSieve over TLS",
            (Greeting::Http, false) => "HTTP",
            (Greeting::Http, true) => "HTTPS",
            (Greeting::Silent, false) => "silent",
            (Greeting::Silent, true) => "TLS, silent",
        };
        l.to_string()
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.declared {
            Some(d) => write!(f, "{} {} (listener {})", self.addr, self.label(), d.id),
            None => write!(f, "{} {}", self.addr, self.label()),
        }
    }
}

/// How long a listener has to greet: mail protocols greet at once; HTTP and implicit TLS wait
/// for the client.
const GREETING_WAIT: Duration = Duration::from_millis(700);
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Connects to `addr` as a client of each protocol would (None: nothing accepts the
/// connection): a greeting in clear text; else a TLS handshake (the server's certificate is not
/// judged: this is loopback, and no secret is sent) and the greeting after it, or an HTTP
/// answer; else an HTTP answer in clear text.
pub fn observe(addr: SocketAddr) -> Option<Answer> {
    // A server may close a connection without a word: upstream's SMTP drops one past its
    // inbound rate limit at the connect (0.15's default `queue.limiter.inbound.ip`, 5 a second
    // per IP, measured: even right after the TLS handshake), and the probes come in bursts. That
    // is no answer to record: tried again a second later, a few times.
    for _ in 0..CLOSED_TRIES {
        match observe_once(addr) {
            Ok(a) => return a,
            Err(Closed) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    None
}

/// How often a port that closes the connection at once is tried before it counts as not
/// answering.
const CLOSED_TRIES: usize = 4;

/// The server closed the connection without a word.
struct Closed;

/// What a connection got first.
enum First {
    Said(Vec<u8>),
    /// Nothing within the read timeout.
    Quiet,
    Closed,
}

/// Up to 64 bytes, within the socket's read timeout.
fn first_bytes(s: &mut impl Read) -> First {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => First::Closed,
        Ok(n) => First::Said(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => First::Quiet,
        Err(_) => First::Closed,
    }
}

/// One round of `observe`: Ok(None) when nothing accepts the connection.
fn observe_once(addr: SocketAddr) -> Result<Option<Answer>, Closed> {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, CONNECT_WAIT) else {
        return Ok(None);
    };
    if s.set_read_timeout(Some(GREETING_WAIT)).is_err() {
        return Ok(None);
    }
    match first_bytes(&mut s) {
        First::Closed => return Err(Closed),
        First::Said(b) if classify(&b) != Greeting::Silent => {
            return Ok(Some(Answer {
                greeting: classify(&b),
                tls: false,
            }))
        }
        First::Said(_) | First::Quiet => {}
    }
    drop(s);
    let tls_closed = match over_tls(addr) {
        Tls::Answered(greeting) => {
            return Ok(Some(Answer {
                greeting,
                tls: true,
            }))
        }
        Tls::Closed => true,
        Tls::None => false,
    };
    let http = TcpStream::connect_timeout(&addr, CONNECT_WAIT)
        .ok()
        .filter(|s| s.set_read_timeout(Some(CONNECT_WAIT)).is_ok())
        .is_some_and(|mut s| http_answers(&mut s));
    if http {
        return Ok(Some(Answer {
            greeting: Greeting::Http,
            tls: false,
        }));
    }
    // A TLS server that closed right after the handshake greets nobody in clear text either:
    // the same as a closed connection.
    if tls_closed {
        return Err(Closed);
    }
    Ok(Some(Answer {
        greeting: Greeting::Silent,
        tls: false,
    }))
}

/// Sends a minimal HTTP request: does the answer start like one?
fn http_answers(s: &mut (impl Read + Write)) -> bool {
    let req = b"GET /healthz/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req).is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 5 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/")
}

/// What a TLS client met.
enum Tls {
    /// The handshake completed and this greeted (or `Http` answered a request, or `Silent`).
    Answered(Greeting),
    /// The server closed the connection right after the handshake.
    Closed,
    /// No TLS there.
    None,
}

/// A TLS handshake with `addr`, then what it greets with (or `Http` when it answers a request).
fn over_tls(addr: SocketAddr) -> Tls {
    let Ok(cfg) = crate::os::tls::loopback_config() else {
        return Tls::None;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from("localhost") else {
        return Tls::None;
    };
    let Ok(conn) = rustls::ClientConnection::new(cfg, name) else {
        return Tls::None;
    };
    let Ok(tcp) = TcpStream::connect_timeout(&addr, CONNECT_WAIT) else {
        return Tls::None;
    };
    if tcp.set_read_timeout(Some(CONNECT_WAIT)).is_err()
        || tcp.set_write_timeout(Some(CONNECT_WAIT)).is_err()
    {
        return Tls::None;
    }
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // A server that closes during the handshake may just not speak TLS (it got our ClientHello
    // as garbage): no TLS. Closing right after a completed one is what counts as `Closed`.
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok((0, 0)) | Err(_) => return Tls::None,
            Ok(_) => {}
        }
    }
    if tls.sock.set_read_timeout(Some(GREETING_WAIT)).is_err() {
        return Tls::None;
    }
    match first_bytes(&mut tls) {
        First::Closed => Tls::Closed,
        First::Said(b) if classify(&b) != Greeting::Silent => Tls::Answered(classify(&b)),
        First::Said(_) | First::Quiet => {
            if tls.sock.set_read_timeout(Some(CONNECT_WAIT)).is_err() {
                return Tls::None;
            }
            Tls::Answered(if http_answers(&mut tls) {
                Greeting::Http
            } else {
                Greeting::Silent
            })
        }
    }
}

fn classify(first: &[u8]) -> Greeting {
    if first.starts_with(b"220") {
        Greeting::Smtp
    } else if first.starts_with(b"* OK") {
        Greeting::Imap
    } else if first.starts_with(b"+OK") {
        Greeting::Pop3
    } else if first.starts_with(b"\"IMPLEMENTATION\"") {
        Greeting::Sieve
    } else {
        Greeting::Silent
    }
}

/// The probes of `want` whose port does not answer as it did (all probed at once).
pub fn unanswered(want: &[Probe]) -> Vec<&Probe> {
    std::thread::scope(|sc| {
        let answers: Vec<_> = want
            .iter()
            .map(|p| sc.spawn(move || observe(p.addr)))
            .collect();
        want.iter()
            .zip(answers)
            .filter_map(|(p, h)| {
                let answered = h.join().ok().flatten().is_some_and(|a| p.answered_by(&a));
                (!answered).then_some(p)
            })
            .collect()
    })
}

/// The listeners of the unit whose processes are `pids`, each with what it answers (probed at
/// once: each may wait for a greeting) and its declaration in `declared` (by port).
pub fn probe_all(pids: &[u32], declared: &[Declared]) -> Vec<Probe> {
    let addrs = held_listeners(pids);
    std::thread::scope(|sc| {
        let probes: Vec<_> = addrs
            .iter()
            .map(|a| sc.spawn(move || observe(*a)))
            .collect();
        addrs
            .iter()
            .zip(probes)
            .filter_map(|(addr, h)| {
                let a = h.join().ok().flatten()?;
                Some(Probe {
                    addr: *addr,
                    greeting: a.greeting,
                    tls: a.tls,
                    declared: declared
                        .iter()
                        .find(|d| d.ports.contains(&addr.port()))
                        .cloned(),
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_tables() {
        // 127.0.0.1:8080 LISTEN inode 1111; 0.0.0.0:25 LISTEN 2222; an established one.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 1111 1 0 100 0 0 10 0\n\
   1: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 2222 1 0 100 0 0 10 0\n\
   2: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000   998        0 3333 1 0 100 0 0 10 0\n";
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(parse_listeners(v4, false, a), vec![1111]);
        let smtp: SocketAddr = "127.0.0.1:25".parse().unwrap();
        assert_eq!(parse_listeners(v4, false, smtp), vec![2222]);
        let other: SocketAddr = "127.0.0.2:8080".parse().unwrap();
        assert!(parse_listeners(v4, false, other).is_empty());
        // [::]:8080 reaches 127.0.0.1:8080 too.
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 4444 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listeners(v6, true, a), vec![4444]);
    }

    #[test]
    fn greetings_are_classified() {
        assert_eq!(
            classify(b"220 mx.example.org Stalwart ESMTP at your service\r\n"),
            Greeting::Smtp
        );
        assert_eq!(
            classify(b"* OK [CAPABILITY IMAP4rev2] Stalwart"),
            Greeting::Imap
        );
        assert_eq!(
            classify(b"+OK Stalwart POP3 at your service."),
            Greeting::Pop3
        );
        assert_eq!(
            classify(b"\"IMPLEMENTATION\" \"Stalwart\""),
            Greeting::Sieve
        );
        assert_eq!(classify(b""), Greeting::Silent);
    }

    /// A self-signed certificate for `localhost` (test data, made once with openssl, valid
    /// until 2126) and its key.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIUfhgy8R+/WQWu7W5s+Givu7eM5ZEwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNzE1MzUxNFoYDzIxMjYxMTEz
MTUzNTE0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARC7MNg5XZXMomHRIn2wY1ymDExMJg1Aw0K9OhYxHBhjsp+3q8QWh+H
iKTSdA4VLihIOGCAga+KClVGvzb9z8peo1MwUTAdBgNVHQ4EFgQU/zG+/7Vrszgr
bvaEQIVKbcksdIMwHwYDVR0jBBgwFoAU/zG+/7VrszgrbvaEQIVKbcksdIMwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBh+9lEbxWX9H/PQ2FoE+jC
BRFDIkcT4lqXkUeJXA+8jwIgal8pKHtjq84U8TlRhBDGX18z+hdh/8jGx3yDZGqr
ll8=
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglETh7uEDd2udCp0p
3AgRTVfy0OtoXBODb677NlLVRU+hRANCAARC7MNg5XZXMomHRIn2wY1ymDExMJg1
Aw0K9OhYxHBhjsp+3q8QWh+HiKTSdA4VLihIOGCAga+KClVGvzb9z8pe
-----END PRIVATE KEY-----
";

    /// What each test server does with a connection.
    #[derive(Clone, Copy)]
    enum Serve {
        /// Greets with these bytes in clear text.
        Greet(&'static [u8]),
        /// Waits for a request and answers it as HTTP.
        Http,
        /// Accepts and says nothing.
        Quiet,
        /// Implicit TLS, then greets (or answers HTTP when `None`).
        Tls(Option<&'static [u8]>),
    }

    /// A listener on loopback serving every connection as `how`, until the test ends.
    fn server(how: Serve) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let tls = {
            let certs: Vec<_> = rustls_pemfile::certs(&mut CERT.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = rustls_pemfile::private_key(&mut KEY.as_bytes())
                .unwrap()
                .unwrap();
            std::sync::Arc::new(
                rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
            )
        };
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let answer_http = |s: &mut dyn ReadWrite| {
                        let mut buf = [0u8; 512];
                        if let Ok(n) = s.read(&mut buf) {
                            if buf[..n].starts_with(b"GET ") {
                                let _ =
                                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                            } else {
                                let _ = s.write_all(b"not http\r\n");
                            }
                        }
                    };
                    match how {
                        Serve::Greet(g) => {
                            let _ = c.write_all(g);
                            let _ = c.read(&mut [0u8; 16]);
                        }
                        Serve::Http => answer_http(&mut c),
                        Serve::Quiet => {
                            let _ = c.read(&mut [0u8; 16]);
                        }
                        Serve::Tls(greeting) => {
                            let conn = rustls::ServerConnection::new(tls).unwrap();
                            let mut s = rustls::StreamOwned::new(conn, c);
                            match greeting {
                                Some(g) => {
                                    let _ = s.write_all(g);
                                    let _ = s.flush();
                                    let _ = s.read(&mut [0u8; 16]);
                                }
                                None => answer_http(&mut s),
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// A listener that closes its first `n` connections without a word (as upstream's SMTP
    /// does past its inbound rate limit), then greets like SMTP.
    fn closes_first(n: usize) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for (i, c) in l.incoming().enumerate() {
                let Ok(mut c) = c else { continue };
                if i >= n {
                    let _ = c.write_all(b"220 mx ESMTP\r\n");
                    let _ = c.read(&mut [0u8; 16]);
                }
            }
        });
        addr
    }

    #[test]
    fn a_connection_closed_without_a_word_is_tried_again() {
        let a = observe(closes_first(2)).expect("answers on the third connection");
        assert_eq!((a.greeting, a.tls), (Greeting::Smtp, false));
        // Never anything but closed: no answer to record or accept.
        assert_eq!(observe(closes_first(usize::MAX)), None);
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    #[test]
    fn each_listener_is_probed_as_its_protocol_answers() {
        let cases = [
            (
                Serve::Greet(b"220 mx ESMTP\r\n"),
                Greeting::Smtp,
                false,
                "SMTP",
            ),
            (Serve::Http, Greeting::Http, false, "HTTP"),
            (Serve::Quiet, Greeting::Silent, false, "silent"),
            (
                Serve::Tls(Some(b"220 mx ESMTP\r\n")),
                Greeting::Smtp,
                true,
                "SMTP submissions",
            ),
            (
                Serve::Tls(Some(b"* OK IMAP4rev2\r\n")),
                Greeting::Imap,
                true,
                "IMAPS",
            ),
            (
                Serve::Tls(Some(b"+OK POP3\r\n")),
                Greeting::Pop3,
                true,
                "POP3S",
            ),
            (Serve::Tls(None), Greeting::Http, true, "HTTPS"),
        ];
        for (how, greeting, tls, label) in cases {
            let addr = server(how);
            let a = observe(addr).unwrap_or_else(|| panic!("{label}: no answer"));
            assert_eq!((a.greeting, a.tls), (greeting, tls), "{label}");
            let p = Probe {
                addr,
                greeting: a.greeting,
                tls: a.tls,
                declared: None,
            };
            assert_eq!(p.label(), label);
            assert!(p.answered_by(&a));
        }
        assert_eq!(observe("127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn a_port_that_answers_otherwise_fails_and_old_silent_records_still_match() {
        let imaps = Probe {
            addr: "127.0.0.1:993".parse().unwrap(),
            greeting: Greeting::Imap,
            tls: true,
            declared: None,
        };
        for (g, tls) in [
            (Greeting::Imap, false),
            (Greeting::Http, true),
            (Greeting::Silent, false),
        ] {
            assert!(
                !imaps.answered_by(&Answer { greeting: g, tls }),
                "{g:?} {tls}"
            );
        }
        // A journal written before TLS probes: `{"addr": .., "greeting": "silent"}`.
        let old: Probe =
            serde_json::from_str(r#"{"addr":"127.0.0.1:443","greeting":"silent"}"#).unwrap();
        assert!(old.answered_by(&Answer {
            greeting: Greeting::Http,
            tls: true
        }));
        assert!(!old.answered_by(&Answer {
            greeting: Greeting::Smtp,
            tls: false
        }));
        // The config's declaration names it; LMTP greets like SMTP.
        let lmtp = Probe {
            addr: "127.0.0.1:24".parse().unwrap(),
            greeting: Greeting::Smtp,
            tls: false,
            declared: Some(Declared {
                id: "lmtp".into(),
                protocol: "lmtp".into(),
                tls: false,
                ports: vec![24],
            }),
        };
        assert_eq!(lmtp.to_string(), "127.0.0.1:24 LMTP (listener lmtp)");
    }

    #[test]
    fn the_listeners_we_hold_are_probed() {
        let smtp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = smtp.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = smtp.accept().unwrap();
            c.write_all(b"220 test ESMTP\r\n").unwrap();
        });
        let held = held_listeners(&[std::process::id()]);
        assert!(held.contains(&a), "{held:?}");
        let d = Declared {
            id: "smtp".into(),
            protocol: "smtp".into(),
            tls: false,
            ports: vec![a.port()],
        };
        let probes = probe_all(&[std::process::id()], std::slice::from_ref(&d));
        let p = probes.iter().find(|p| p.addr == a).expect("probed");
        assert_eq!(
            (p.greeting, p.tls, p.declared.as_ref()),
            (Greeting::Smtp, false, Some(&d))
        );
        t.join().unwrap();
    }

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let inodes = listening_inodes(addr);
        assert!(!inodes.is_empty());
        assert!(held_by(&inodes, &[std::process::id()]));
        assert!(!held_by(&inodes, &[1]) || std::process::id() == 1);
    }
}
