//! PostgreSQL: one role and one database it owns per tenant database.
//!
//! The provisioner is a `CREATEROLE CREATEDB` role, never a superuser ([`Postgres::bootstrap`]).
//! It makes itself a member of each tenant role it creates, which PostgreSQL requires to create
//! a database owned by that role and to drop it later. Ownership: the role carries the comment
//! `hepdb:<id>`, and a database is ours only when that role owns it. Tenant roles have LOGIN
//! and nothing else; `CONNECT` and `TEMP` on the database are revoked from `PUBLIC`, so other
//! tenants cannot even connect to it. Passwords are sent as SCRAM-SHA-256 verifiers computed
//! here, so the clear text never reaches the server (or its statement log).
//!
//! `CREATE DATABASE` cannot run in a transaction: the role is made first (role, comment and
//! membership in one transaction), then the database owned by it. A crash in between leaves
//! our marked role without a database, which the next attempt completes.

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Config, NoTls, error::SqlState};

use super::{CONNECT_TIMEOUT, EngineError, Target};
use hepdb_core::secret::Password;

#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// The provisioner's connection settings; tenant login checks reuse host and port.
    config: std::sync::Arc<Config>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .finish()
    }
}

fn config(url: &str) -> Result<Config, EngineError> {
    let mut config: Config = url
        .parse()
        .map_err(|_| EngineError::Failed("invalid PostgreSQL admin URL".into()))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("hepdb-worker");
    Ok(config)
}

/// Maps a driver error. Statements never carry a clear-text password, but a verifier is still
/// kept out of messages: server errors are reported by code only when `secret_in_sql`.
fn classify(e: &tokio_postgres::Error, what: &str, secret_in_sql: bool) -> EngineError {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::INVALID_PASSWORD => {
            EngineError::Unavailable(format!("{what}: provisioner login refused"))
        }
        Some(db) if *db.code() == SqlState::CANNOT_CONNECT_NOW => {
            EngineError::Unavailable(format!("{what}: server is starting or stopping"))
        }
        Some(db) if secret_in_sql => {
            EngineError::Failed(format!("{what}: server error {}", db.code().code()))
        }
        Some(db) => EngineError::Failed(format!(
            "{what}: server error {}: {}",
            db.code().code(),
            db.message()
        )),
        None => EngineError::Unavailable(format!("{what}: {e}")),
    }
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// A generated name as a quoted identifier (names are `[a-z0-9_]`, checked by `EngineNames`).
fn ident(name: &str) -> String {
    format!("\"{name}\"")
}

/// The NOLOGIN role that holds a tenant's objects while its writes are restricted.
fn frozen_role(target: &Target) -> String {
    format!("{}_frozen", target.names.db_user())
}

/// The SCRAM-SHA-256 verifier of a hepdb-generated password, as a SQL literal.
fn verifier(password: &Password) -> Result<String, EngineError> {
    if !password.is_alphanumeric() {
        return Err(EngineError::Failed(
            "refusing a password with unexpected characters".into(),
        ));
    }
    let v = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    Ok(format!("'{v}'"))
}

impl Postgres {
    pub fn new(admin_url: &str) -> Result<Self, EngineError> {
        let config = config(admin_url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| EngineError::Failed(format!("PostgreSQL pool: {e}")))?;
        Ok(Self {
            pool,
            config: config.into(),
        })
    }

    async fn conn(&self) -> Result<Object, EngineError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e, "connect", false),
            other => EngineError::Unavailable(format!("connect: {other}")),
        })
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        let c = self.conn().await?;
        c.simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| classify(&e, "ping", false))
    }

    /// The role's ownership mark: `None` if the role does not exist, `Some(None)` if it has no
    /// comment.
    async fn role_mark(c: &Object, role: &str) -> Result<Option<Option<String>>, EngineError> {
        let row = c
            .query_opt(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(|e| classify(&e, "read role", false))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The owner of the database, if it exists.
    async fn database_owner(c: &Object, db: &str) -> Result<Option<String>, EngineError> {
        let row = c
            .query_opt(
                "SELECT r.rolname::text FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
                 WHERE d.datname = $1",
                &[&db],
            )
            .await
            .map_err(|e| classify(&e, "read database", false))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Creates our marked role, or converges the password of the one an earlier attempt made.
    /// Returns whether this call created it.
    async fn ensure_role(
        c: &mut Object,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        let role = target.names.db_user();
        let mark = target.mark();
        let pw = verifier(password)?;
        match Self::role_mark(c, role).await? {
            Some(Some(m)) if m == mark => {
                c.batch_execute(&format!(
                    "ALTER ROLE {r} WITH LOGIN PASSWORD {pw}; GRANT {r} TO CURRENT_USER",
                    r = ident(role)
                ))
                .await
                .map_err(|e| classify(&e, "converge role", true))?;
                return Ok(false);
            }
            Some(_) => return Err(EngineError::collision("role", role)),
            None => {}
        }
        let tx = c
            .transaction()
            .await
            .map_err(|e| classify(&e, "begin", false))?;
        let created = tx
            .batch_execute(&format!(
                "CREATE ROLE {r} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS PASSWORD {pw}; COMMENT ON ROLE {r} IS '{mark}'; \
                 GRANT {r} TO CURRENT_USER",
                r = ident(role)
            ))
            .await;
        match created {
            Ok(()) => {
                tx.commit()
                    .await
                    .map_err(|e| classify(&e, "commit role", false))?;
                Ok(true)
            }
            // Made concurrently by a duplicate delivery: ours only if it carries our mark.
            Err(e) if code(&e) == Some(&SqlState::DUPLICATE_OBJECT) => {
                drop(tx);
                match Self::role_mark(c, role).await? {
                    Some(Some(m)) if m == mark => Ok(false),
                    _ => Err(EngineError::collision("role", role)),
                }
            }
            Err(e) => Err(classify(&e, "create role", true)),
        }
    }

    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        let mut c = self.conn().await?;
        let (db, role) = (target.names.db_name(), target.names.db_user());
        let created_role = Self::ensure_role(&mut c, target, password).await?;
        let owner = match Self::database_owner(&c, db).await? {
            Some(owner) => Some(owner),
            None => {
                let sql = format!("CREATE DATABASE {} OWNER {}", ident(db), ident(role));
                match c.batch_execute(&sql).await {
                    Ok(()) => None,
                    Err(e) if code(&e) == Some(&SqlState::DUPLICATE_DATABASE) => {
                        Self::database_owner(&c, db).await?
                    }
                    Err(e) => return Err(classify(&e, "create database", false)),
                }
            }
        };
        if owner.is_some_and(|o| o != role) {
            let conflict = EngineError::collision("database", db);
            if created_role {
                // Undo our own part only: the role this call made.
                c.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(role)))
                    .await
                    .map_err(|e| classify(&e, "undo create role", false))?;
            }
            return Err(conflict);
        }
        c.batch_execute(&format!(
            "COMMENT ON DATABASE {d} IS '{mark}'; REVOKE ALL ON DATABASE {d} FROM PUBLIC; \
             GRANT CONNECT, TEMPORARY ON DATABASE {d} TO {r}",
            d = ident(db),
            r = ident(role),
            mark = target.mark(),
        ))
        .await
        .map_err(|e| classify(&e, "secure database", false))?;
        drop(c);
        if self.can_login(target, password).await? {
            Ok(())
        } else {
            Err(EngineError::Failed("the new role does not log in".into()))
        }
    }

    pub async fn alter_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let role = target.names.db_user();
        match Self::role_mark(&c, role).await? {
            Some(Some(m)) if m == target.mark() => {}
            Some(_) => return Err(EngineError::collision("role", role)),
            None => return Err(EngineError::Failed(format!("role {role} does not exist"))),
        }
        c.batch_execute(&format!(
            "ALTER ROLE {} WITH PASSWORD {}",
            ident(role),
            verifier(password)?
        ))
        .await
        .map_err(|e| classify(&e, "alter role", true))
    }

    pub async fn can_login(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        let mut config = Config::clone(&self.config);
        config
            .user(target.names.db_user())
            .password(password.expose())
            .dbname(target.names.db_name())
            .application_name("hepdb-login-check");
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                drop(client);
                let _ = connection.await;
                Ok(true)
            }
            Err(e) => match code(&e) {
                Some(s)
                    if *s == SqlState::INVALID_PASSWORD
                        || *s == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                        || *s == SqlState::INSUFFICIENT_PRIVILEGE
                        || *s == SqlState::INVALID_CATALOG_NAME =>
                {
                    Ok(false)
                }
                _ => Err(classify(&e, "tenant login", false)),
            },
        }
    }

    /// A provisioner connection, after proving the role is ours.
    async fn owned_conn(&self, target: &Target) -> Result<Object, EngineError> {
        let c = self.conn().await?;
        let role = target.names.db_user();
        match Self::role_mark(&c, role).await? {
            Some(Some(m)) if m == target.mark() => Ok(c),
            Some(_) => Err(EngineError::collision("role", role)),
            None => Err(EngineError::Failed(format!("role {role} does not exist"))),
        }
    }

    /// A provisioner connection to the tenant's own database (object ownership is per
    /// database). The provisioner may connect through its membership in the tenant role.
    async fn tenant_db_conn(
        &self,
        target: &Target,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), EngineError> {
        let mut config = Config::clone(&self.config);
        config.dbname(target.names.db_name());
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| classify(&e, "connect to tenant database", false))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, task))
    }

    pub async fn lock_login(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.owned_conn(target).await?;
        let role = target.names.db_user();
        c.batch_execute(&format!("ALTER ROLE {} WITH NOLOGIN", ident(role)))
            .await
            .map_err(|e| classify(&e, "lock role", false))?;
        // Allowed: the provisioner is a member of the role whose sessions it ends.
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .map_err(|e| classify(&e, "end sessions", false))
        .map(drop)
    }

    pub async fn unlock_login(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.owned_conn(target).await?;
        c.batch_execute(&format!(
            "ALTER ROLE {} WITH LOGIN",
            ident(target.names.db_user())
        ))
        .await
        .map_err(|e| classify(&e, "unlock role", false))
    }

    /// The tenant role owns its database and tables, and an owner bypasses privileges; so
    /// writes are restricted by handing everything it owns to a NOLOGIN holder role
    /// (`<user>_frozen`, marked as ours) and granting back read, `DELETE` and `TRUNCATE`.
    pub async fn restrict_writes(&self, target: &Target) -> Result<(), EngineError> {
        let mut c = self.owned_conn(target).await?;
        let (role, frozen) = (target.names.db_user(), frozen_role(target));
        match Self::role_mark(&c, &frozen).await? {
            Some(Some(m)) if m == target.mark() => {}
            Some(_) => return Err(EngineError::collision("role", &frozen)),
            None => {
                let tx = c
                    .transaction()
                    .await
                    .map_err(|e| classify(&e, "begin", false))?;
                tx.batch_execute(&format!(
                    "CREATE ROLE {f} WITH NOLOGIN; COMMENT ON ROLE {f} IS '{mark}'; \
                     GRANT {f} TO CURRENT_USER",
                    f = ident(&frozen),
                    mark = target.mark()
                ))
                .await
                .map_err(|e| classify(&e, "create holder role", false))?;
                tx.commit()
                    .await
                    .map_err(|e| classify(&e, "commit holder role", false))?;
            }
        }
        drop(c);
        let (t, task) = self.tenant_db_conn(target).await?;
        let result = async {
            // The owner's own CONNECT entry moves with the ownership: grant it back.
            t.batch_execute(&format!(
                "REASSIGN OWNED BY {r} TO {f}; GRANT CONNECT ON DATABASE {d} TO {r}",
                r = ident(role),
                f = ident(&frozen),
                d = ident(target.names.db_name()),
            ))
            .await
            .map_err(|e| classify(&e, "hand over ownership", false))?;
            let schemas = t
                .query(
                    "SELECT nspname::text FROM pg_namespace WHERE nspname = 'public' \
                     OR nspowner = (SELECT oid FROM pg_roles WHERE rolname = $1)",
                    &[&frozen],
                )
                .await
                .map_err(|e| classify(&e, "list schemas", false))?;
            for row in schemas {
                let schema = ident(row.get::<_, &str>(0));
                t.batch_execute(&format!(
                    "GRANT USAGE ON SCHEMA {schema} TO {r}; \
                     GRANT SELECT, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {schema} TO {r}; \
                     GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {r}",
                    r = ident(role)
                ))
                .await
                .map_err(|e| classify(&e, "grant read and delete", false))?;
            }
            Ok(())
        }
        .await;
        drop(t);
        let _ = task.await;
        result
    }

    pub async fn restore_writes(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.owned_conn(target).await?;
        let frozen = frozen_role(target);
        match Self::role_mark(&c, &frozen).await? {
            Some(Some(m)) if m == target.mark() => {}
            // Never restricted, or already restored.
            None => return Ok(()),
            Some(_) => return Err(EngineError::collision("role", &frozen)),
        }
        let (t, task) = self.tenant_db_conn(target).await?;
        let handed_back = t
            .batch_execute(&format!(
                "REASSIGN OWNED BY {} TO {}",
                ident(&frozen),
                ident(target.names.db_user())
            ))
            .await
            .map_err(|e| classify(&e, "hand back ownership", false));
        drop(t);
        let _ = task.await;
        handed_back?;
        c.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(&frozen)))
            .await
            .map_err(|e| classify(&e, "drop holder role", false))
    }

    pub async fn drop_owned(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let (db, role) = (target.names.db_name(), target.names.db_user());
        match Self::role_mark(&c, role).await? {
            Some(Some(m)) if m == target.mark() => {}
            // Nothing provably ours: a database without our role was never ours.
            None => return Ok(()),
            Some(_) => return Err(EngineError::collision("role", role)),
        }
        // The database goes first: a crash in between leaves the marked role, and a retry
        // still proves ownership and finishes.
        let frozen = frozen_role(target);
        match Self::database_owner(&c, db).await? {
            // Ours, possibly handed to our holder role by `restrict_writes`.
            Some(owner) if owner == role || owner == frozen => {
                Self::drop_database(&c, db, role).await?;
            }
            Some(_) => return Err(EngineError::collision("database", db)),
            None => {}
        }
        if let Some(Some(m)) = Self::role_mark(&c, &frozen).await?
            && m == target.mark()
        {
            c.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(&frozen)))
                .await
                .map_err(|e| classify(&e, "drop holder role", false))?;
        }
        c.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(role)))
            .await
            .map_err(|e| classify(&e, "drop role", false))
    }

    /// Ends the tenant's sessions on the database, then drops it. Not `WITH (FORCE)`: that
    /// would also need the right to end sessions of other roles (autovacuum, a superuser),
    /// which the provisioner does not have; a plain drop cancels autovacuum itself, and a
    /// session still closing is waited for briefly.
    async fn drop_database(c: &Object, db: &str, role: &str) -> Result<(), EngineError> {
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND usename = $2",
            &[&db, &role],
        )
        .await
        .map_err(|e| classify(&e, "end sessions", false))?;
        let sql = format!("DROP DATABASE IF EXISTS {}", ident(db));
        let mut attempts = 0;
        loop {
            match c.batch_execute(&sql).await {
                Ok(()) => return Ok(()),
                Err(e) if code(&e) == Some(&SqlState::OBJECT_IN_USE) && attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(classify(&e, "drop database", false)),
            }
        }
    }

    /// Marked tenant roles (holder roles excluded: they belong to a tenant role).
    pub async fn marked(&self) -> Result<Vec<super::Marked>, EngineError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles \
                 WHERE shobj_description(oid, 'pg_authid') LIKE 'hepdb:%' \
                 AND rolname NOT LIKE '%\\_frozen'",
                &[],
            )
            .await
            .map_err(|e| classify(&e, "list marked roles", false))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let mark: String = r.get(1);
                Some(super::Marked {
                    id: super::parse_mark(&mark)?,
                    object: r.get(0),
                })
            })
            .collect())
    }

    /// `pg_database_size` of every `um_` database, in one query.
    pub async fn sizes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT datname::text, pg_database_size(oid) FROM pg_database \
                 WHERE datname LIKE 'um\\_%'",
                &[],
            )
            .await
            .map_err(|e| classify(&e, "measure sizes", false))?;
        // A database dropped while the query runs measures NULL: it is simply not reported.
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.try_get::<_, String>(0).ok()?,
                    r.try_get::<_, Option<i64>>(1).ok()??,
                ))
            })
            .collect())
    }

    /// Creates or updates the provisioner role named in `admin_url` (CREATEROLE CREATEDB, not
    /// a superuser), connecting with `root_url`. Idempotent.
    pub async fn bootstrap(root_url: &str, admin_url: &str) -> Result<String, EngineError> {
        let admin = config(admin_url)?;
        let (Some(name), Some(pass)) = (admin.get_user(), admin.get_password()) else {
            return Err(EngineError::Failed(
                "admin URL must carry a user and a password".into(),
            ));
        };
        let pass = std::str::from_utf8(pass)
            .map_err(|_| EngineError::Failed("provisioner password must be UTF-8".into()))?;
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || pass.contains(['\'', '\\'])
        {
            return Err(EngineError::Failed(
                "provisioner user must be [A-Za-z0-9_] and its password free of quotes and backslashes".into(),
            ));
        }
        let (client, connection) = config(root_url)?
            .connect(NoTls)
            .await
            .map_err(|e| classify(&e, "connect as root", false))?;
        let conn = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(|e| classify(&e, "read role", false))?
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        let sql = format!(
            "{verb} ROLE {} WITH LOGIN CREATEROLE CREATEDB NOSUPERUSER NOREPLICATION NOBYPASSRLS \
             PASSWORD '{}'",
            ident(name),
            postgres_protocol::password::scram_sha_256(pass.as_bytes())
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| classify(&e, "bootstrap provisioner", true))?;
        drop(client);
        let _ = conn.await;
        Ok(name.to_owned())
    }
}
