//! Engine drivers: the only code that runs DDL on tenant database servers.
//!
//! One enum, one module per engine. Every operation is idempotent, so a job that is run again
//! after a crash converges on the same end state instead of failing or duplicating, and every
//! destructive operation first checks hepdb's ownership mark on the object.

mod mariadb;

use hepdb_core::{
    DatabaseId, Engine,
    naming::EngineNames,
    secret::Password,
    settings::{EngineSettings, EnginesSettings},
};

pub use mariadb::MariaDb;

/// An engine object hepdb manages: a database and its user, tied to a metadata row.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: DatabaseId,
    pub names: EngineNames,
}

impl Target {
    /// The ownership mark stored on the engine object (MariaDB: the database comment).
    pub fn mark(&self) -> String {
        format!("hepdb:{}", self.id)
    }
}

/// Why an engine operation failed. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Cannot reach the server, or the provisioner cannot log in: nothing was changed by us.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// An object with our generated name exists and does not carry our mark.
    #[error("engine object not owned by hepdb: {0}")]
    Conflict(String),
    #[error("engine operation failed: {0}")]
    Failed(String),
}

/// A driver for one engine server, built from its settings.
#[derive(Debug, Clone)]
pub enum EngineDriver {
    Mariadb(MariaDb),
}

impl EngineDriver {
    pub fn from_settings(engine: Engine, settings: &EngineSettings) -> Result<Self, EngineError> {
        match engine {
            Engine::Mariadb => Ok(Self::Mariadb(MariaDb::new(settings.admin_url.expose())?)),
            Engine::Postgres | Engine::Mongo => Err(EngineError::Failed(format!(
                "the {engine} engine is not implemented by this worker"
            ))),
        }
    }

    /// Creates the database (marked as ours) and its user with `password`, granted on that
    /// database only, then proves the password logs in. Converges from any partial state a
    /// crash of an earlier attempt could leave.
    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        match self {
            Self::Mariadb(d) => d.create(target, password).await,
        }
    }

    /// Sets the user's password in place (never drop and recreate) and proves it logs in.
    pub async fn set_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        match self {
            Self::Mariadb(d) => d.set_password(target, password).await,
        }
    }

    /// Logs in as the tenant user; `Ok(false)` when the server refuses the password.
    pub async fn can_login(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        match self {
            Self::Mariadb(d) => d.can_login(target, password).await,
        }
    }

    /// Drops the user and database if, and only if, the database carries our mark. Nothing
    /// to drop is fine.
    pub async fn drop_owned(&self, target: &Target) -> Result<(), EngineError> {
        match self {
            Self::Mariadb(d) => d.drop_owned(target).await,
        }
    }

    /// Sets the password without the login check: used to put back the previous password when
    /// a rotate fails half-way.
    pub async fn restore_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        match self {
            Self::Mariadb(d) => d.alter_password(target, password).await,
        }
    }

    /// Round trip with the provisioner account, for readiness.
    pub async fn ping(&self) -> Result<(), EngineError> {
        match self {
            Self::Mariadb(d) => d.ping().await,
        }
    }
}

/// The driver of every enabled engine.
#[derive(Debug, Clone)]
pub struct Engines {
    drivers: Vec<(Engine, EngineDriver)>,
}

impl Engines {
    pub fn from_settings(settings: &EnginesSettings) -> Result<Self, EngineError> {
        let drivers = settings
            .enabled()
            .map(|e| EngineDriver::from_settings(e, settings.get(e)).map(|d| (e, d)))
            .collect::<Result<_, _>>()?;
        Ok(Self { drivers })
    }

    pub fn get(&self, engine: Engine) -> Option<&EngineDriver> {
        self.drivers
            .iter()
            .find(|(e, _)| *e == engine)
            .map(|(_, d)| d)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Engine, &EngineDriver)> {
        self.drivers.iter().map(|(e, d)| (*e, d))
    }
}
