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
pub mod platform;
pub mod quota;
pub mod reconcile;
pub mod retention;
pub mod schema;
pub mod sealing;
pub mod tls;

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
    /// A stored password that no configured master key opens.
    #[error("{0}")]
    Unsealable(String),
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

/// Makes the server notice a client that is gone (its host died, the network dropped it) within
/// about half a minute, and end its session: a worker's hold on a database is a session-level
/// lock, which must not outlive the worker by the hours the kernel's default keepalive takes.
/// Set only where the server knows the setting (`client_connection_check_interval` is
/// PostgreSQL 14+).
const DEAD_CLIENT_DETECTION: &str = "SELECT pg_catalog.set_config(s.name, s.value, false) \
     FROM (VALUES ('tcp_keepalives_idle', '15'), ('tcp_keepalives_interval', '5'), \
                  ('tcp_keepalives_count', '3'), ('client_connection_check_interval', '5000')) \
          AS s(name, value) \
     WHERE s.name IN (SELECT name FROM pg_catalog.pg_settings)";

impl Store {
    /// Builds the pool; connections are opened lazily, so this succeeds while the database is
    /// down. A URL with `sslmode=require` (or `sslrootcert=`) connects over verified TLS
    /// ([`tls`]); a CA file that cannot be read fails here, at start.
    pub fn connect(url: &str, pool_size: usize) -> Result<Self> {
        let target = std::sync::Arc::new(
            tls::parse(url).map_err(|e| StoreError::Unavailable(format!("metadata.url: {e}")))?,
        );
        // No test query on every checkout: it was a round trip per request. A connection
        // whose socket the server closed is still discarded at checkout; one that dies
        // mid-statement fails that statement as `Unavailable` (503 in the envelope, or a job
        // retry) and is not returned to the pool.
        let mut config = ManagerConfig::default();
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |_url| {
            let target = target.clone();
            Box::pin(async move {
                use diesel_async::SimpleAsyncConnection;
                let mut conn = tls::diesel_connection(&target).await?;
                conn.batch_execute(DEAD_CLIENT_DETECTION)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                Ok(conn)
            })
        });
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
