//! Metadata in PostgreSQL, through diesel-async: the only crate that knows the schema.
//!
//! Every function here is one short transaction or one statement. None of them holds a
//! transaction open across anything but the engine call it exists to guard (see
//! [`jobs::Held::run`]), and callers never wrap them in timeouts or `select!`, so a
//! transaction future is never cancelled half-way.
//!
//! The calls on the request and job paths each open a `metadata.<call>` span, so a trace shows
//! where a request spent its time.

pub mod accounts;
pub mod audit;
pub mod databases;
pub mod hosts;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod models;
pub mod quota;
pub mod reconcile;
pub mod schema;

use diesel_async::{
    AsyncPgConnection, RunQueryDsl,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
        deadpool::{Object, Pool},
    },
};

/// A pooled handle on the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<AsyncPgConnection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

/// A metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had: the metadata database is down or unreachable.
    #[error("metadata database unavailable: {0}")]
    Unavailable(String),
    /// A guarded update did not touch exactly the one row it meant to.
    #[error("guarded update failed: {0}")]
    Guard(String),
    #[error("metadata query failed: {0}")]
    Query(diesel::result::Error),
}

impl From<diesel::result::Error> for StoreError {
    /// A statement that failed because the connection is gone (the server restarted or the
    /// network dropped it) means the metadata database is unavailable, not that hepdb is broken.
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
            | Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::BrokenTransactionManager => Self::Unavailable(e.to_string()),
            Error::DatabaseError(_, info)
                if info.message().starts_with("terminating connection") =>
            {
                Self::Unavailable(e.to_string())
            }
            _ => Self::Query(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl Store {
    /// Builds the pool; connections are opened lazily, so this succeeds while the database is down.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self> {
        // No test query on every checkout: it was a round trip per request. A connection
        // whose socket the server closed is still discarded at checkout; one that dies
        // mid-statement fails that statement as `Unavailable` (503 in the envelope, or a job
        // retry) and is not returned to the pool.
        let mut config = ManagerConfig::default();
        config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool })
    }

    pub(crate) async fn conn(&self) -> Result<Object<AsyncPgConnection>> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// One round trip, for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }
}

/// Turns an `UPDATE ... WHERE <guard>` row count into an error unless exactly one row changed.
pub(crate) fn exactly_one(rows: usize, what: &str) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Guard(format!(
            "{what}: expected 1 row, touched {rows}"
        )))
    }
}
