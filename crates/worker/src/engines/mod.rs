//! Engine drivers: the only code that runs DDL on tenant database servers.
//!
//! One enum, one module per engine: adding an engine means a variant of [`EngineDriver`] and a
//! module here. Every operation is idempotent, so a job that is run again after a crash
//! converges on the same end state instead of failing or duplicating, and every destructive
//! operation first checks hepdb's ownership mark on the object.

mod mariadb;
mod mongo;
mod postgres;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hepdb_core::{
    Access, DatabaseId, Engine,
    naming::EngineNames,
    secret::Password,
    settings::{EnginesSettings, Host},
};

pub use mariadb::{MariaDb, opts as mariadb_opts};
pub use mongo::Mongo;
pub use postgres::Postgres;

/// How long any engine connection may take before the server counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An engine object hepdb manages: a database and its user, tied to a metadata row.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: DatabaseId,
    pub names: EngineNames,
}

impl Target {
    /// The ownership mark stored on the engine objects (a comment, or the user's custom data).
    pub fn mark(&self) -> String {
        format!("hepdb:{}", self.id)
    }
}

/// An engine object that carries hepdb's mark: the metadata id it names, and the object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Marked {
    pub id: String,
    pub object: String,
}

/// How long after the worker sends a change to a user or role the engine may still start it:
/// a quarter (at most 5 s) short of the engine timeout, so that when the worker gives up on a
/// call, the engine refuses it should the network still deliver it (with that much room for
/// the two clocks to disagree).
pub(crate) fn deadline_window(engine_timeout: Duration) -> Duration {
    engine_timeout - (engine_timeout / 4).min(Duration::from_secs(5))
}

/// The window of a driver nobody configured: that of the default engine timeout (45 s).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(40);

/// The deadline of a user or role change sent now, in seconds since the epoch (fractional).
pub(crate) fn not_after(window: Duration) -> f64 {
    (SystemTime::now() + window)
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Parses `hepdb:<id>` marks; anything else is not ours.
pub(crate) fn parse_mark(mark: &str) -> Option<String> {
    let id = mark.strip_prefix("hepdb:")?;
    id.parse::<DatabaseId>().ok().map(|_| id.to_owned())
}

/// What `engine bootstrap` did, for the operator.
#[derive(Debug, serde::Serialize)]
pub struct Bootstrapped {
    pub provisioner: String,
    /// Tenant databases of an earlier installation brought up to this one's ownership rules.
    pub upgraded_databases: usize,
    /// The server's `max_connections`.
    pub max_connections: u32,
    /// Whether the provisioner has connections of its own that tenants cannot take (MariaDB:
    /// its URL names the server's `extra_port`; PostgreSQL 16+: `reserved_connections` and
    /// `pg_use_reserved_connections`, which bootstrap grants it).
    pub reserved_door: bool,
}

/// Why an engine operation failed. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The provisioner could not even connect: no statement was sent, nothing changed.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The server failed or went away during the operation (or refused it for lack of
    /// connections): what it did before is unknown.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// An object with our generated name exists and does not carry our mark.
    #[error("engine object not owned by hepdb: {0}")]
    Conflict(String),
    #[error("engine operation failed: {0}")]
    Failed(String),
}

impl EngineError {
    /// A failure to connect, which means nothing was sent: [`EngineError::Unreachable`].
    pub(crate) fn at_connect(self) -> Self {
        match self {
            EngineError::Unavailable(m) => EngineError::Unreachable(m),
            other => other,
        }
    }

    /// After a change was sent, not even a failure to connect proves nothing changed.
    fn after_change(self) -> Self {
        match self {
            EngineError::Unreachable(m) => EngineError::Unavailable(m),
            other => other,
        }
    }

    /// Logs a name collision as an operator alert and returns the error for it.
    pub(crate) fn collision(what: &str, name: &str) -> Self {
        tracing::error!(
            alert = true,
            object = what,
            name,
            "name collision: an engine object hepdb did not create exists; leaving it untouched"
        );
        EngineError::Conflict(format!("{what} {name} exists and is not ours"))
    }
}

/// A driver for one engine server.
#[derive(Debug, Clone)]
pub enum EngineDriver {
    Mariadb(MariaDb),
    Postgres(Postgres),
    Mongo(Mongo),
}

/// Calls the same method on whichever driver this is.
macro_rules! each {
    ($self:ident, $d:ident => $call:expr) => {
        match $self {
            EngineDriver::Mariadb($d) => $call,
            EngineDriver::Postgres($d) => $call,
            EngineDriver::Mongo($d) => $call,
        }
    };
}

impl EngineDriver {
    /// Builds the driver for `engine` from its provisioner URL. Connections open lazily, so
    /// this succeeds while the server is down.
    pub fn new(
        engine: Engine,
        admin_url: &str,
        connection_limit: u32,
    ) -> Result<Self, EngineError> {
        Ok(match engine {
            Engine::Mariadb => Self::Mariadb(MariaDb::new(admin_url, connection_limit)?),
            Engine::Postgres => Self::Postgres(Postgres::new(admin_url, connection_limit)?),
            // MongoDB has no per-user connection limit (README, "Tenant isolation").
            Engine::Mongo => Self::Mongo(Mongo::new(admin_url)?),
        })
    }

    /// The driver of one configured host.
    /// Sets how long the driver waits for one engine call (`worker.engine_timeout_secs`), from
    /// which the engine's own deadline for user and role changes follows ([`deadline_window`]).
    pub fn with_engine_timeout(self, timeout: Duration) -> Self {
        let window = deadline_window(timeout);
        match self {
            Self::Mariadb(d) => Self::Mariadb(d.with_deadline_window(window)),
            Self::Postgres(d) => Self::Postgres(d.with_deadline_window(window)),
            // MongoDB's user changes have no server-side routine to carry a deadline (README).
            Self::Mongo(d) => Self::Mongo(d),
        }
    }

    pub fn for_host(host: &Host<'_>) -> Result<Self, EngineError> {
        let url = host
            .admin_url()
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        Self::new(host.engine, url, host.settings.tenant_connection_limit)
    }

    /// Creates the database and its user with `password`, with rights on that database only,
    /// marks them as ours, then proves the password logs in. Converges from any partial state
    /// a crash of an earlier attempt could leave; refuses (and leaves alone) a colliding object
    /// it did not create.
    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        each!(self, d => d.create(target, password).await)
    }

    /// Sets the user's password in place (never drop and recreate) and proves it logs in.
    pub async fn set_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        self.restore_password(target, password).await?;
        match self.can_login(target, password).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::Failed(
                "the new password does not log in".into(),
            )),
            Err(e) => Err(e.after_change()),
        }
    }

    /// Sets the password without the login check: also used to put back the previous password
    /// when a rotate fails half-way.
    pub async fn restore_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        each!(self, d => d.alter_password(target, password).await)
    }

    /// Logs in as the tenant user to its database; `Ok(false)` when the server refuses.
    pub async fn can_login(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        each!(self, d => d.can_login(target, password).await)
    }

    /// Drops the database and user if, and only if, they carry our mark. Nothing to drop is
    /// fine.
    pub async fn drop_owned(&self, target: &Target) -> Result<(), EngineError> {
        each!(self, d => d.drop_owned(target).await)
    }

    /// Stops the user from logging in and ends its open sessions; data and password are kept.
    pub async fn lock_login(&self, target: &Target) -> Result<(), EngineError> {
        each!(self, d => d.lock_login(target).await)
    }

    /// Lets the user log in again, with the password it had.
    pub async fn unlock_login(&self, target: &Target) -> Result<(), EngineError> {
        each!(self, d => d.unlock_login(target).await)
    }

    /// Takes away the right to add data while keeping read and the means to free space
    /// (README lists exactly what each engine keeps).
    pub async fn restrict_writes(&self, target: &Target) -> Result<(), EngineError> {
        each!(self, d => d.restrict_writes(target).await)
    }

    /// Gives back full rights on the database.
    pub async fn restore_writes(&self, target: &Target) -> Result<(), EngineError> {
        each!(self, d => d.restore_writes(target).await)
    }

    /// Brings the user's access to `access`, from whatever it is now. Rights are set before a
    /// login is unlocked, so there is no moment of more access than wanted.
    pub async fn set_access(&self, target: &Target, access: Access) -> Result<(), EngineError> {
        if let Self::Mongo(d) = self {
            // MongoDB has one switch for both: the user's roles.
            return d.set_access(target, access).await;
        }
        match access {
            Access::Locked => self.lock_login(target).await,
            Access::Restricted => {
                self.restrict_writes(target).await?;
                self.unlock_login(target).await
            }
            Access::Full => {
                self.restore_writes(target).await?;
                self.unlock_login(target).await
            }
        }
    }

    /// The on-disk size in bytes of every hepdb database on the server, by name, in one query.
    pub async fn sizes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        each!(self, d => d.sizes().await)
    }

    /// Every object on the server that carries a hepdb mark (for the reconciler's orphan scan).
    pub async fn marked(&self) -> Result<Vec<Marked>, EngineError> {
        each!(self, d => d.marked().await)
    }

    /// Round trip with the provisioner account, for readiness.
    pub async fn ping(&self) -> Result<(), EngineError> {
        each!(self, d => d.ping().await)
    }
}

/// One driver per configured host of every enabled engine, by host name.
#[derive(Debug, Clone)]
pub struct Engines {
    drivers: Vec<(String, EngineDriver)>,
}

impl Engines {
    pub fn from_settings(settings: &EnginesSettings) -> Result<Self, EngineError> {
        let drivers = settings
            .enabled_hosts()
            .into_iter()
            .map(|h: Host<'_>| EngineDriver::for_host(&h).map(|d| (h.name.to_owned(), d)))
            .collect::<Result<_, _>>()?;
        Ok(Self { drivers })
    }

    /// Every driver with the engine timeout set (see [`EngineDriver::with_engine_timeout`]).
    pub fn with_engine_timeout(self, timeout: Duration) -> Self {
        Self {
            drivers: self
                .drivers
                .into_iter()
                .map(|(name, d)| (name, d.with_engine_timeout(timeout)))
                .collect(),
        }
    }

    /// The driver of the host named `host`, if this worker has it configured.
    pub fn get(&self, host: &str) -> Option<&EngineDriver> {
        self.drivers
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, d)| d)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &EngineDriver)> {
        self.drivers.iter().map(|(n, d)| (n.as_str(), d))
    }
}
