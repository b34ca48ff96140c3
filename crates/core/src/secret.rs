//! Secrets and how they are kept: database passwords are sealed with XChaCha20-Poly1305 under
//! the master key, API keys are kept only as SHA-256 hashes. No type here prints its secret in
//! `Debug`, so a stray `{:?}` in a log line shows `[redacted]`.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{DatabaseId, random};

/// Length of generated database passwords: about 238 bits of entropy.
pub const PASSWORD_LEN: usize = 40;
/// The fixed part of every API key.
pub const KEY_PREFIX: &str = "hepgg_db_";
const KEY_SECRET_LEN: usize = 32;

/// A database password, alphanumeric so it needs no escaping in a connection string or DDL.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A fresh password from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(random::alphanumeric(PASSWORD_LEN))
    }

    /// Wraps a password that came out of [`MasterKey::open`] or a test.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    /// Whether every character is one hepdb generates, the precondition for splicing it into
    /// DDL as a literal.
    pub fn is_alphanumeric(&self) -> bool {
        !self.0.is_empty() && self.0.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// The plain text, for the one place that needs it (DDL, a response body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A bearer key as the user holds it: `hepgg_db_` + 32 alphanumerics.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn generate() -> Self {
        Self(format!(
            "{KEY_PREFIX}{}",
            random::alphanumeric(KEY_SECRET_LEN)
        ))
    }

    /// Accepts only strings of the key's exact shape; anything else cannot match a key.
    pub fn parse(s: &str) -> Option<Self> {
        let secret = s.strip_prefix(KEY_PREFIX)?;
        (secret.len() == KEY_SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(s.to_owned()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Prefix of platform tokens, different from API keys' so neither can pass for the other.
pub const PLATFORM_TOKEN_PREFIX: &str = "hepdb_pt_";
const PLATFORM_TOKEN_SECRET_LEN: usize = 40;

/// A bearer token of the platform API (the hosting platform's dashboard, billing, abuse
/// tools). Shown once when minted; only its hash is stored, like an API key's.
#[derive(Clone, PartialEq, Eq)]
pub struct PlatformToken(String);

impl PlatformToken {
    pub fn generate() -> Self {
        Self(format!(
            "{PLATFORM_TOKEN_PREFIX}{}",
            random::alphanumeric(PLATFORM_TOKEN_SECRET_LEN)
        ))
    }

    /// Accepts only strings of the token's exact shape (an API key never parses).
    pub fn parse(s: &str) -> Option<Self> {
        let secret = s.strip_prefix(PLATFORM_TOKEN_PREFIX)?;
        (secret.len() == PLATFORM_TOKEN_SECRET_LEN
            && secret.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| Self(s.to_owned()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlatformToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlatformToken([redacted])")
    }
}

/// What is stored of a key. The key has 190 random bits, so a fast hash is enough: there is
/// nothing to brute-force, and the lookup stays one indexed point select.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Compares in constant time, so response timing says nothing about a near miss.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.0.ct_eq(stored))
    }
}

/// The keys that seal every database password: the current one, which seals, and any previous
/// ones, which only open (during a master-key rotation, until every value is re-sealed).
#[derive(Clone)]
pub struct MasterKey {
    current: Key,
    previous: Vec<Key>,
}

/// One 32-byte key and its id: the first 8 bytes of a SHA-256 of it, which every value it
/// seals carries, so that the key to open a value is named by the value.
#[derive(Clone)]
struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

/// Sealed values start with this byte, so the format can change without guessing. Version 1
/// (no key id) is still opened, by trying each key.
const SEAL_VERSION: u8 = 2;
const SEAL_V1: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

/// The master key was not 32 bytes of base64.
#[derive(Debug, thiserror::Error)]
#[error("must be 32 bytes encoded as standard base64")]
pub struct BadMasterKey;

/// A sealed value did not open: wrong key, wrong database id, or corrupted.
#[derive(Debug, thiserror::Error)]
#[error("sealed secret could not be opened")]
pub struct UnsealError;

impl Key {
    fn from_base64(s: &str) -> Result<Self, BadMasterKey> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| BadMasterKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| BadMasterKey)?;
        let digest = Sha256::new()
            .chain_update(b"hepdb master key id\0")
            .chain_update(&bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(Self { id, cipher })
    }

    fn decrypt(
        &self,
        nonce: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Password, UnsealError> {
        let nonce = XNonce::try_from(nonce).map_err(|_| UnsealError)?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| UnsealError)?;
        String::from_utf8(plain)
            .map(Password)
            .map_err(|_| UnsealError)
    }
}

/// The associated data of a sealed value: its database and the key's id.
fn aad(database: DatabaseId, key: &[u8; KEY_ID_LEN]) -> Vec<u8> {
    let mut aad = database.to_text().into_bytes();
    aad.extend_from_slice(key);
    aad
}

impl MasterKey {
    pub fn from_base64(s: &str) -> Result<Self, BadMasterKey> {
        Ok(Self {
            current: Key::from_base64(s)?,
            previous: Vec::new(),
        })
    }

    /// Adds keys that open what they sealed but seal nothing new.
    pub fn with_previous<'a>(
        mut self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, BadMasterKey> {
        for k in keys {
            let key = Key::from_base64(k)?;
            if key.id != self.current.id {
                self.previous.push(key);
            }
        }
        Ok(self)
    }

    /// A new random key, base64-encoded, for operators setting up a deployment.
    pub fn generate_base64() -> String {
        let mut k = [0u8; 32];
        random::fill(&mut k);
        STANDARD.encode(k)
    }

    /// The current key's id, in hex (it names the key in sealed values, logs and the CLI).
    pub fn id(&self) -> String {
        hex(&self.current.id)
    }

    /// Seals `password` under the current key, so that it opens only under this key *and* for
    /// this database: a sealed value copied onto another row does not decrypt.
    pub fn seal(&self, database: DatabaseId, password: &Password) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        random::fill(&mut nonce);
        let key = &self.current;
        let ciphertext = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: password.0.as_bytes(),
                    aad: &aad(database, &key.id),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a short message cannot fail");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens a value sealed under the current key or a previous one.
    pub fn open(&self, database: DatabaseId, sealed: &[u8]) -> Result<Password, UnsealError> {
        let (&version, rest) = sealed.split_first().ok_or(UnsealError)?;
        let keys = || std::iter::once(&self.current).chain(&self.previous);
        match version {
            SEAL_VERSION if rest.len() >= KEY_ID_LEN + NONCE_LEN => {
                let (id, rest) = rest.split_at(KEY_ID_LEN);
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                let key = keys().find(|k| k.id == id).ok_or(UnsealError)?;
                key.decrypt(nonce, ciphertext, &aad(database, &key.id))
            }
            SEAL_V1 if rest.len() >= NONCE_LEN => {
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                let aad = database.to_text();
                keys()
                    .find_map(|k| k.decrypt(nonce, ciphertext, aad.as_bytes()).ok())
                    .ok_or(UnsealError)
            }
            _ => Err(UnsealError),
        }
    }

    /// Whether `sealed` is sealed under the current key (nothing for a rotation to do).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.first() == Some(&SEAL_VERSION)
            && sealed.get(1..1 + KEY_ID_LEN) == Some(&self.current.id[..])
    }

    /// The first bytes of every value sealed under the current key: a prefix a metadata query
    /// can match (`substring(password_sealed from 1 for 9)`).
    pub fn sealed_prefix(&self) -> Vec<u8> {
        let mut prefix = vec![SEAL_VERSION];
        prefix.extend_from_slice(&self.current.id);
        prefix
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).unwrap()
    }

    #[test]
    fn passwords_are_long_url_safe_and_unique() {
        let a = Password::generate();
        assert!(a.expose().len() >= 32);
        assert!(a.is_alphanumeric());
        assert_ne!(a, Password::generate());
        assert_eq!(format!("{a:?}"), "Password([redacted])");
    }

    #[test]
    fn seal_opens_only_for_its_database_and_key() {
        let (k, db) = (key(), DatabaseId::new());
        let pw = Password::generate();
        let sealed = k.seal(db, &pw);
        assert!(
            !sealed
                .windows(8)
                .any(|w| pw.expose().as_bytes().starts_with(w))
        );
        assert_eq!(k.open(db, &sealed).unwrap(), pw);
        assert!(
            k.open(DatabaseId::new(), &sealed).is_err(),
            "AAD binds the id"
        );
        assert!(key().open(db, &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open(db, &tampered).is_err());
        assert!(k.open(db, &[]).is_err());
        assert_ne!(k.seal(db, &pw), sealed, "fresh nonce each time");
    }

    #[test]
    fn sealed_values_name_their_key_and_previous_keys_open_them() {
        let (old, new) = (MasterKey::generate_base64(), MasterKey::generate_base64());
        let old_key = MasterKey::from_base64(&old).unwrap();
        let db = DatabaseId::new();
        let pw = Password::generate();
        let sealed = old_key.seal(db, &pw);
        assert!(sealed.starts_with(&old_key.sealed_prefix()));
        assert!(old_key.is_current(&sealed));
        // The new key alone cannot open it; with the old one as previous, it can.
        let rotating = MasterKey::from_base64(&new).unwrap();
        assert!(rotating.open(db, &sealed).is_err());
        let rotating = rotating.with_previous([old.as_str()]).unwrap();
        assert_eq!(rotating.open(db, &sealed).unwrap(), pw);
        assert!(!rotating.is_current(&sealed));
        let resealed = rotating.seal(db, &pw);
        assert!(rotating.is_current(&resealed));
        assert_ne!(rotating.id(), old_key.id());
        // The key id is bound: a value whose id is rewritten to another key's does not open.
        let mut forged = sealed.clone();
        forged[1..9].copy_from_slice(&resealed[1..9]);
        assert!(rotating.open(db, &forged).is_err());
    }

    #[test]
    fn version_one_values_still_open() {
        let b64 = MasterKey::generate_base64();
        let k = MasterKey::from_base64(&b64).unwrap();
        let db = DatabaseId::new();
        let pw = Password::generate();
        // Version 1: [1][nonce][ciphertext], the database id alone as associated data.
        let cipher = XChaCha20Poly1305::new_from_slice(&STANDARD.decode(&b64).unwrap()).unwrap();
        let nonce = [7u8; NONCE_LEN];
        let aad = db.to_text();
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: pw.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap();
        let mut v1 = vec![SEAL_V1];
        v1.extend_from_slice(&nonce);
        v1.extend_from_slice(&ct);
        assert_eq!(k.open(db, &v1).unwrap(), pw);
        assert!(!k.is_current(&v1));
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn keys_have_the_spec_shape() {
        let k = ApiKey::generate();
        assert!(k.expose().starts_with("hepgg_db_"));
        assert_eq!(k.expose().len(), 9 + 32);
        assert!(ApiKey::parse(k.expose()).is_some());
        assert!(ApiKey::parse("hepgg_db_short").is_none());
        assert!(ApiKey::parse(&format!("hepgg_db_{}", "!".repeat(32))).is_none());
        let h = k.hash();
        assert!(h.matches(&h.0));
        assert!(!h.matches(&ApiKey::generate().hash().0));
        assert!(!h.matches(&h.0[..31]));
        assert_eq!(format!("{k:?}"), "ApiKey([redacted])");
    }
}
