//! The `Idempotency-Key` request header (IETF httpapi draft): what a valid key is, and the
//! fingerprint that binds a key to one request.

use sha2::{Digest, Sha256};

/// The header, as sent.
pub const HEADER: &str = "Idempotency-Key";
/// How long a key is remembered.
pub const RETENTION_HOURS: i64 = 24;

/// A client-chosen key: 1 to 255 visible ASCII characters (the draft recommends a UUID; any
/// opaque token of that shape is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "the {HEADER} header must be 1 to 255 visible ASCII characters"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a request asks for, reduced to its meaning: `parts` are the operation and its
/// normalized inputs (for a create, the name and the resolved engine), so that the same intent
/// sent with different JSON spacing or field order matches.
pub fn fingerprint(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").is_ok());
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_eq!(
            fingerprint(&["create", "a", "mariadb"]),
            fingerprint(&["create", "a", "mariadb"])
        );
        assert_ne!(
            fingerprint(&["create", "ab", "c"]),
            fingerprint(&["create", "a", "bc"])
        );
        assert_ne!(
            fingerprint(&["create", "a", "mariadb"]),
            fingerprint(&["create", "a", "postgres"])
        );
    }
}
