//! Secrets of `[authentication.fallback-admin] secret`.
//!
//! Upstream stores a password hash there (its `--init` writes a sha512-crypt `$6$...` hash) and
//! also accepts other hash schemes. The stand-in verifies sha512-crypt hashes (Ulrich Drepper's
//! "Unix crypt using SHA-256 and SHA-512" specification) and otherwise compares the secret as
//! plain text (a stand-in simplification: tests usually write plain secrets).

use sha2::{Digest, Sha512};

const B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DEFAULT_ROUNDS: u32 = 5000;

/// True if `given` matches the configured `secret` (a `$6$` hash or a plain secret).
pub fn verify(secret: &str, given: &str) -> bool {
    if let Some(spec) = secret.strip_prefix("$6$") {
        // "$6$[rounds=N$]salt$hash": recompute with the same prefix and compare.
        let Some(cut) = spec.rfind('$') else {
            return false;
        };
        let setting = &secret[..3 + cut];
        return sha512_crypt(given.as_bytes(), setting).as_deref() == Some(secret);
    }
    constant_eq(secret.as_bytes(), given.as_bytes())
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn repeat_into(h: &mut Sha512, block: &[u8], len: usize) {
    let mut left = len;
    while left >= block.len() {
        h.update(block);
        left -= block.len();
    }
    h.update(&block[..left]);
}

/// sha512-crypt of `password` with `setting` = "$6$salt" or "$6$rounds=N$salt" (a trailing
/// "$hash" is not expected). Returns the full "$6$...$hash" string.
pub fn sha512_crypt(password: &[u8], setting: &str) -> Option<String> {
    let mut rest = setting.strip_prefix("$6$")?;
    let mut rounds = DEFAULT_ROUNDS;
    let mut explicit_rounds = false;
    if let Some(r) = rest.strip_prefix("rounds=") {
        let (n, after) = r.split_once('$')?;
        rounds = n.parse::<u64>().ok()?.clamp(1000, 999_999_999) as u32;
        explicit_rounds = true;
        rest = after;
    }
    let salt_str = rest.split('$').next()?;
    let salt = &salt_str.as_bytes()[..salt_str.len().min(16)];
    let p = password;

    let b = Sha512::new()
        .chain_update(p)
        .chain_update(salt)
        .chain_update(p)
        .finalize();
    let mut a = Sha512::new();
    a.update(p);
    a.update(salt);
    repeat_into(&mut a, &b, p.len());
    let mut n = p.len();
    while n > 0 {
        if n & 1 == 1 {
            a.update(b);
        } else {
            a.update(p);
        }
        n >>= 1;
    }
    let a = a.finalize();

    let mut dp = Sha512::new();
    for _ in 0..p.len() {
        dp.update(p);
    }
    let dp = dp.finalize();
    let mut p_seq = Vec::with_capacity(p.len());
    while p_seq.len() < p.len() {
        let take = (p.len() - p_seq.len()).min(64);
        p_seq.extend_from_slice(&dp[..take]);
    }

    let mut ds = Sha512::new();
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let ds = ds.finalize();
    let s_seq = &ds[..salt.len()];

    let mut c = a;
    for i in 0..rounds {
        let mut h = Sha512::new();
        if i % 2 == 1 {
            h.update(&p_seq);
        } else {
            h.update(c);
        }
        if i % 3 != 0 {
            h.update(s_seq);
        }
        if i % 7 != 0 {
            h.update(&p_seq);
        }
        if i % 2 == 1 {
            h.update(c);
        } else {
            h.update(&p_seq);
        }
        c = h.finalize();
    }

    let mut out = String::from("$6$");
    if explicit_rounds {
        out.push_str(&format!("rounds={rounds}$"));
    }
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut push = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
        for _ in 0..n {
            out.push(B64[(w & 0x3f) as usize] as char);
            w >>= 6;
        }
    };
    const ORDER: [(usize, usize, usize); 21] = [
        (0, 21, 42),
        (22, 43, 1),
        (44, 2, 23),
        (3, 24, 45),
        (25, 46, 4),
        (47, 5, 26),
        (6, 27, 48),
        (28, 49, 7),
        (50, 8, 29),
        (9, 30, 51),
        (31, 52, 10),
        (53, 11, 32),
        (12, 33, 54),
        (34, 55, 13),
        (56, 14, 35),
        (15, 36, 57),
        (37, 58, 16),
        (59, 17, 38),
        (18, 39, 60),
        (40, 61, 19),
        (62, 20, 41),
    ];
    for (x, y, z) in ORDER {
        push(c[x], c[y], c[z], 4);
    }
    push(0, 0, c[63], 2);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drepper_test_vectors() {
        assert_eq!(
            sha512_crypt(b"Hello world!", "$6$saltstring").unwrap(),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
        assert_eq!(
            sha512_crypt(b"Hello world!", "$6$rounds=10000$saltstringsaltstring").unwrap(),
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
        );
    }

    #[test]
    fn verify_hash_and_plain() {
        let h = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(verify(h, "Hello world!"));
        assert!(!verify(h, "Hello world"));
        assert!(verify("plain", "plain"));
        assert!(!verify("plain", "plain2"));
    }
}
