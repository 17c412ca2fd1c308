//! Pseudonyms for personal identifiers (CONTRACT §1).
//!
//! A `person` (an id-card number or another personal id) is replaced at ingestion by
//! HMAC-SHA256(key, trimmed upper-cased id), hex-encoded. The key comes from the config; with it
//! the same person always maps to the same pseudonym (so contacts can be traced), without it the
//! pseudonym cannot be reversed or recomputed.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Computes pseudonyms with a secret key.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer(<key redacted>)")
    }
}

impl Pseudonymizer {
    /// A pseudonymizer with the given secret key.
    pub fn new(key: Vec<u8>) -> Self {
        Pseudonymizer { key }
    }

    /// The pseudonym of a personal id: 64 hex digits.
    pub fn pseudonym(&self, id: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(id.trim().to_uppercase().as_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut s = String::with_capacity(64);
        for b in bytes {
            use fmt::Write;
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_depends_on_the_key() {
        let p = Pseudonymizer::new(b"k1".to_vec());
        assert_eq!(p.pseudonym(" 11010519491231002x"), p.pseudonym("11010519491231002X"));
        assert_ne!(p.pseudonym("a"), Pseudonymizer::new(b"k2".to_vec()).pseudonym("a"));
        assert_eq!(p.pseudonym("a").len(), 64);
    }
}
