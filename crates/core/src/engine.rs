//! The database engines a tenant can ask for.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One of the engines of the spec. Adding an engine means adding a variant here and a driver
/// module in the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Mariadb,
    Postgres,
    Mongo,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Mariadb, Engine::Postgres, Engine::Mongo];

    /// The name used in the API, in configuration keys and in metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Mariadb => "mariadb",
            Engine::Postgres => "postgres",
            Engine::Mongo => "mongo",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine `{0}`: expected one of mariadb, postgres, mongo")]
pub struct UnknownEngine(pub String);

impl FromStr for Engine {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEngine(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_spec_names() {
        for e in Engine::ALL {
            assert_eq!(e.as_str().parse::<Engine>(), Ok(e));
        }
        assert!("MariaDB".parse::<Engine>().is_err());
        assert!("mysql".parse::<Engine>().is_err());
    }
}
