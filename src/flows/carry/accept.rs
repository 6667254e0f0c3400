//! What 0.16's registry accepts, checked before the downtime: a value it refuses during the carry
//! step fails the crossing after the stop (safely rolled back, but an outage for nothing), so
//! every check that can be made from the dump is made here first.
//!
//! Facts (v0.16.18): the registry validates `Hostname` fields (`SystemSettings.defaultHostname`)
//! as an IP address, else with `sanitize_domain`, and `Domain` fields (`Domain.name`) with
//! `sanitize_domain` (crates/registry/src/types/string.rs, `StringValidator`). `sanitize_domain`
//! (crates/utils/src/lib.rs) drops whitespace, lowercases, refuses a name without a dot, one
//! ending with a dot and an empty label before a dot, turns a non-ASCII name into its IDNA form,
//! and then wants `is_valid_domain`: a suffix the public suffix list knows (the `psl` crate at
//! the release 0.16.18 locks), or one of its reserved TLDs. A refused value answers "Invalid
//! hostname or IP address" / "Invalid domain name".

/// The reserved TLDs 0.16's `is_valid_domain` accepts besides the public suffix list.
const RESERVED_TLDS: &[&str] = &[
    "test",
    "localhost",
    "local",
    "internal",
    "lan",
    "home",
    "corp",
    "intranet",
    "private",
    "localdomain",
];

/// 0.16's `is_valid_domain`.
fn is_valid_domain(domain: &str) -> bool {
    (domain.contains('.') && psl::suffix(domain.as_bytes()).is_some_and(|s| s.typ().is_some()))
        || RESERVED_TLDS.contains(&domain)
        || domain
            .rsplit_once('.')
            .is_some_and(|(_, tld)| RESERVED_TLDS.contains(&tld))
}

/// 0.16's `sanitize_domain`: the name as 0.16 stores it, or None when it refuses it.
pub fn sanitize_domain(domain: &str) -> Option<String> {
    let mut result = String::with_capacity(domain.len());
    let mut found_dot = false;
    let mut last = '\0';
    let mut ascii = true;
    for ch in domain.chars().filter(|c| !c.is_whitespace()) {
        if ch == '.' {
            found_dot = true;
            if !(last.is_alphanumeric() || last == '-' || last == '_') {
                return None;
            }
        } else if !ch.is_ascii() {
            ascii = false;
        }
        last = ch;
        result.extend(ch.to_lowercase());
    }
    if !found_dot || last == '.' {
        return None;
    }
    if ascii {
        is_valid_domain(&result).then_some(result)
    } else {
        let a = idna::domain_to_ascii(&result).ok()?;
        is_valid_domain(&a).then_some(a)
    }
}

/// Why 0.16 refuses a host name (the registry's own words, then what they mean).
pub const HOSTNAME_REFUSED: &str = "0.16 refuses it: \"Invalid hostname or IP address\" (a host name needs a dot and a suffix the public suffix list knows, e.g. mail.example.org)";

/// A `Hostname` field as 0.16 stores it, or None when it refuses it.
pub fn hostname(value: &str) -> Option<String> {
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Some(value.to_string());
    }
    sanitize_domain(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_as_0_16_judges_them() {
        // Accepted, as 0.16 stores them.
        assert_eq!(
            hostname("mx.example.org").as_deref(),
            Some("mx.example.org")
        );
        assert_eq!(
            hostname("MX.Example.ORG").as_deref(),
            Some("mx.example.org")
        );
        assert_eq!(
            hostname("mail.example.co.uk").as_deref(),
            Some("mail.example.co.uk")
        );
        assert_eq!(
            hostname("box.localdomain").as_deref(),
            Some("box.localdomain")
        );
        assert_eq!(hostname("host.lan").as_deref(), Some("host.lan"));
        assert_eq!(hostname("192.0.2.7").as_deref(), Some("192.0.2.7"));
        assert_eq!(hostname("::1").as_deref(), Some("::1"));
        assert_eq!(
            hostname("mail.straße.de").as_deref(),
            Some("mail.xn--strae-oqa.de")
        );
        // Refused: the short name Debian's /etc/hostname holds, a trailing dot, an empty label,
        // a suffix nobody registered.
        for bad in [
            "stwtb-1234-0-ab12",
            "debian",
            "localhost",
            "mx.example.org.",
            "mx..example.org",
            ".example.org",
            "mail.mycompany",
            "",
        ] {
            assert_eq!(hostname(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn domains_as_0_16_judges_them() {
        assert_eq!(
            sanitize_domain("Example.org").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            sanitize_domain("example.test").as_deref(),
            Some("example.test")
        );
        assert_eq!(sanitize_domain("localhost").as_deref(), None, "no dot");
        assert_eq!(sanitize_domain("example.nosuchtld"), None);
    }
}
