//! Friendly names chosen by users, and the connection-level names hepdb generates.
//!
//! Generated names are the only identifiers that reach engine DDL, so their types can only be
//! built from validated parts: a value of [`EngineNames`] is always safe to splice into SQL.

use std::fmt;

use crate::random;

/// The longest friendly name the spec allows.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a friendly label: 1 to 63 letters, digits, `_` or `-`, starting with a letter or digit.
/// The error is the message shown to the user (400, no code, as the spec's table says).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is required (1 to 63 characters)".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err("name must be at most 63 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("name may contain only letters, digits, underscore and dash".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("name must start with a letter or digit".into());
    }
    Ok(())
}

/// The 10-hex-digit part of an account's names, fixed when the account is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTag(String);

impl DbTag {
    /// A fresh random tag (40 bits).
    pub fn generate() -> Self {
        Self(random::hex(5))
    }

    /// Accepts exactly 10 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 10
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `um_<tag>_<n>` and `dum_<tag>_<n>`: the database and user on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNames {
    db_name: String,
    db_user: String,
}

impl EngineNames {
    /// The names of an account's `seq`-th database.
    pub fn new(tag: &DbTag, seq: u32) -> Self {
        Self {
            db_name: format!("um_{}_{seq}", tag.as_str()),
            db_user: format!("dum_{}_{seq}", tag.as_str()),
        }
    }

    /// Re-validates names read back from metadata before they go near DDL.
    pub fn parse(db_name: &str, db_user: &str) -> Option<Self> {
        let (tag, seq) = db_name.strip_prefix("um_")?.split_once('_')?;
        let tag = DbTag::parse(tag)?;
        let seq: u32 = seq
            .parse()
            .ok()
            .filter(|_| seq.bytes().all(|b| b.is_ascii_digit()))?;
        let names = Self::new(&tag, seq);
        (names.db_user == db_user && names.db_name == db_name).then_some(names)
    }

    /// The names of an engine object hepdb lists as marked: a database `um_…` or a user or
    /// role `dum_…` names both.
    pub fn of_object(object: &str) -> Option<Self> {
        let db_name = object.strip_prefix('d').unwrap_or(object);
        Self::parse(db_name, &format!("d{db_name}"))
    }

    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    pub fn db_user(&self) -> &str {
        &self.db_user
    }
}

impl fmt::Display for EngineNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.db_name, self.db_user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in ["my-app", "a", "0db", "A_b-9", &"x".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "-x",
            "_x",
            "has space",
            "dot.ted",
            "é",
            "a;drop",
            &"x".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_scheme_and_round_trip() {
        let tag = DbTag::parse("0a1b2c3d4e").unwrap();
        let names = EngineNames::new(&tag, 1);
        assert_eq!(names.db_name(), "um_0a1b2c3d4e_1");
        assert_eq!(names.db_user(), "dum_0a1b2c3d4e_1");
        assert_eq!(
            EngineNames::parse("um_0a1b2c3d4e_1", "dum_0a1b2c3d4e_1"),
            Some(names.clone())
        );
        assert_eq!(
            EngineNames::parse("um_0a1b2c3d4e_1", "dum_0a1b2c3d4e_2"),
            None
        );
        assert_eq!(
            EngineNames::parse("um_0A1B2C3D4E_1", "dum_0A1B2C3D4E_1"),
            None
        );
        assert_eq!(
            EngineNames::parse("um_0a1b2c3d4e_1`", "dum_0a1b2c3d4e_1`"),
            None
        );
        assert_eq!(
            EngineNames::parse("um_0a1b2c3d4e_+1", "dum_0a1b2c3d4e_+1"),
            None
        );
        let fresh = DbTag::generate();
        assert!(DbTag::parse(fresh.as_str()).is_some());
        for object in ["um_0a1b2c3d4e_1", "dum_0a1b2c3d4e_1"] {
            assert_eq!(EngineNames::of_object(object), Some(names.clone()));
        }
        for other in [
            "xum_0a1b2c3d4e_1",
            "dum_0a1b2c3d4e_1_frozen",
            "ddum_0a1b2c3d4e_1",
        ] {
            assert_eq!(EngineNames::of_object(other), None, "{other}");
        }
    }
}
