//! MariaDB: one database and one user per tenant database.
//!
//! The provisioner account holds `CREATE USER` and `ALL ... WITH GRANT OPTION` on `um\_%`.*
//! only ([`MariaDb::bootstrap`]); it cannot touch any other schema. Ownership is the database
//! comment `hepdb:<id>`. Because the database is always created before its user, a user that
//! already exists while our database did not is someone else's, and we refuse.

use mysql_async::{Conn, Opts, OptsBuilder, Pool, prelude::Queryable};

use super::{CONNECT_TIMEOUT, EngineError, Target};
use hepdb_core::secret::Password;

/// ER_DB_CREATE_EXISTS
const DB_EXISTS: u16 = 1007;
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
/// What a database over its storage quota keeps: read, and the means to free space.
const RESTRICTED_PRIVILEGES: &str = "SELECT, SHOW VIEW, DELETE, DROP";

#[derive(Clone)]
pub struct MariaDb {
    pool: Pool,
    opts: Opts,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("host", &self.opts.ip_or_hostname())
            .field("port", &self.opts.tcp_port())
            .finish()
    }
}

fn opts(url: &str) -> Result<Opts, EngineError> {
    let opts =
        Opts::from_url(url).map_err(|_| EngineError::Failed("invalid MariaDB admin URL".into()))?;
    // TCP, as tenants connect; never silently switch to the local socket.
    Ok(OptsBuilder::from_opts(opts).prefer_socket(false).into())
}

/// Maps a driver error without its message when the statement carried a password (a syntax
/// error would echo the statement text).
fn classify(e: mysql_async::Error, what: &str, secret_in_sql: bool) -> EngineError {
    match e {
        mysql_async::Error::Server(s) if s.code == ACCESS_DENIED => {
            EngineError::Unavailable(format!("{what}: provisioner login refused"))
        }
        mysql_async::Error::Server(s) if secret_in_sql => {
            EngineError::Failed(format!("{what}: server error {}", s.code))
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

/// A password spliced into DDL: only ever one hepdb generated (alphanumeric), checked again here.
fn literal(password: &Password) -> Result<String, EngineError> {
    if password.is_alphanumeric() {
        Ok(format!("'{}'", password.expose()))
    } else {
        Err(EngineError::Failed(
            "refusing a password with unexpected characters".into(),
        ))
    }
}

impl MariaDb {
    pub fn new(admin_url: &str) -> Result<Self, EngineError> {
        let opts = opts(admin_url)?;
        Ok(Self {
            pool: Pool::new(opts.clone()),
            opts,
        })
    }

    async fn conn(&self) -> Result<Conn, EngineError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify(e, "connect", false)),
            Err(_) => Err(EngineError::Unavailable("connect: timed out".into())),
        }
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        c.query_drop("SELECT 1")
            .await
            .map_err(|e| classify(e, "ping", false))
    }

    /// The database's ownership mark: `None` if it does not exist, `Some("")` if it has no
    /// comment.
    async fn schema_mark(c: &mut Conn, target: &Target) -> Result<Option<String>, EngineError> {
        c.exec_first(
            "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (target.names.db_name(),),
        )
        .await
        .map_err(|e| classify(e, "read schema", false))
    }

    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        let db = target.names.db_name();
        let mark = target.mark();
        // Create first and look only when it exists (an earlier attempt, a duplicate delivery,
        // or someone else's): it is ours only if it carries our mark.
        let sql = format!("CREATE DATABASE `{db}` COMMENT '{mark}'");
        let created_db = match c.query_drop(sql).await {
            Ok(()) => true,
            Err(e) if server_code(&e) == Some(DB_EXISTS) => {
                if Self::schema_mark(&mut c, target).await?.as_deref() != Some(&mark) {
                    return Err(EngineError::collision("database", db));
                }
                false
            }
            Err(e) => return Err(classify(e, "create database", false)),
        };
        let pw = literal(password)?;
        let create_user = format!("CREATE USER {} IDENTIFIED BY {pw}", user(target));
        match c.query_drop(create_user).await {
            Ok(()) => {}
            Err(e) if server_code(&e) == Some(CANNOT_USER) => {
                if created_db {
                    // The user predates our database, so it is not ours: undo our part only.
                    let conflict = EngineError::collision("user", target.names.db_user());
                    c.query_drop(format!("DROP DATABASE `{db}`"))
                        .await
                        .map_err(|e| classify(e, "undo create database", false))?;
                    return Err(conflict);
                }
                // Ours, from an earlier attempt: converge its password.
                c.query_drop(format!("ALTER USER {} IDENTIFIED BY {pw}", user(target)))
                    .await
                    .map_err(|e| classify(e, "alter user", true))?;
            }
            Err(e) => return Err(classify(e, "create user", true)),
        }
        c.query_drop(format!(
            "GRANT ALL PRIVILEGES ON `{}`.* TO {}",
            exact_grant_name(target),
            user(target)
        ))
        .await
        .map_err(|e| classify(e, "grant", false))?;
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
        let pw = literal(password)?;
        c.query_drop(format!("ALTER USER {} IDENTIFIED BY {pw}", user(target)))
            .await
            .map_err(|e| classify(e, "alter user", true))
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
            Ok(Err(e)) => Err(classify(e, "tenant login", false)),
            Err(_) => Err(EngineError::Unavailable("tenant login: timed out".into())),
        }
    }

    /// A provisioner connection, after proving the target is ours: the user is ours only if
    /// our marked database exists (it is always made first).
    async fn owned_conn(&self, target: &Target) -> Result<Conn, EngineError> {
        let mut c = self.conn().await?;
        match Self::schema_mark(&mut c, target).await? {
            Some(m) if m == target.mark() => Ok(c),
            Some(_) => Err(EngineError::collision("database", target.names.db_name())),
            None => Err(EngineError::Failed(format!(
                "database {} does not exist",
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
            c.query_drop(statement)
                .await
                .map_err(|e| classify(e, what, false))?;
        }
        c.query_drop(format!("KILL CONNECTION USER {}", user(target)))
            .await
            .map_err(|e| classify(e, "end sessions", false))
    }

    pub async fn lock_login(&self, target: &Target) -> Result<(), EngineError> {
        let sql = [format!("ALTER USER {} ACCOUNT LOCK", user(target))];
        self.alter_owned(target, "lock user", &sql).await
    }

    pub async fn unlock_login(&self, target: &Target) -> Result<(), EngineError> {
        let mut c = self.owned_conn(target).await?;
        c.query_drop(format!("ALTER USER {} ACCOUNT UNLOCK", user(target)))
            .await
            .map_err(|e| classify(e, "unlock user", false))
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
        match Self::schema_mark(&mut c, target).await? {
            // The user goes first: a crash in between leaves the marked database, so a retry
            // still proves ownership and finishes. A user whose database is absent cannot be
            // proven ours, so it is never dropped.
            Some(m) if m == target.mark() => {
                c.query_drop(format!("DROP USER IF EXISTS {}", user(target)))
                    .await
                    .map_err(|e| classify(e, "drop user", false))?;
                c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await
                    .map_err(|e| classify(e, "drop database", false))
            }
            Some(_) => Err(EngineError::collision("database", db)),
            None => Ok(()),
        }
    }

    pub async fn marked(&self) -> Result<Vec<super::Marked>, EngineError> {
        let mut c = self.conn().await?;
        let rows: Vec<(String, String)> = c
            .query(
                "SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_COMMENT LIKE 'hepdb:%'",
            )
            .await
            .map_err(|e| classify(e, "list marked databases", false))?;
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

    /// Data plus index bytes of every `um_` schema the provisioner can see (that is, all of
    /// hepdb's), empty ones included.
    pub async fn sizes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        let mut c = self.conn().await?;
        let rows: Vec<(String, i64)> = c
            .query(
                "SELECT s.SCHEMA_NAME, CAST(COALESCE(SUM(t.DATA_LENGTH + t.INDEX_LENGTH), 0) AS SIGNED) \
                 FROM information_schema.SCHEMATA s \
                 LEFT JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME \
                 WHERE s.SCHEMA_NAME LIKE 'um\\_%' GROUP BY s.SCHEMA_NAME",
            )
            .await
            .map_err(|e| classify(e, "measure sizes", false))?;
        Ok(rows)
    }

    /// Creates or updates the least-privilege provisioner named in `admin_url`, connecting with
    /// `root_url` (an account allowed to grant). Idempotent.
    pub async fn bootstrap(root_url: &str, admin_url: &str) -> Result<String, EngineError> {
        let admin = opts(admin_url)?;
        let (Some(name), Some(pass)) = (admin.user(), admin.pass()) else {
            return Err(EngineError::Failed(
                "admin URL must carry a user and a password".into(),
            ));
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || pass.contains(['\'', '\\'])
        {
            return Err(EngineError::Failed(
                "provisioner user must be [A-Za-z0-9_] and its password free of quotes and backslashes".into(),
            ));
        }
        let mut c = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts(root_url)?)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(classify(e, "connect as root", false)),
            Err(_) => {
                return Err(EngineError::Unavailable(
                    "connect as root: timed out".into(),
                ));
            }
        };
        let who = format!("'{name}'@'%'");
        for (sql, secret) in [
            (
                format!("CREATE USER IF NOT EXISTS {who} IDENTIFIED BY '{pass}'"),
                true,
            ),
            (format!("ALTER USER {who} IDENTIFIED BY '{pass}'"), true),
            // CREATE USER also allows ALTER USER (passwords, ACCOUNT LOCK); CONNECTION ADMIN
            // allows ending a locked or restricted user's sessions.
            (
                format!("GRANT CREATE USER, CONNECTION ADMIN ON *.* TO {who}"),
                false,
            ),
            (
                format!("GRANT ALL PRIVILEGES ON `um\\_%`.* TO {who} WITH GRANT OPTION"),
                false,
            ),
        ] {
            c.query_drop(sql)
                .await
                .map_err(|e| classify(e, "bootstrap provisioner", secret))?;
        }
        let _ = c.disconnect().await;
        Ok(name.to_owned())
    }
}
