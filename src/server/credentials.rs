//! The web administrator's credentials the helper makes and keeps: one place for the package
//! hooks (a first install's administrator), the crossing (the one-time recovery administrator)
//! and the web-admin refresh (which reads them).

/// Where the package puts the administrator's credential of a 0.15 first install (upstream's
/// `--init` prints the password once; the web-admin refresh reads it from here).
pub const CREDENTIALS_FILE: &str = "/etc/stalwart-upgrade/webadmin.cred";

/// A random password of `n` letters and digits (from the kernel's random source).
pub fn random_password(n: usize) -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = vec![0u8; n * 2];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // Rejection sampling keeps the characters uniform.
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::new();
    for b in bytes {
        if (b as usize) < limit && out.len() < n {
            out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
        }
    }
    if out.len() < n {
        return random_password(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_have_the_length_and_alphabet_asked_for() {
        let a = super::random_password(32).unwrap();
        let b = super::random_password(32).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
