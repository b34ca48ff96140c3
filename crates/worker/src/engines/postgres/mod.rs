//! PostgreSQL: one role and one database per tenant database.
//!
//! The provisioner is `CREATEDB`, `pg_read_all_stats` and nothing else: no `CREATEROLE`, no
//! superuser ([`Postgres::bootstrap`]). Roles are made, changed and dropped only through the
//! `hepdb.*` SECURITY DEFINER functions that root installs (`bootstrap.sql`), which accept
//! only hepdb's generated names and, for an existing role, only one carrying the caller's mark.
//!
//! Ownership: the tenant role carries the comment `hepdb:<id>`, which only a `CREATEROLE` holder
//! can write, so no tenant can forge or erase it. The database is owned by the provisioner, not
//! by the tenant: the tenant gets `CONNECT`, `TEMPORARY` and `CREATE` on it and owns its
//! `public` schema, but cannot change the database's settings, connection limit or privileges,
//! so it can never lock the provisioner out of the database it has to work in. Databases are
//! cloned from `hepdb_template` (made from `template0` by root; nobody connects to it), so
//! nothing planted in a shared template reaches a new tenant.
//!
//! Every provisioner session pins its own settings at start-up ([`SESSION_OPTIONS`]), so that
//! database or role settings a tenant chose cannot change what a statement means. Passwords
//! are sent as SCRAM-SHA-256 verifiers, as query parameters: no clear text reaches the server.
//!
//! `CREATE DATABASE` cannot run in a transaction or a function: the marked role is made first,
//! then the database. A crash in between leaves our marked role without a database, which the
//! next attempt completes. Nor can it carry a deadline, so it runs in a session named after the
//! database, which every later attempt and every cleanup ends first: a `CREATE DATABASE` the
//! worker gave up on cannot finish after its cleanup and leave a database nobody owns.

mod bootstrap;
mod sql;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use hepdb_store::tls::PgTarget;
use postgres_protocol::escape::escape_identifier;
use tokio_postgres::{NoTls, error::SqlState};

use super::{CONNECT_TIMEOUT, EngineError, Target};
use hepdb_core::secret::Password;

/// Settings every provisioner session starts with, whatever the database or role settings
/// say: names resolve in `pg_catalog` first and never in a tenant schema, statements are
/// bounded in time, and transactions are writable.
const SESSION_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp \
     -c default_transaction_read_only=off -c default_transaction_isolation=read\\ committed \
     -c standard_conforming_strings=on -c statement_timeout=30s -c lock_timeout=20s \
     -c idle_in_transaction_session_timeout=60s -c client_min_messages=warning";

/// The template every tenant database is cloned from (`bootstrap` makes it).
const TEMPLATE: &str = "hepdb_template";

#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// The provisioner's connection settings (and TLS); tenant login checks reuse host and port.
    config: std::sync::Arc<PgTarget>,
    /// The provisioner's role name: the owner of every tenant database.
    provisioner: String,
    /// `CONNECTION LIMIT` of every tenant role.
    connection_limit: i32,
    /// How long after sending a role change the server may still start it.
    deadline_window: std::time::Duration,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("hosts", &self.config.config.get_hosts())
            .field("ports", &self.config.config.get_ports())
            .finish()
    }
}

/// The connection settings of a URL, with TLS when it asks for it (`sslmode=require`,
/// `sslrootcert=`; see `hepdb_store::tls`).
fn config(url: &str) -> Result<PgTarget, EngineError> {
    let mut target = hepdb_store::tls::parse(url)
        .map_err(|e| EngineError::Failed(format!("invalid PostgreSQL URL: {e}")))?;
    target.config.connect_timeout(CONNECT_TIMEOUT);
    target.config.application_name("hepdb-worker");
    target.config.options(SESSION_OPTIONS);
    Ok(target)
}

/// Maps a driver error. Statements never carry a clear-text password, and verifiers travel as
/// parameters, so server messages are safe to keep.
fn classify(e: &tokio_postgres::Error, what: &str) -> EngineError {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::INVALID_PASSWORD => {
            EngineError::Unavailable(format!("{what}: provisioner login refused"))
        }
        Some(db) if *db.code() == SqlState::CANNOT_CONNECT_NOW => {
            EngineError::Unavailable(format!("{what}: server is starting or stopping"))
        }
        // Operator intervention (a terminated session, a shutdown, a statement timeout), a lost
        // connection, or a lock that timed out: cut short, what it did is unknown.
        Some(db)
            if ["57", "08"].contains(&&db.code().code()[..2])
                || *db.code() == SqlState::LOCK_NOT_AVAILABLE
                || *db.code() == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            EngineError::Unavailable(format!("{what}: interrupted: {}", db.message()))
        }
        Some(db) if *db.code() == SqlState::TOO_MANY_CONNECTIONS => EngineError::Unavailable(
            format!("{what}: server refuses connections: {}", db.message()),
        ),
        Some(db) => EngineError::Failed(format!(
            "{what}: server error {}: {}{}",
            db.code().code(),
            db.message(),
            db.where_().map(|w| format!(" ({w})")).unwrap_or_default()
        )),
        None => EngineError::Unavailable(format!("{what}: {e}")),
    }
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// A name as a quoted identifier, by PostgreSQL's own rules.
fn ident(name: &str) -> String {
    escape_identifier(name)
}

/// The `application_name` of the session that creates `db` (at most 63 bytes: the names are
/// hepdb's, `um_` and at most 21 more).
fn creating(db: &str) -> String {
    format!("hepdb-create {db}")
}

/// The NOLOGIN role that holds a tenant's objects while its writes are restricted.
fn frozen_role(target: &Target) -> String {
    format!("{}_frozen", target.names.db_user())
}

/// The SCRAM-SHA-256 verifier of a hepdb-generated password.
fn verifier(password: &Password) -> Result<String, EngineError> {
    if !password.is_alphanumeric() {
        return Err(EngineError::Failed(
            "refusing a password with unexpected characters".into(),
        ));
    }
    Ok(postgres_protocol::password::scram_sha_256(
        password.expose().as_bytes(),
    ))
}

/// Whose sessions [`Postgres::end_sessions`] ends.
enum Sessions {
    /// The tenant role's, anywhere, and anyone's in its database.
    All,
    /// Anyone's in its database but the tenant role's.
    OthersInDatabase,
}

/// What a call of `hepdb.alter_role` changes; `None` leaves a field as it is.
#[derive(Default)]
struct RoleChange {
    verifier: Option<String>,
    login: Option<bool>,
    connection_limit: Option<i32>,
    /// Revoke every other role's membership in this one.
    isolate: bool,
}

impl Postgres {
    pub fn new(admin_url: &str, connection_limit: u32) -> Result<Self, EngineError> {
        let config = config(admin_url)?;
        let provisioner = config
            .config
            .get_user()
            .ok_or_else(|| EngineError::Failed("PostgreSQL admin URL must carry a user".into()))?
            .to_owned();
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &config.tls {
            Some(tls) => Manager::from_config(config.config.clone(), tls.clone(), manager_config()),
            None => Manager::from_config(config.config.clone(), NoTls, manager_config()),
        };
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
            provisioner,
            connection_limit: i32::try_from(connection_limit).unwrap_or(i32::MAX),
            deadline_window: super::DEFAULT_WINDOW,
        })
    }

    /// See [`super::EngineDriver::with_engine_timeout`].
    pub fn with_deadline_window(mut self, window: std::time::Duration) -> Self {
        self.deadline_window = window;
        self
    }

    async fn conn(&self) -> Result<Object, EngineError> {
        self.pool.get().await.map_err(|e| {
            match e {
                deadpool_postgres::PoolError::Backend(e) => classify(&e, "connect"),
                other => EngineError::Unavailable(format!("connect: {other}")),
            }
            .at_connect()
        })
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        let c = self.conn().await?;
        c.simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| classify(&e, "ping"))
    }

    /// The role's ownership mark: `None` if the role does not exist, `Some(None)` if it has no
    /// comment.
    async fn role_mark(c: &Object, role: &str) -> Result<Option<Option<String>>, EngineError> {
        let row = c
            .query_opt(
                "SELECT pg_catalog.shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles \
                 WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(|e| classify(&e, "read role"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The owner of the database, if it exists.
    async fn database_owner(c: &Object, db: &str) -> Result<Option<String>, EngineError> {
        let row = c
            .query_opt(
                "SELECT r.rolname::text FROM pg_catalog.pg_database d \
                 JOIN pg_catalog.pg_roles r ON r.oid = d.datdba WHERE d.datname = $1",
                &[&db],
            )
            .await
            .map_err(|e| classify(&e, "read database"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Whether a database owned by `owner` is ours: made by this provisioner, or (before the
    /// provisioner owned tenant databases) owned by our marked role or its holder.
    fn owns(&self, target: &Target, owner: &str) -> bool {
        owner == self.provisioner || owner == target.names.db_user() || owner == frozen_role(target)
    }

    /// Maps an error of a `hepdb.*` function: a refusal means the role is not ours.
    fn function_error(e: &tokio_postgres::Error, what: &str, role: &str) -> EngineError {
        match code(e) {
            Some(s) if *s == SqlState::INSUFFICIENT_PRIVILEGE => {
                EngineError::collision("role", role)
            }
            Some(s) if *s == SqlState::UNDEFINED_OBJECT => {
                EngineError::Failed(format!("role {role} does not exist"))
            }
            _ => classify(e, what),
        }
    }

    async fn alter_role(
        &self,
        c: &Object,
        target: &Target,
        role: &str,
        change: RoleChange,
    ) -> Result<(), EngineError> {
        // The deadline is set in the same statement, before the call (FROM is evaluated
        // first): a late delivery of this statement carries its own, past, deadline.
        c.execute(
            "SELECT hepdb.alter_role($1, $2, $3, $4, $5, $6) \
             FROM (SELECT pg_catalog.set_config('hepdb.not_after', $7, false)) AS fence",
            &[
                &role,
                &target.mark(),
                &change.verifier,
                &change.login,
                &change.connection_limit,
                &change.isolate,
                &super::not_after(self.deadline_window).to_string(),
            ],
        )
        .await
        .map(drop)
        .map_err(|e| Self::function_error(&e, "alter role", role))
    }

    async fn create_role(
        c: &Object,
        target: &Target,
        role: &str,
        verifier: Option<&str>,
        connection_limit: i32,
    ) -> Result<(), tokio_postgres::Error> {
        c.execute(
            "SELECT hepdb.create_role($1, $2, $3, $4, $5)",
            &[
                &role,
                &target.mark(),
                &verifier,
                &verifier.is_some(),
                &connection_limit,
            ],
        )
        .await
        .map(drop)
    }

    /// Creates our marked role (or the holder role, without a verifier), or converges the one
    /// an earlier attempt made; either way the provisioner is a member afterwards. Returns
    /// whether this call created it.
    async fn ensure_role(
        &self,
        c: &Object,
        target: &Target,
        role: &str,
        verifier: Option<String>,
    ) -> Result<bool, EngineError> {
        let login = verifier.is_some();
        let limit = if login { self.connection_limit } else { 0 };
        let converge = RoleChange {
            login: login.then_some(true),
            connection_limit: Some(limit),
            verifier: verifier.clone(),
            isolate: false,
        };
        match Self::role_mark(c, role).await? {
            Some(Some(m)) if m == target.mark() => {
                self.alter_role(c, target, role, converge).await?;
                return Ok(false);
            }
            Some(_) => return Err(EngineError::collision("role", role)),
            None => {}
        }
        match Self::create_role(c, target, role, verifier.as_deref(), limit).await {
            Ok(()) => Ok(true),
            // Made concurrently by a duplicate delivery: ours only if it carries our mark.
            Err(e) if code(&e) == Some(&SqlState::DUPLICATE_OBJECT) => {
                match Self::role_mark(c, role).await? {
                    Some(Some(m)) if m == target.mark() => {
                        self.alter_role(c, target, role, converge).await?;
                        Ok(false)
                    }
                    _ => Err(EngineError::collision("role", role)),
                }
            }
            Err(e) => Err(Self::function_error(&e, "create role", role)),
        }
    }

    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let (db, role) = (target.names.db_name(), target.names.db_user());
        let created_role = self
            .ensure_role(&c, target, role, Some(verifier(password)?))
            .await?;
        // An earlier attempt's CREATE DATABASE must not finish beside (or after) this one.
        Self::end_earlier_creates(&c, db).await?;
        let owner = match Self::database_owner(&c, db).await? {
            Some(owner) => Some(owner),
            None => match self.create_database(db).await {
                Ok(()) => None,
                Err(e) if code(&e) == Some(&SqlState::DUPLICATE_DATABASE) => {
                    Self::database_owner(&c, db).await?
                }
                Err(e) => return Err(classify(&e, "create database")),
            },
        };
        if owner.is_some_and(|o| !self.owns(target, &o)) {
            let conflict = EngineError::collision("database", db);
            if created_role {
                // Undo our own part only: the role this call made.
                c.execute("SELECT hepdb.drop_role($1, $2)", &[&role, &target.mark()])
                    .await
                    .map_err(|e| classify(&e, "undo create role"))?;
            }
            return Err(conflict);
        }
        let (d, r) = (ident(db), ident(role));
        // One implicit transaction: one round trip and one commit, and connections are
        // allowed in the same commit that takes them from PUBLIC.
        c.batch_execute(&format!(
            "REVOKE ALL ON DATABASE {d} FROM PUBLIC; \
             GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {d} TO {r}; \
             ALTER DATABASE {d} WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .map_err(|e| classify(&e, "secure database"))?;
        // Nobody but the tenant belongs in it (a session from before an upgrade, say).
        Self::end_sessions(&c, target, Sessions::OthersInDatabase).await?;
        drop(c);
        self.in_tenant_db(target, "secure database", &sql::secure_new_database(target))
            .await?;
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
        let change = RoleChange {
            verifier: Some(verifier(password)?),
            ..RoleChange::default()
        };
        self.alter_role(&c, target, target.names.db_user(), change)
            .await
    }

    pub async fn can_login(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        let mut login = PgTarget::clone(&self.config);
        login
            .config
            .user(target.names.db_user())
            .password(password.expose())
            .dbname(target.names.db_name())
            .application_name("hepdb-login-check");
        match login.connect().await {
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
                _ => Err(classify(&e, "tenant login")),
            },
        }
    }

    /// `CREATE DATABASE`, in a session of its own named after the database ([`creating`]), so
    /// that a later attempt or cleanup can end it ([`Self::end_earlier_creates`]). It cannot
    /// carry a deadline like role changes do (it runs in no function), and a worker that gave
    /// up on it, or died, does not stop it: the server may still be running it, or the network
    /// may deliver it later. Closed until its privileges are set: a new database lets `PUBLIC`
    /// connect.
    async fn create_database(&self, db: &str) -> Result<(), tokio_postgres::Error> {
        let mut target = PgTarget::clone(&self.config);
        target.config.application_name(creating(db));
        let (client, task) = target.connect().await?;
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {} ALLOW_CONNECTIONS false",
            ident(db),
            ident(TEMPLATE)
        );
        let result = client.batch_execute(&sql).await;
        drop(client);
        let _ = task.await;
        result
    }

    /// Ends every session of the provisioner's that is creating `db` (an earlier attempt's, in
    /// this worker or one that died), and waits until they are gone: afterwards no
    /// `CREATE DATABASE` of it that was sent before can run, since each is sent only once its
    /// session is up. Ending one rolls its statement back.
    async fn end_earlier_creates(c: &Object, db: &str) -> Result<(), EngineError> {
        let name = creating(db);
        let mine = "FROM pg_catalog.pg_stat_activity \
             WHERE usename = current_user AND pid <> pg_catalog.pg_backend_pid() \
             AND application_name = $1";
        let count = format!("SELECT count(*) {mine}");
        let left = async || -> Result<i64, EngineError> {
            Ok(c.query_one(&count, &[&name])
                .await
                .map_err(|e| classify(&e, "end earlier creates"))?
                .get(0))
        };
        // Usually there is none: one round trip.
        if left().await? == 0 {
            return Ok(());
        }
        // Waits up to 5 s for each; one that ended by itself meanwhile answers false, so what
        // counts is whether any is left.
        c.execute(
            &format!("SELECT pg_catalog.pg_terminate_backend(pid, 5000) {mine}"),
            &[&name],
        )
        .await
        .map_err(|e| classify(&e, "end earlier creates"))?;
        if left().await? == 0 {
            Ok(())
        } else {
            Err(EngineError::Unavailable(
                "an earlier CREATE DATABASE is still ending".into(),
            ))
        }
    }

    /// Runs `sql` as the provisioner inside the tenant's database (object ownership is per
    /// database). The provisioner owns the database, so the tenant cannot keep it out.
    async fn in_tenant_db(
        &self,
        target: &Target,
        what: &str,
        sql: &str,
    ) -> Result<(), EngineError> {
        self.in_database(target.names.db_name(), what, sql).await
    }

    async fn in_database(&self, db: &str, what: &str, sql: &str) -> Result<(), EngineError> {
        let mut target = PgTarget::clone(&self.config);
        target.config.dbname(db);
        let (client, task) = target
            .connect()
            .await
            .map_err(|e| classify(&e, "connect to tenant database"))?;
        let result = client
            .batch_execute(sql)
            .await
            .map_err(|e| classify(&e, what));
        drop(client);
        let _ = task.await;
        result
    }

    /// Ends sessions the provisioner may end (tenant roles; never root's or another
    /// provisioner's), and waits for them to be gone.
    async fn end_sessions(c: &Object, target: &Target, which: Sessions) -> Result<(), EngineError> {
        let only_others = matches!(which, Sessions::OthersInDatabase);
        c.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity \
             WHERE pid <> pg_catalog.pg_backend_pid() AND usename <> current_user \
             AND pg_catalog.pg_has_role(usesysid, 'MEMBER') \
             AND (CASE WHEN $3 THEN datname = $2 AND usename <> $1 \
                       ELSE usename = $1 OR datname = $2 END)",
            &[
                &target.names.db_user(),
                &target.names.db_name(),
                &only_others,
            ],
        )
        .await
        .map(drop)
        .map_err(|e| classify(&e, "end sessions"))
    }

    /// NOLOGIN, nobody else holds the role's rights, and its open sessions end.
    pub async fn lock_login(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let change = RoleChange {
            login: Some(false),
            isolate: true,
            ..RoleChange::default()
        };
        self.alter_role(&c, target, target.names.db_user(), change)
            .await?;
        Self::end_sessions(&c, target, Sessions::All).await
    }

    pub async fn unlock_login(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let change = RoleChange {
            login: Some(true),
            connection_limit: Some(self.connection_limit),
            ..RoleChange::default()
        };
        self.alter_role(&c, target, target.names.db_user(), change)
            .await
    }

    /// An owner bypasses privileges, so writes are restricted by handing everything the tenant
    /// owns to a NOLOGIN holder role (`<user>_frozen`, marked as ours) and granting back read,
    /// and `DELETE` where it runs no code of the tenant's (see [`sql::restrict`]). Nobody else
    /// keeps the tenant role's rights, so grants it made to other roles lead nowhere: only the
    /// tenant role may connect to the database.
    ///
    /// The role's sessions are ended first, with its login off, so that none holds a lock the
    /// hand-over waits for or a large object open for writing; the login comes back with
    /// [`super::EngineDriver::set_access`], which unlocks after restricting.
    pub async fn restrict_writes(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let (role, frozen) = (target.names.db_user(), frozen_role(target));
        let isolate = RoleChange {
            login: Some(false),
            isolate: true,
            ..RoleChange::default()
        };
        self.alter_role(&c, target, role, isolate).await?;
        Self::end_sessions(&c, target, Sessions::All).await?;
        self.ensure_role(&c, target, &frozen, None).await?;
        drop(c);
        self.in_tenant_db(target, "restrict writes", &sql::restrict(target, &frozen))
            .await
    }

    pub async fn restore_writes(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let (role, frozen) = (target.names.db_user(), frozen_role(target));
        self.alter_role(&c, target, role, RoleChange::default())
            .await?;
        match Self::role_mark(&c, &frozen).await? {
            Some(Some(m)) if m == target.mark() => {}
            // Never restricted, or already restored.
            None => return Ok(()),
            Some(_) => return Err(EngineError::collision("role", &frozen)),
        }
        self.alter_role(&c, target, &frozen, RoleChange::default())
            .await?;
        self.in_tenant_db(target, "restore writes", &sql::restore(target, &frozen))
            .await?;
        c.execute("SELECT hepdb.drop_role($1, $2)", &[&frozen, &target.mark()])
            .await
            .map(drop)
            .map_err(|e| Self::function_error(&e, "drop holder role", &frozen))
    }

    pub async fn drop_owned(&self, target: &Target) -> Result<(), EngineError> {
        let c = self.conn().await?;
        let (db, role) = (target.names.db_name(), target.names.db_user());
        // Nothing of ours may appear once this has looked: no create of it runs any more.
        Self::end_earlier_creates(&c, db).await?;
        let role_is_ours = match Self::role_mark(&c, role).await? {
            Some(Some(m)) if m == target.mark() => true,
            None => false,
            Some(_) => return Err(EngineError::collision("role", role)),
        };
        if role_is_ours {
            let isolate = RoleChange {
                login: Some(false),
                isolate: true,
                ..RoleChange::default()
            };
            self.alter_role(&c, target, role, isolate).await?;
        }
        // The database goes first: a crash in between leaves the marked role, and a retry
        // still proves ownership and finishes. Without the role, only a database this
        // provisioner made is ours (names are never reused); anyone else's is left alone.
        match Self::database_owner(&c, db).await? {
            Some(owner) if role_is_ours && self.owns(target, &owner) => {
                Self::end_sessions(&c, target, Sessions::All).await?;
                Self::drop_database(&c, db).await?;
            }
            Some(owner) if owner == self.provisioner => {
                Self::end_sessions(&c, target, Sessions::OthersInDatabase).await?;
                Self::drop_database(&c, db).await?;
            }
            Some(_) if role_is_ours => return Err(EngineError::collision("database", db)),
            Some(_) | None => {}
        }
        let frozen = frozen_role(target);
        for r in [frozen.as_str(), role] {
            match Self::role_mark(&c, r).await? {
                Some(Some(m)) if m == target.mark() => {}
                _ => continue,
            }
            self.alter_role(&c, target, r, RoleChange::default())
                .await?;
            self.drop_grants_elsewhere(&c, r).await?;
            c.execute("SELECT hepdb.drop_role($1, $2)", &[&r, &target.mark()])
                .await
                .map_err(|e| Self::function_error(&e, "drop role", r))?;
        }
        Ok(())
    }

    /// Other tenants may have granted this role rights on their objects, which would keep it
    /// from being dropped: `DROP OWNED` in each tenant database that still refers to it.
    async fn drop_grants_elsewhere(&self, c: &Object, role: &str) -> Result<(), EngineError> {
        let rows = c
            .query(
                "SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s \
                 JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
                 JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid \
                 WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
                 AND r.rolname = $1 AND d.datname ~ '^um_[0-9a-f]{10}_[0-9]+$'",
                &[&role],
            )
            .await
            .map_err(|e| classify(&e, "find grants"))?;
        for row in rows {
            let db: String = row.get(0);
            self.in_database(
                &db,
                "drop grants",
                &format!("DROP OWNED BY {}", ident(role)),
            )
            .await?;
        }
        Ok(())
    }

    /// Drops the database (its sessions were ended). Not `WITH (FORCE)`: that would also need
    /// the right to end sessions of other roles (autovacuum, a superuser), which the
    /// provisioner does not have; a plain drop cancels autovacuum itself, and a session still
    /// closing is waited for briefly.
    async fn drop_database(c: &Object, db: &str) -> Result<(), EngineError> {
        let sql = format!("DROP DATABASE IF EXISTS {}", ident(db));
        let mut attempts = 0;
        loop {
            match c.batch_execute(&sql).await {
                Ok(()) => return Ok(()),
                Err(e) if code(&e) == Some(&SqlState::OBJECT_IN_USE) && attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(classify(&e, "drop database")),
            }
        }
    }

    /// Marked tenant roles (holder roles excluded: they belong to a tenant role).
    pub async fn marked(&self) -> Result<Vec<super::Marked>, EngineError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT rolname::text, pg_catalog.shobj_description(oid, 'pg_authid') \
                 FROM pg_catalog.pg_roles \
                 WHERE pg_catalog.shobj_description(oid, 'pg_authid') LIKE 'hepdb:%' \
                 AND rolname NOT LIKE '%\\_frozen'",
                &[],
            )
            .await
            .map_err(|e| classify(&e, "list marked roles"))?;
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

    /// `pg_database_size` of every `um_` database, in one query: the files on disk, whatever
    /// is in them. `pg_read_all_stats` lets the provisioner measure a database whose tenant
    /// revoked every privilege on it.
    pub async fn sizes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        let c = self.conn().await?;
        // A database dropped between the catalog scan and its measurement fails the whole
        // statement ("database with OID … does not exist": the privilege check looks it up
        // again). That is a race with a deletion, not an outage: measure again, a few times.
        let mut tries = 0;
        let rows = loop {
            let result = c
                .query(
                    "SELECT datname::text, pg_catalog.pg_database_size(oid) \
                     FROM pg_catalog.pg_database WHERE datname ~ '^um_[0-9a-f]{10}_[0-9]+$'",
                    &[],
                )
                .await;
            match result {
                // 3D000 before PostgreSQL 16, 42704 since.
                Err(e)
                    if matches!(
                        code(&e),
                        Some(s) if *s == SqlState::UNDEFINED_DATABASE || *s == SqlState::UNDEFINED_OBJECT
                    ) && tries < 5 =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
                }
                other => break other.map_err(|e| classify(&e, "measure sizes"))?,
            }
        };
        // A database dropped while the query runs may also measure NULL: it is not reported.
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
}
