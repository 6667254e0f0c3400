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
use std::net::SocketAddr;

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

/// What a listener says first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Greeting {
    /// `220 ...` (SMTP, submission).
    Smtp,
    /// `* OK ...` (IMAP).
    Imap,
    /// `+OK ...` (POP3).
    Pop3,
    /// `"IMPLEMENTATION" ...` (ManageSieve).
    Sieve,
    /// Accepts the connection and waits for the client (HTTP, implicit TLS).
    Silent,
}

/// A listener of the server and what it answered, recorded before an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub addr: SocketAddr,
    pub greeting: Greeting,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.greeting {
            Greeting::Smtp => "SMTP",
            Greeting::Imap => "IMAP",
            Greeting::Pop3 => "POP3",
            Greeting::Sieve => "ManageSieve",
            Greeting::Silent => "HTTP/TLS",
        };
        write!(f, "{} ({what})", self.addr)
    }
}

/// Connects to `addr` and classifies its first bytes (None: nothing accepts the connection).
pub fn greet(addr: SocketAddr) -> Option<Greeting> {
    use std::io::Read;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(700)));
    let mut buf = [0u8; 64];
    let n = match s.read(&mut buf) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            0
        }
        Err(_) => return None,
    };
    Some(classify(&buf[..n]))
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

/// The listeners of the unit whose processes are `pids`, each with its greeting.
pub fn probe_all(pids: &[u32]) -> Vec<Probe> {
    held_listeners(pids)
        .into_iter()
        .filter_map(|addr| greet(addr).map(|greeting| Probe { addr, greeting }))
        .collect()
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

    #[test]
    fn the_listeners_we_hold_with_their_greeting() {
        use std::io::Write;
        let smtp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, b) = (smtp.local_addr().unwrap(), quiet.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let (mut c, _) = smtp.accept().unwrap();
            c.write_all(b"220 test ESMTP\r\n").unwrap();
            let _q = quiet.accept().unwrap();
        });
        let held = held_listeners(&[std::process::id()]);
        assert!(held.contains(&a) && held.contains(&b), "{held:?}");
        assert_eq!(greet(a), Some(Greeting::Smtp));
        assert_eq!(greet(b), Some(Greeting::Silent));
        t.join().unwrap();
        assert_eq!(greet("127.0.0.1:1".parse().unwrap()), None);
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
