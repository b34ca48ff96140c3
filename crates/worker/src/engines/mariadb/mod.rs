//! MariaDB: one database and one user per tenant database.
//!
//! The provisioner holds no global privilege ([`MariaDb::bootstrap`]): `ALL ... WITH GRANT
//! OPTION` on `um\_%`.* (create, grant, drop tenant databases), read and write on its ownership
//! registry `hepdb.owners`, and `EXECUTE` on the `hepdb.*` definer procedures that create,
//! alter, lock and drop `dum_` users of claimed databases and measure sizes.
//!
//! Ownership is a claim in `hepdb.owners` (`db_name`, `hepdb:<id>`), written before the
//! database is created and removed after it is dropped. Tenants have no right on the registry,
//! so nothing a tenant does in its database (its comment, dropping and recreating it) changes
//! what hepdb can prove. A user or database with our generated name but no claim of ours is
//! someone else's and is never touched.
//!
//! Passwords reach the server only as `mysql_native_password` hashes, never in clear text.

mod bootstrap;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, prelude::Queryable};
use sha1::{Digest, Sha1};

use super::{CONNECT_TIMEOUT, EngineError, Target};
use hepdb_core::secret::Password;

/// ER_DB_CREATE_EXISTS
const DB_EXISTS: u16 = 1007;
/// ER_DUP_ENTRY
const DUPLICATE_KEY: u16 = 1062;
/// ER_CANNOT_USER: CREATE USER of an existing user, DROP/ALTER of a missing one.
const CANNOT_USER: u16 = 1396;
/// ER_ACCESS_DENIED_ERROR
const ACCESS_DENIED: u16 = 1045;
/// ER_DBACCESS_DENIED_ERROR: the user exists but has no rights on the database.
const DB_ACCESS_DENIED: u16 = 1044;
/// ER_ACCESS_DENIED_NO_PASSWORD_ERROR: how some servers refuse a user that no longer exists.
const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
/// ER_ACCOUNT_HAS_BEEN_LOCKED
const ACCOUNT_LOCKED: u16 = 4151;
/// ER_NONEXISTING_GRANT: a REVOKE of rights the user no longer has.
const NO_SUCH_GRANT: u16 = 1141;
/// ER_SPECIFIC_ACCESS_DENIED_ERROR: what the `hepdb.*` procedures raise for a name that is
/// not a claimed tenant user.
const NOT_OURS: u16 = 1227;
/// ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS, ER_USER_LIMIT_REACHED: the server or the
/// account is at its connection limit.
const CONNECTION_LIMITS: [u16; 3] = [1040, 1203, 1226];
/// ER_SERVER_SHUTDOWN, ER_QUERY_INTERRUPTED, ER_CONNECTION_KILLED, ER_STATEMENT_TIMEOUT,
/// ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK: the statement was cut short; what it did is unknown,
/// and trying again later is the answer.
const INTERRUPTED: [u16; 6] = [1053, 1317, 1927, 1969, 1205, 1213];
/// What a database over its storage quota keeps: read, and the means to free space.
const RESTRICTED_PRIVILEGES: &str = "SELECT, SHOW VIEW, DELETE, DROP";
/// Settings every provisioner session starts with: strict, no implicit user creation, and
/// bounded statements.
const SESSION_SETUP: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,\
     NO_AUTO_CREATE_USER', max_statement_time = 30, lock_wait_timeout = 20, autocommit = 1";

#[derive(Clone)]
pub struct MariaDb {
    pool: Pool,
    opts: Opts,
    /// `MAX_USER_CONNECTIONS` of every tenant user.
    connection_limit: u32,
    /// How long after sending a user change the server may still start it.
    deadline_window: std::time::Duration,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("host", &self.opts.ip_or_hostname())
            .field("port", &self.opts.tcp_port())
            .finish()
    }
}

/// A MariaDB URL's options. TLS, verified with rustls: `require_ssl=true` (mysql_async's own
/// option: the built-in roots), or `sslrootcert=/path/ca.pem`, which trusts exactly that CA and
/// implies `require_ssl` (as on PostgreSQL URLs).
pub fn opts(url: &str) -> Result<Opts, EngineError> {
    hepdb_store::tls::install_crypto_provider();
    let (url, root) = hepdb_core::url::take_param(url, "sslrootcert");
    let opts = Opts::from_url(&url)
        .map_err(|_| EngineError::Failed("invalid MariaDB admin URL".into()))?;
    // TCP, as tenants connect; never silently switch to the local socket.
    // A pooled session is not reset when it goes back to the pool (mysql_async's default):
    // the reset threw away its prepared statements, so every call was prepared again (a round
    // trip more per statement), and it reset the session's settings to the server's, which
    // `init` never put back. Nothing here leaves session state a later call could trip on:
    // each deadline is set right before the call that reads it, and mysql_async drops a
    // pending result and rolls back an open transaction before pooling a session either way.
    // `setup` rather than `init`, so the settings would also survive a reset.
    let mut builder = OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .pool_opts(mysql_async::PoolOpts::default().with_reset_connection(false))
        .setup(vec![SESSION_SETUP]);
    if let Some(root) = root {
        let ca = std::path::PathBuf::from(root);
        if !ca.is_file() {
            return Err(EngineError::Failed(format!(
                "sslrootcert {}: no such file",
                ca.display()
            )));
        }
        builder = builder.ssl_opts(Some(
            mysql_async::SslOpts::default()
                .with_root_certs(vec![ca.into()])
                .with_disable_built_in_roots(true),
        ));
    }
    Ok(builder.into())
}

/// Maps a driver error. No statement carries a clear-text password (only hashes), so server
/// messages are kept.
fn classify(e: mysql_async::Error, what: &str) -> EngineError {
    match e {
        mysql_async::Error::Server(s) if s.code == ACCESS_DENIED => {
            EngineError::Unavailable(format!("{what}: provisioner login refused"))
        }
        mysql_async::Error::Server(s) if INTERRUPTED.contains(&s.code) => {
            EngineError::Unavailable(format!("{what}: interrupted: {}", s.message))
        }
        mysql_async::Error::Server(s) if CONNECTION_LIMITS.contains(&s.code) => {
            EngineError::Unavailable(format!("{what}: server refuses connections: {}", s.message))
        }
        mysql_async::Error::Server(s) if s.code == NOT_OURS => {
            EngineError::Conflict(format!("{what}: {}", s.message))
        }
        mysql_async::Error::Server(s) => {
            EngineError::Failed(format!("{what}: server error {}: {}", s.code, s.message))
        }
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
            EngineError::Unavailable(format!("{what}: {e}"))
        }
        other => EngineError::Failed(format!("{what}: {other}")),
    }
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

fn user(target: &Target) -> String {
    format!("'{}'@'%'", target.names.db_user())
}

/// The database name for GRANT and REVOKE, where `_` is a wildcard: escaped so that it names
/// exactly this database.
fn exact_grant_name(target: &Target) -> String {
    target.names.db_name().replace('_', "\\_")
}

/// The `mysql_native_password` hash of a hepdb-generated password (`*` and the upper-case hex
/// of SHA1(SHA1(password))): what the server stores, so the clear text never reaches it.
fn native_hash(password: &Password) -> Result<String, EngineError> {
    if !password.is_alphanumeric() {
        return Err(EngineError::Failed(
            "refusing a password with unexpected characters".into(),
        ));
    }
    Ok(native_hash_of(password.expose().as_bytes()))
}

fn native_hash_of(password: &[u8]) -> String {
    let twice = Sha1::digest(Sha1::digest(password));
    std::iter::once("*".to_owned())
        .chain(twice.iter().map(|b| format!("{b:02X}")))
        .collect()
}

/// What `hepdb.alter_user` changes; `None` leaves a field as it is.
#[derive(Default)]
struct UserChange {
    hash: Option<String>,
    connection_limit: Option<u32>,
    locked: Option<bool>,
}

impl MariaDb {
    pub fn new(admin_url: &str, connection_limit: u32) -> Result<Self, EngineError> {
        let opts = opts(admin_url)?;
        Ok(Self {
            pool: Pool::new(opts.clone()),
            opts,
            connection_limit,
            deadline_window: super::DEFAULT_WINDOW,
        })
    }

    /// See [`super::EngineDriver::with_engine_timeout`].
    pub fn with_deadline_window(mut self, window: std::time::Duration) -> Self {
        self.deadline_window = window;
        self
    }

    async fn conn(&self) -> Result<Conn, EngineError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify(e, "connect").at_connect()),
            Err(_) => Err(EngineError::Unreachable("connect: timed out".into())),
        }
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        c.query_drop("SELECT 1")
            .await
            .map_err(|e| classify(e, "ping"))
    }

    /// The database's ownership claim: `None` when there is none.
    async fn claim(c: &mut Conn, target: &Target) -> Result<Option<String>, EngineError> {
        c.exec_first(
            "SELECT mark FROM hepdb.owners WHERE db_name = ?",
            (target.names.db_name(),),
        )
        .await
        .map_err(|e| classify(e, "read ownership registry"))
    }

    /// Claims the database name for `target`, or finds our claim from an earlier attempt.
    /// Returns whether this call claimed it.
    async fn ensure_claim(c: &mut Conn, target: &Target) -> Result<bool, EngineError> {
        let db = target.names.db_name();
        // The claim and whether a database of that name exists, in one round trip.
        let (mark, exists): (Option<String>, bool) = c
            .exec_first(
                "SELECT (SELECT mark FROM hepdb.owners WHERE db_name = ?), \
                 EXISTS (SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?)",
                (db, db),
            )
            .await
            .map_err(|e| classify(e, "read ownership registry"))?
            .ok_or_else(|| EngineError::Failed("read ownership registry: no row".into()))?;
        match mark {
            Some(m) if m == target.mark() => return Ok(false),
            Some(_) => return Err(EngineError::collision("database", db)),
            None if exists => return Err(EngineError::collision("database", db)),
            None => {}
        }
        match c
            .exec_drop(
                "INSERT INTO hepdb.owners (db_name, mark) VALUES (?, ?)",
                (db, target.mark()),
            )
            .await
        {
            Ok(()) => Ok(true),
            // Claimed concurrently by a duplicate delivery: fine only if it is our claim.
            Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => {
                if Self::claim(c, target).await?.as_deref() == Some(&target.mark()) {
                    Ok(false)
                } else {
                    Err(EngineError::collision("database", db))
                }
            }
            Err(e) => Err(classify(e, "claim ownership")),
        }
    }

    async fn release_claim(c: &mut Conn, target: &Target) -> Result<(), EngineError> {
        c.exec_drop(
            "DELETE FROM hepdb.owners WHERE db_name = ? AND mark = ?",
            (target.names.db_name(), target.mark()),
        )
        .await
        .map_err(|e| classify(e, "release ownership claim"))
    }

    /// Sets the deadline the next `hepdb.alter_user` on this session reads: `window` from now.
    /// On the same session, right before the call: a late delivery of the pair carries its
    /// own, past, deadline.
    async fn set_deadline(&self, c: &mut Conn) -> Result<(), EngineError> {
        let not_after = super::not_after(self.deadline_window);
        c.query_drop(format!("SET @hepdb_not_after = {not_after}"))
            .await
            .map_err(|e| classify(e, "set the statement deadline"))
    }

    async fn alter_user(
        &self,
        c: &mut Conn,
        target: &Target,
        change: UserChange,
    ) -> Result<(), EngineError> {
        self.set_deadline(c).await?;
        c.exec_drop(
            "CALL hepdb.alter_user(?, ?, ?, ?)",
            (
                target.names.db_user(),
                change.hash,
                change.connection_limit,
                change.locked,
            ),
        )
        .await
        .map_err(|e| classify(e, "alter user"))
    }

    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        // From the start of the step, which the worker bounds: however long connecting and
        // claiming take, the engine refuses these calls before the worker gives up on them.
        let not_after = super::not_after(self.deadline_window);
        let mut c = self.conn().await?;
        let db = target.names.db_name();
        let hash = native_hash(password)?;
        let claimed_now = Self::ensure_claim(&mut c, target).await?;
        // The deadline hepdb.create_database and hepdb.create_user read, in a variable of its
        // own (earlier workers never set it, so their creates are not held to a deadline
        // another call left on a pooled session), and the call, in one text batch (the name is
        // a generated one): the deadline is read when the statement itself arrives, not when a
        // prepared one is set up. An error names the failing statement's code either way.
        match c
            .query_drop(format!(
                "SET @hepdb_create_not_after = {not_after}; CALL hepdb.create_database('{db}')"
            ))
            .await
        {
            Ok(()) => {}
            // Ours: our claim was there first (an earlier attempt, or a duplicate delivery).
            Err(e) if server_code(&e) == Some(DB_EXISTS) => {}
            Err(e) => return Err(classify(e, "create database")),
        }
        let created = c
            .exec_drop(
                "CALL hepdb.create_user(?, ?, ?)",
                (target.names.db_user(), &hash, self.connection_limit),
            )
            .await;
        match created {
            Ok(()) => {}
            Err(e) if server_code(&e) == Some(CANNOT_USER) => {
                if claimed_now {
                    // The user predates our claim, so it is not ours: undo our part only.
                    let conflict = EngineError::collision("user", target.names.db_user());
                    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                        .await
                        .map_err(|e| classify(e, "undo create database"))?;
                    Self::release_claim(&mut c, target).await?;
                    return Err(conflict);
                }
                // Ours, from an earlier attempt: converge its password and limit.
                let change = UserChange {
                    hash: Some(hash),
                    connection_limit: Some(self.connection_limit),
                    locked: None,
                };
                self.alter_user(&mut c, target, change).await?;
            }
            Err(e) => return Err(classify(e, "create user")),
        }
        c.query_drop(format!(
            "GRANT ALL PRIVILEGES ON `{}`.* TO {}",
            exact_grant_name(target),
            user(target)
        ))
        .await
        .map_err(|e| classify(e, "grant"))?;
        drop(c);
        if self.can_login(target, password).await? {
            Ok(())
        } else {
            Err(EngineError::Failed("the new user does not log in".into()))
        }
    }

    pub async fn alter_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        let mut c = self.owned_conn(target).await?;
        let change = UserChange {
            hash: Some(native_hash(password)?),
            ..UserChange::default()
        };
        self.alter_user(&mut c, target, change).await
    }

    pub async fn can_login(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        let opts = OptsBuilder::from_opts(self.opts.clone())
            .user(Some(target.names.db_user()))
            .pass(Some(password.expose()))
            .db_name(Some(target.names.db_name()));
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(Ok(conn)) => {
                let _ = conn.disconnect().await;
                Ok(true)
            }
            Ok(Err(e))
                if matches!(
                    server_code(&e),
                    Some(
                        ACCESS_DENIED
                            | ACCESS_DENIED_NO_PASSWORD
                            | DB_ACCESS_DENIED
                            | ACCOUNT_LOCKED
                    )
                ) =>
            {
                Ok(false)
            }
            Ok(Err(e)) => Err(classify(e, "tenant login")),
            Err(_) => Err(EngineError::Unavailable("tenant login: timed out".into())),
        }
    }

    /// A provisioner connection, after proving by our claim that the target is ours.
    async fn owned_conn(&self, target: &Target) -> Result<Conn, EngineError> {
        let mut c = self.conn().await?;
        match Self::claim(&mut c, target).await? {
            Some(m) if m == target.mark() => Ok(c),
            Some(_) => Err(EngineError::collision("database", target.names.db_name())),
            None => Err(EngineError::Failed(format!(
                "database {} is not claimed by hepdb",
                target.names.db_name()
            ))),
        }
    }

    /// Runs statements on an owned target, then ends the user's sessions so that
    /// database-level privilege changes (which MariaDB applies at the next `USE`) and locks
    /// take effect now.
    async fn alter_owned(
        &self,
        target: &Target,
        what: &str,
        sql: &[String],
    ) -> Result<(), EngineError> {
        let mut c = self.owned_conn(target).await?;
        for statement in sql {
            match c.query_drop(statement).await {
                Ok(()) => {}
                // Nothing left to revoke: already done by an earlier attempt.
                Err(e) if server_code(&e) == Some(NO_SUCH_GRANT) => {}
                Err(e) => return Err(classify(e, what)),
            }
        }
        c.exec_drop("CALL hepdb.end_sessions(?)", (target.names.db_user(),))
            .await
            .map_err(|e| classify(e, "end sessions"))
    }

    /// Locks the account and takes every right on the database away: the events, views and
    /// routines the tenant defined run with its rights, and a locked account must have none.
    pub async fn lock_login(&self, target: &Target) -> Result<(), EngineError> {
        let mut c = self.owned_conn(target).await?;
        let change = UserChange {
            locked: Some(true),
            ..UserChange::default()
        };
        self.alter_user(&mut c, target, change).await?;
        drop(c);
        let sql = [format!(
            "REVOKE ALL PRIVILEGES ON `{}`.* FROM {}",
            exact_grant_name(target),
            user(target)
        )];
        self.alter_owned(target, "lock user", &sql).await
    }

    /// Unlocks the account. Its rights come back from `restore_writes` or `restrict_writes`,
    /// which [`super::EngineDriver::set_access`] runs first.
    pub async fn unlock_login(&self, target: &Target) -> Result<(), EngineError> {
        let mut c = self.owned_conn(target).await?;
        let change = UserChange {
            locked: Some(false),
            connection_limit: Some(self.connection_limit),
            ..UserChange::default()
        };
        self.alter_user(&mut c, target, change).await
    }

    pub async fn restrict_writes(&self, target: &Target) -> Result<(), EngineError> {
        let (exact, who) = (exact_grant_name(target), user(target));
        // Not atomic: a crash in between leaves no rights at all, and a retry converges.
        let sql = [
            format!("REVOKE ALL PRIVILEGES ON `{exact}`.* FROM {who}"),
            format!("GRANT {RESTRICTED_PRIVILEGES} ON `{exact}`.* TO {who}"),
        ];
        self.alter_owned(target, "restrict writes", &sql).await
    }

    pub async fn restore_writes(&self, target: &Target) -> Result<(), EngineError> {
        let sql = [format!(
            "GRANT ALL PRIVILEGES ON `{}`.* TO {}",
            exact_grant_name(target),
            user(target)
        )];
        self.alter_owned(target, "restore writes", &sql).await
    }

    pub async fn drop_owned(&self, target: &Target) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        let db = target.names.db_name();
        match Self::claim(&mut c, target).await? {
            // The user goes first, then the database, and the claim last: a crash anywhere
            // leaves the claim, so a retry still proves ownership and finishes.
            Some(m) if m == target.mark() => {
                c.exec_drop("CALL hepdb.end_sessions(?)", (target.names.db_user(),))
                    .await
                    .map_err(|e| classify(e, "end sessions"))?;
                c.exec_drop("CALL hepdb.drop_user(?)", (target.names.db_user(),))
                    .await
                    .map_err(|e| classify(e, "drop user"))?;
                c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await
                    .map_err(|e| classify(e, "drop database"))?;
                Self::release_claim(&mut c, target).await
            }
            Some(_) => Err(EngineError::collision("database", db)),
            None => Ok(()),
        }
    }

    /// Every claim in the ownership registry.
    pub async fn marked(&self) -> Result<Vec<super::Marked>, EngineError> {
        let mut c = self.conn().await?;
        let rows: Vec<(String, String)> = c
            .query("SELECT db_name, mark FROM hepdb.owners")
            .await
            .map_err(|e| classify(e, "read ownership registry"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(object, mark)| {
                Some(super::Marked {
                    id: super::parse_mark(&mark)?,
                    object,
                })
            })
            .collect())
    }

    /// On-disk bytes of every claimed database, empty ones included, in one call
    /// (`hepdb.database_sizes`: allocated tablespace files, not InnoDB statistics). A database
    /// with a table in an engine that cannot be measured (CSV) is left out.
    pub async fn sizes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        let mut c = self.conn().await?;
        let rows: Vec<(String, Option<i64>)> = c
            .query("CALL hepdb.database_sizes()")
            .await
            .map_err(|e| classify(e, "measure sizes"))?;
        // NULL: a table in an engine whose size cannot be read; left out, so unmeasured.
        Ok(rows
            .into_iter()
            .filter_map(|(db, bytes)| Some((db, bytes?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use mysql_async::{Pool, prelude::Queryable};

    /// A pooled session keeps the provisioner's settings and its prepared statements when it
    /// is used again. Against the machine's MariaDB (`HEPDB_TEST_MARIADB_URL`).
    #[tokio::test]
    async fn a_pooled_session_keeps_its_settings_and_statements() {
        let url = std::env::var("HEPDB_TEST_MARIADB_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let pool = Pool::new(super::opts(&url).unwrap());
        let mut ids = vec![];
        for round in 0..2u64 {
            let mut c = pool.get_conn().await.unwrap();
            let settings: (f64, u64, String, Option<u64>) = c
                .query_first(
                    "SELECT @@session.max_statement_time, @@session.lock_wait_timeout, \
                     @@session.sql_mode, @hepdb_probe",
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!((settings.0, settings.1), (30.0, 20), "round {round}");
            assert!(settings.2.contains("STRICT_ALL_TABLES"), "{}", settings.2);
            // What the first round left: the session was not reset in between.
            assert_eq!(settings.3, round.checked_sub(1).map(|_| 1), "round {round}");
            c.exec_drop("SET @hepdb_probe = ?", (1,)).await.unwrap();
            let prepared: (String, u64) = c
                .query_first("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'")
                .await
                .unwrap()
                .unwrap();
            // Prepared once, in the first round; the second finds it in the session's cache.
            assert_eq!(prepared.1, 1, "round {round}");
            ids.push(c.id());
            drop(c);
            // A session goes back to the pool in the background.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        // The same session both times, so these were not just a new session's.
        assert_eq!(ids[0], ids[1]);
        pool.disconnect().await.unwrap();
    }
}
