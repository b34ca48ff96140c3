//! Rows as read from metadata, with typed accessors for the fields other crates interpret.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use hepdb_core::{
    DatabaseId, DatabaseState, Engine, JobState, naming::EngineNames, state::JobKind,
};

use crate::schema::{accounts, api_keys, databases, engine_hosts, jobs};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub db_tag: String,
    pub slots: i32,
    pub storage_mb: i64,
    pub db_access: bool,
    pub suspended: bool,
    pub next_db_seq: i32,
    pub created_at: DateTime<Utc>,
    /// The platform's own id for the owner (the platform API's `externalId`).
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub account_id: String,
    pub key_hash: Vec<u8>,
    pub enabled: bool,
    pub disabled_by_suspension: bool,
    pub created_at: DateTime<Utc>,
    pub label: String,
    /// Coarse: written at most once an hour per key.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked for good: the key never works again and cannot be enabled.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRow {
    /// Who switched the key off: `owner`, `suspension`, or nobody (`None`).
    pub fn disabled_by(&self) -> Option<&'static str> {
        match (self.enabled, self.disabled_by_suspension) {
            (true, _) => None,
            (false, true) => Some("suspension"),
            (false, false) => Some("owner"),
        }
    }
}

/// A database row. `password_sealed` is opaque here; only holders of the master key open it.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = databases)]
pub struct Database {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub engine: String,
    pub seq: i32,
    pub db_name: String,
    pub db_user: String,
    pub password_sealed: Vec<u8>,
    pub state: String,
    pub size_bytes: i64,
    pub size_refreshed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The engine server holding it (`engine_hosts.name`); every job for it goes there.
    pub host: String,
    /// The access its engine user has now (see [`hepdb_core::Access`]).
    pub engine_access: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("id", &self.id)
            .field("engine", &self.engine)
            .field("db_name", &self.db_name)
            .field("host", &self.host)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// An engine server as metadata knows it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = engine_hosts)]
pub struct EngineHost {
    pub name: String,
    pub engine: String,
    pub public_host: String,
    pub public_port: i32,
    pub capacity: i32,
    pub drained: bool,
    pub updated_at: DateTime<Utc>,
}

impl EngineHost {
    /// Host and port for connection strings.
    pub fn endpoint(&self) -> (&str, u16) {
        (
            &self.public_host,
            u16::try_from(self.public_port).unwrap_or_default(),
        )
    }
}

impl Database {
    pub fn database_id(&self) -> DatabaseId {
        self.id.parse().expect("metadata holds valid database ids")
    }

    pub fn engine(&self) -> Engine {
        self.engine
            .parse()
            .expect("metadata holds valid engines (CHECK constraint)")
    }

    pub fn engine_access(&self) -> hepdb_core::Access {
        self.engine_access
            .parse()
            .expect("metadata holds valid access levels (CHECK constraint)")
    }

    pub fn state(&self) -> DatabaseState {
        self.state
            .parse()
            .expect("metadata holds valid states (CHECK constraint)")
    }

    /// The engine names, re-validated: `None` means the row was tampered with, and such names
    /// must not reach DDL.
    pub fn names(&self) -> Option<EngineNames> {
        EngineNames::parse(&self.db_name, &self.db_user)
    }
}

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: String,
    pub database_id: Option<String>,
    pub kind: String,
    pub state: String,
    pub password_sealed: Option<Vec<u8>>,
    pub attempts: i32,
    pub error_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("database_id", &self.database_id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Job {
    pub fn kind(&self) -> JobKind {
        self.kind.parse().expect("metadata holds valid job kinds")
    }

    pub fn state(&self) -> JobState {
        self.state.parse().expect("metadata holds valid job states")
    }
}
