//! Bearer tokens and session ids: 256 random bits from the operating system, shown once, stored
//! only as their SHA-256 (a token is as strong as a key, so a plain hash is enough: there is
//! nothing to brute-force).

use sha2::{Digest, Sha256};

/// Prefix of API tokens, so that leaked tokens are recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "coldscan_";

/// Random bytes per token or session id (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// A new random secret as lowercase hex.
pub fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(hex::encode(bytes))
}

/// A new API token: `coldscan_` and 64 hex digits.
pub fn new_token() -> anyhow::Result<String> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex()?))
}

/// The hash stored for a token or session id.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two strings (CSRF tokens).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
