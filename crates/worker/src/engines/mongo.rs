//! MongoDB: one user per tenant database, defined in `admin` with `readWrite` and `dbAdmin` on
//! its database only (`createUser`, `updateUser` with `pwd`, `dropUser`).
//!
//! MongoDB creates databases lazily and has no comment on users that every server keeps, so
//! ownership lives on the engine in a registry collection, `hepdb.owners`, one document per
//! user (`{_id: "dum_...", db: "um_...", mark: "hepdb:<id>"}`). The claim is written before the
//! user is created and removed after it is dropped, so a crash anywhere leaves either nothing
//! or a claim the next attempt recognises as its own. A user or a non-empty database with our
//! generated name but no claim of ours is someone else's and is never touched.
//!
//! The provisioner holds `userAdmin` on `admin` (user management), `clusterMonitor` (to list
//! databases), `read` on `admin` (the same, on servers that authorize `listDatabases` per
//! database) and `readWrite` on `hepdb` ([`Mongo::bootstrap`]). It grants itself `dbAdmin` on
//! each database it creates (to measure and drop it) and gives it back when it drops it. Every
//! operation uses a fresh session, so privileges granted a moment ago apply on servers that fix
//! them per connection. MongoDB cannot limit user administration to a name pattern: `userAdmin`
//! on `admin` could grant itself anything, so this account must be guarded like root.

use mongodb::{
    Client,
    bson::{Document, doc},
    error::{Error, ErrorKind, WriteFailure},
    options::{AuthMechanism, ClientOptions, ConnectionString, Credential},
};

use super::{CONNECT_TIMEOUT, EngineError, Target};
use hepdb_core::secret::Password;

const REGISTRY_DB: &str = "hepdb";
const REGISTRY: &str = "owners";
/// Server error codes.
const UNAUTHORIZED: i32 = 13;
const USER_NOT_FOUND: i32 = 11;
const DUPLICATE_KEY: i32 = 11000;
const USER_EXISTS: i32 = 51003;
const AUTHENTICATION_FAILED: i32 = 18;

#[derive(Clone)]
pub struct Mongo {
    url: String,
    provisioner: String,
}

impl std::fmt::Debug for Mongo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mongo")
            .field("provisioner", &self.provisioner)
            .finish_non_exhaustive()
    }
}

fn server_code(e: &Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// Maps a driver error; messages of command errors never include the command, so no password.
fn classify(e: &Error, what: &str) -> EngineError {
    match &*e.kind {
        ErrorKind::Authentication { .. } => {
            EngineError::Unavailable(format!("{what}: provisioner login refused"))
        }
        ErrorKind::Command(c) if c.code == AUTHENTICATION_FAILED => {
            EngineError::Unavailable(format!("{what}: provisioner login refused"))
        }
        ErrorKind::Command(c) => EngineError::Failed(format!(
            "{what}: server error {} ({}): {}",
            c.code, c.code_name, c.message
        )),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            EngineError::Failed(format!("{what}: write error {}", w.code))
        }
        // No server was selected: the command was never sent.
        ErrorKind::ServerSelection { .. } => {
            EngineError::Unreachable(format!("{what}: server unreachable"))
        }
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            EngineError::Unavailable(format!("{what}: connection lost"))
        }
        _ => EngineError::Failed(format!("{what}: {e}")),
    }
}

/// The user's roles: its own database, nothing else.
fn tenant_roles(db: &str) -> Vec<Document> {
    vec![
        doc! { "role": "readWrite", "db": db },
        doc! { "role": "dbAdmin", "db": db },
    ]
}

fn checked(password: &Password) -> Result<&str, EngineError> {
    if password.is_alphanumeric() {
        Ok(password.expose())
    } else {
        Err(EngineError::Failed(
            "refusing a password with unexpected characters".into(),
        ))
    }
}

/// One short-lived connection to the server; closed when dropped via [`Session::close`].
struct Session(Client);

impl Session {
    fn admin(&self) -> mongodb::Database {
        self.0.database("admin")
    }

    async fn command(&self, db: &str, cmd: Document, what: &str) -> Result<Document, EngineError> {
        self.0
            .database(db)
            .run_command(cmd)
            .await
            .map_err(|e| classify(&e, what))
    }

    /// Closes the connection. Bounded: `shutdown` waits for anything still holding the client,
    /// and closing must never hold up the caller.
    async fn close(self) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.0.shutdown()).await;
    }
}

/// Who a registry document says owns a user: `None` when there is no claim.
async fn claim(s: &Session, user: &str) -> Result<Option<String>, EngineError> {
    let found =
        s.0.database(REGISTRY_DB)
            .collection::<Document>(REGISTRY)
            .find_one(doc! { "_id": user })
            .await
            .map_err(|e| classify(&e, "read ownership registry"))?;
    Ok(found.and_then(|d| d.get_str("mark").ok().map(str::to_owned)))
}

async fn user_exists(s: &Session, user: &str) -> Result<bool, EngineError> {
    let info = s
        .command(
            "admin",
            doc! { "usersInfo": { "user": user, "db": "admin" } },
            "read user",
        )
        .await?;
    Ok(info.get_array("users").is_ok_and(|u| !u.is_empty()))
}

impl Mongo {
    pub fn new(admin_url: &str) -> Result<Self, EngineError> {
        // A `tls=true` URL makes the driver ask rustls for the process's provider.
        hepdb_store::tls::install_crypto_provider();
        let parsed = ConnectionString::parse(admin_url)
            .map_err(|_| EngineError::Failed("invalid MongoDB admin URL".into()))?;
        let provisioner = parsed
            .credential
            .as_ref()
            .and_then(|c| c.username.clone())
            .ok_or_else(|| EngineError::Failed("MongoDB admin URL must carry a user".into()))?;
        Ok(Self {
            url: admin_url.to_owned(),
            provisioner,
        })
    }

    async fn options(&self) -> Result<ClientOptions, EngineError> {
        let mut opts = ClientOptions::parse(&self.url)
            .await
            .map_err(|_| EngineError::Failed("invalid MongoDB admin URL".into()))?;
        opts.server_selection_timeout = Some(CONNECT_TIMEOUT);
        opts.connect_timeout = Some(CONNECT_TIMEOUT);
        opts.app_name = Some("hepdb-worker".into());
        opts.max_pool_size = Some(1);
        Ok(opts)
    }

    async fn session(&self) -> Result<Session, EngineError> {
        let client =
            Client::with_options(self.options().await?).map_err(|e| classify(&e, "connect"))?;
        Ok(Session(client))
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        let s = self.session().await?;
        let r = s.command("admin", doc! { "ping": 1 }, "ping").await;
        s.close().await;
        r.map(drop)
    }

    /// Grants (or revokes) the provisioner `dbAdmin` on one tenant database.
    async fn self_grant(&self, s: &Session, db: &str, grant: bool) -> Result<(), EngineError> {
        let verb = if grant {
            "grantRolesToUser"
        } else {
            "revokeRolesFromUser"
        };
        s.command(
            "admin",
            doc! { verb: &self.provisioner, "roles": [{ "role": "dbAdmin", "db": db }] },
            "grant provisioner",
        )
        .await
        .map(drop)
    }

    /// Whether a database of that name exists with data (`listDatabases`, which MongoDB lets
    /// `clusterMonitor` run).
    async fn database_in_use(s: &Session, db: &str) -> Result<bool, EngineError> {
        let list = s
            .command("admin", doc! { "listDatabases": 1 }, "list databases")
            .await?;
        Ok(list.get_array("databases").is_ok_and(|dbs| {
            dbs.iter()
                .filter_map(|d| d.as_document())
                .any(|d| d.get_str("name") == Ok(db) && !d.get_bool("empty").unwrap_or(false))
        }))
    }

    pub async fn create(&self, target: &Target, password: &Password) -> Result<(), EngineError> {
        let pw = checked(password)?;
        let (db, user, mark) = (
            target.names.db_name(),
            target.names.db_user(),
            target.mark(),
        );
        let s = self.session().await?;
        let result = self.create_in(&s, db, user, &mark, pw).await;
        s.close().await;
        result?;
        if self.can_login(target, password).await? {
            Ok(())
        } else {
            Err(EngineError::Failed("the new user does not log in".into()))
        }
    }

    async fn create_in(
        &self,
        s: &Session,
        db: &str,
        user: &str,
        mark: &str,
        pw: &str,
    ) -> Result<(), EngineError> {
        match claim(s, user).await? {
            Some(m) if m == mark => {}
            Some(_) => return Err(EngineError::collision("user", user)),
            None => {
                if user_exists(s, user).await? {
                    return Err(EngineError::collision("user", user));
                }
                if Self::database_in_use(s, db).await? {
                    return Err(EngineError::collision("database", db));
                }
                let registry = s.0.database(REGISTRY_DB).collection::<Document>(REGISTRY);
                match registry
                    .insert_one(doc! { "_id": user, "db": db, "mark": mark })
                    .await
                {
                    Ok(_) => {}
                    // Claimed concurrently by a duplicate delivery: fine only if it is our claim.
                    Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => {
                        if claim(s, user).await?.as_deref() != Some(mark) {
                            return Err(EngineError::collision("user", user));
                        }
                    }
                    Err(e) => return Err(classify(&e, "claim ownership")),
                }
            }
        }
        self.self_grant(s, db, true).await?;
        let created = s
            .admin()
            .run_command(doc! {
                "createUser": user,
                "pwd": pw,
                "roles": tenant_roles(db),
                "mechanisms": ["SCRAM-SHA-256"],
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            // Ours from an earlier attempt (the claim says so): converge password and roles.
            Err(e) if matches!(server_code(&e), Some(USER_EXISTS | DUPLICATE_KEY)) => s
                .command(
                    "admin",
                    doc! { "updateUser": user, "pwd": pw, "roles": tenant_roles(db) },
                    "update user",
                )
                .await
                .map(drop),
            Err(e) => Err(classify(&e, "create user")),
        }
    }

    pub async fn alter_password(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<(), EngineError> {
        let pw = checked(password)?;
        self.update_owned_user(target, doc! { "pwd": pw }).await
    }

    /// Sets the user's roles.
    async fn set_roles(&self, target: &Target, roles: Vec<Document>) -> Result<(), EngineError> {
        self.update_owned_user(target, doc! { "roles": roles })
            .await
    }

    /// `updateUser` with `changes`, after proving by our claim that the user is ours.
    async fn update_owned_user(
        &self,
        target: &Target,
        changes: Document,
    ) -> Result<(), EngineError> {
        let user = target.names.db_user();
        let s = self.session().await?;
        let result = async {
            match claim(&s, user).await? {
                Some(m) if m == target.mark() => {}
                Some(_) => return Err(EngineError::collision("user", user)),
                None => {
                    return Err(EngineError::Failed(format!(
                        "user {user} is not registered"
                    )));
                }
            }
            let mut command = doc! { "updateUser": user };
            command.extend(changes);
            s.command("admin", command, "update user").await.map(drop)
        }
        .await;
        s.close().await;
        result
    }

    /// Sets the roles that give `access` in one `updateUser`.
    pub async fn set_access(
        &self,
        target: &Target,
        access: hepdb_core::Access,
    ) -> Result<(), EngineError> {
        match access {
            hepdb_core::Access::Full => self.restore_writes(target).await,
            hepdb_core::Access::Restricted => self.restrict_writes(target).await,
            hepdb_core::Access::Locked => self.lock_login(target).await,
        }
    }

    /// MongoDB has no per-user login switch: a locked user keeps authenticating but holds no
    /// role, so it can reach nothing. Unlocking gives back full rights; a caller that had
    /// restricted writes restricts them again.
    pub async fn lock_login(&self, target: &Target) -> Result<(), EngineError> {
        self.set_roles(target, vec![]).await
    }

    pub async fn unlock_login(&self, target: &Target) -> Result<(), EngineError> {
        self.set_roles(target, tenant_roles(target.names.db_name()))
            .await
    }

    /// `read` only. `dbAdmin` would let the tenant drop collections, but also build indexes,
    /// create (capped) collections and turn on the profiler, each of which grows storage; the
    /// built-in roles have nothing between, and a custom role (`createRole`) is not something
    /// every server this runs against supports.
    pub async fn restrict_writes(&self, target: &Target) -> Result<(), EngineError> {
        let roles = vec![doc! { "role": "read", "db": target.names.db_name() }];
        self.set_roles(target, roles).await
    }

    pub async fn restore_writes(&self, target: &Target) -> Result<(), EngineError> {
        self.set_roles(target, tenant_roles(target.names.db_name()))
            .await
    }

    pub async fn can_login(
        &self,
        target: &Target,
        password: &Password,
    ) -> Result<bool, EngineError> {
        let mut opts = self.options().await?;
        opts.credential = Some(
            Credential::builder()
                .username(target.names.db_user().to_owned())
                .password(password.expose().to_owned())
                .source("admin".to_owned())
                .mechanism(AuthMechanism::ScramSha256)
                .build(),
        );
        opts.app_name = Some("hepdb-login-check".into());
        let client = Client::with_options(opts).map_err(|e| classify(&e, "tenant login"))?;
        let r = client
            .database(target.names.db_name())
            .list_collection_names()
            .await;
        client.shutdown().await;
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(&*e.kind, ErrorKind::Authentication { .. })
                    || matches!(server_code(&e), Some(AUTHENTICATION_FAILED | UNAUTHORIZED)) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify(&e, "tenant login")),
        }
    }

    pub async fn drop_owned(&self, target: &Target) -> Result<(), EngineError> {
        let (db, user) = (target.names.db_name(), target.names.db_user());
        let s = self.session().await?;
        match claim(&s, user).await {
            Ok(Some(m)) if m == target.mark() => {}
            Ok(None) => {
                s.close().await;
                return Ok(());
            }
            Ok(Some(_)) => {
                s.close().await;
                return Err(EngineError::collision("user", user));
            }
            Err(e) => {
                s.close().await;
                return Err(e);
            }
        }
        let result = async {
            self.self_grant(&s, db, true).await?;
            // A fresh session sees the grant; the claim goes last so a crash can finish.
            let d = self.session().await?;
            let dropped = d.0.database(db).drop().await;
            d.close().await;
            dropped.map_err(|e| classify(&e, "drop database"))?;
            match s.admin().run_command(doc! { "dropUser": user }).await {
                Ok(_) => {}
                Err(e) if server_code(&e) == Some(USER_NOT_FOUND) => {}
                Err(e) => return Err(classify(&e, "drop user")),
            }
            self.self_grant(&s, db, false).await?;
            s.0.database(REGISTRY_DB)
                .collection::<Document>(REGISTRY)
                .delete_one(doc! { "_id": user })
                .await
                .map_err(|e| classify(&e, "release ownership claim"))
                .map(drop)
        }
        .await;
        s.close().await;
        result
    }

    /// Every claim in the ownership registry.
    pub async fn marked(&self) -> Result<Vec<super::Marked>, EngineError> {
        use futures_util::TryStreamExt;
        let s = self.session().await?;
        let claims: Result<Vec<Document>, _> = async {
            s.0.database(REGISTRY_DB)
                .collection::<Document>(REGISTRY)
                .find(doc! {})
                .await?
                .try_collect()
                .await
        }
        .await;
        s.close().await;
        let claims = claims.map_err(|e| classify(&e, "read ownership registry"))?;
        Ok(claims
            .iter()
            .filter_map(|c| {
                Some(super::Marked {
                    id: super::parse_mark(c.get_str("mark").ok()?)?,
                    object: c.get_str("_id").ok()?.to_owned(),
                })
            })
            .collect())
    }

    /// `dbStats` storage size of every registered database (MongoDB has no one-query form
    /// that needs only database-level rights); a database whose `dbStats` fails is left out.
    pub async fn sizes(&self) -> Result<Vec<(String, i64)>, EngineError> {
        use futures_util::TryStreamExt;
        let s = self.session().await?;
        let result = async {
            let claims: Vec<Document> =
                s.0.database(REGISTRY_DB)
                    .collection::<Document>(REGISTRY)
                    .find(doc! {})
                    .await
                    .map_err(|e| classify(&e, "read ownership registry"))?
                    .try_collect()
                    .await
                    .map_err(|e| classify(&e, "read ownership registry"))?;
            let mut sizes = Vec::with_capacity(claims.len());
            for db in claims.iter().filter_map(|c| c.get_str("db").ok()) {
                // One database that cannot be measured never stops the others: it is left out,
                // and the watcher counts it as unmeasured.
                let stats = match s.command(db, doc! { "dbStats": 1 }, "dbStats").await {
                    Ok(stats) => stats,
                    Err(error) => {
                        tracing::warn!(%error, db, "cannot measure a database");
                        continue;
                    }
                };
                let bytes = ["storageSize", "dataSize"]
                    .iter()
                    .find_map(|k| stats.get(*k).and_then(bson_i64))
                    .unwrap_or(0);
                sizes.push((db.to_owned(), bytes));
            }
            Ok(sizes)
        }
        .await;
        s.close().await;
        result
    }

    /// Creates or updates the provisioner named in `admin_url`, connecting with `root_url`.
    /// Idempotent.
    pub async fn bootstrap(root_url: &str, admin_url: &str) -> Result<String, EngineError> {
        let admin = ConnectionString::parse(admin_url)
            .map_err(|_| EngineError::Failed("invalid MongoDB admin URL".into()))?;
        let (Some(name), Some(pass)) = admin
            .credential
            .as_ref()
            .map_or((None, None), |c| (c.username.clone(), c.password.clone()))
        else {
            return Err(EngineError::Failed(
                "admin URL must carry a user and a password".into(),
            ));
        };
        let root = Mongo {
            url: root_url.to_owned(),
            provisioner: String::new(),
        };
        let s = root.session().await?;
        let roles = vec![
            doc! { "role": "userAdmin", "db": "admin" },
            doc! { "role": "clusterMonitor", "db": "admin" },
            doc! { "role": "read", "db": "admin" },
            doc! { "role": "readWrite", "db": REGISTRY_DB },
        ];
        let result = async {
            if user_exists(&s, &name).await? {
                // Keep the per-database grants it gave itself; reset the password and base roles.
                s.command(
                    "admin",
                    doc! { "updateUser": &name, "pwd": &pass },
                    "update provisioner",
                )
                .await?;
                s.command(
                    "admin",
                    doc! { "grantRolesToUser": &name, "roles": roles },
                    "grant provisioner",
                )
                .await
                .map(drop)
            } else {
                s.command(
                    "admin",
                    doc! { "createUser": &name, "pwd": &pass, "roles": roles,
                    "mechanisms": ["SCRAM-SHA-256"] },
                    "create provisioner",
                )
                .await
                .map(drop)
            }
        }
        .await;
        s.close().await;
        result.map(|()| name)
    }
}

fn bson_i64(b: &mongodb::bson::Bson) -> Option<i64> {
    match b {
        mongodb::bson::Bson::Int32(n) => Some(i64::from(*n)),
        mongodb::bson::Bson::Int64(n) => Some(*n),
        #[allow(clippy::cast_possible_truncation)]
        mongodb::bson::Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}
