//! ULID identifiers (the spec's `01HV...`), one type per kind so they cannot be mixed up.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use ulid::Ulid;

macro_rules! ulid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Ulid);

        impl $name {
            /// A fresh id; ULIDs sort by creation time.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Ulid::new())
            }

            /// The id as a number (a cheap map key).
            pub fn as_u128(&self) -> u128 {
                self.0.0
            }

            /// The id's canonical 26-character form, as stored and as shown in the API.
            pub fn to_text(&self) -> String {
                self.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Ulid::from_string(s).map(Self).map_err(|_| InvalidId)
            }
        }
    };
}

/// A string that is not a ULID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

ulid_id!(
    /// A tenant account (the owner of keys and databases).
    AccountId
);
ulid_id!(
    /// A bearer API key's public id (never the key itself).
    KeyId
);
ulid_id!(
    /// A managed database.
    DatabaseId
);
ulid_id!(
    /// A platform token's public id (never the token itself).
    PlatformTokenId
);
ulid_id!(
    /// One create or rotate job; also the AMQP correlation id.
    JobId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = DatabaseId::new();
        assert_eq!(id.to_text().len(), 26);
        assert_eq!(id.to_text().parse::<DatabaseId>(), Ok(id));
        assert_eq!("not-an-id".parse::<DatabaseId>(), Err(InvalidId));
    }
}
