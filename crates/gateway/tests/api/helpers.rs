//! Test harness: each test gets its own metadata database and queue prefix, a worker and a
//! gateway (port 0) in-process, and an account with a key.

use std::time::Duration;

use hepdb_core::{AccountId, settings::Settings};
use hepdb_gateway::Application;
use hepdb_store::{Store, migrate};
use hepdb_worker::{
    Worker,
    engines::{MariaDb, Mongo, Postgres},
};
use mysql_async::{Opts, OptsBuilder, prelude::Queryable};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub store: Store,
    pub worker: Option<Worker>,
    pub account: AccountId,
    pub key: String,
}

/// How a test wants its stack.
#[derive(Default)]
pub struct Options {
    /// Start without a worker (jobs stay queued).
    pub no_worker: bool,
    /// Do not wait for the broker (for tests that point it somewhere dead).
    pub no_broker_wait: bool,
    pub slots: Option<i32>,
}

pub fn root_url() -> String {
    std::env::var("HEPDB_TEST_MARIADB_ROOT_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The superuser of the tenant PostgreSQL instance (`.ci/services.sh` runs it on 5433).
pub fn postgres_root_url() -> String {
    std::env::var("HEPDB_TEST_POSTGRES_ROOT_URL")
        .unwrap_or_else(|_| "postgres://postgres:hepdb-dev-root@127.0.0.1:5433/postgres".into())
}

/// The root user of the MongoDB engine (`.ci/services.sh` runs the smongo stand-in on 27017).
pub fn mongo_root_url() -> String {
    std::env::var("HEPDB_TEST_MONGO_ROOT_URL")
        .unwrap_or_else(|_| "mongodb://root:hepdb-dev-root@127.0.0.1:27017/admin".into())
}

/// Sets up each engine's provisioner once per test process (concurrent `ALTER ROLE`s of one
/// role would trip over each other).
async fn bootstrap_provisioners(settings: &Settings) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let e = &settings.engines;
        MariaDb::bootstrap(
            &root_url(),
            e.mariadb.single.admin_url.as_ref().unwrap().expose(),
        )
        .await
        .expect("bootstrap the MariaDB provisioner");
        Postgres::bootstrap(
            &postgres_root_url(),
            e.postgres.single.admin_url.as_ref().unwrap().expose(),
        )
        .await
        .expect("bootstrap the PostgreSQL provisioner (is the tenant instance on 5433 up?)");
        Mongo::bootstrap(
            &mongo_root_url(),
            e.mongo.single.admin_url.as_ref().unwrap().expose(),
        )
        .await
        .expect("bootstrap the MongoDB provisioner (is the engine on 27017 up?)");
    })
    .await;
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default(), |_| {}).await
}

pub async fn spawn_app_with(options: Options, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::load().expect("settings");
    let tag = ulid::Ulid::new().to_string().to_lowercase();
    let base = settings
        .metadata
        .url
        .expose()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned();
    settings.metadata.url = hepdb_core::settings::Secret::new(format!("{base}/hepdb_test_{tag}"));
    settings.metadata.pool_size = 8;
    settings.amqp.queue_prefix = format!("test_{tag}");
    settings.amqp.queue_expires_secs = 600;
    settings.gateway.listen = "127.0.0.1:0".into();
    settings.gateway.workers = 2;
    settings.worker.admin_listen = "127.0.0.1:0".into();
    // Tests run reconciler passes themselves (`Worker::reconcile`).
    settings.worker.reconcile_interval_secs = 0;
    settings.quota.interval_secs = 0;
    settings.engines.postgres.enabled = true;
    settings.engines.mongo.enabled = true;
    bootstrap_provisioners(&settings).await;
    configure(&mut settings);
    settings.validate().expect("valid test settings");
    migrate::migrate(settings.metadata.url.expose())
        .await
        .expect("migrate");

    let worker = (!options.no_worker).then(|| Worker::start(&settings).expect("worker"));
    if let (Some(w), false) = (&worker, options.no_broker_wait) {
        assert!(
            w.wait_consuming(Duration::from_secs(15)).await,
            "worker never connected"
        );
    }
    // The gateway runs as in production: without any engine credential.
    let mut gateway_settings = settings.clone();
    gateway_settings.engines.forget_credentials();
    let app = Application::build(&gateway_settings)
        .await
        .expect("gateway");
    let port = app.port();
    if !options.no_broker_wait {
        assert!(
            app.wait_broker(Duration::from_secs(15)).await,
            "gateway never connected"
        );
    }
    tokio::spawn(app.run_until_stopped());

    let store = Store::connect(settings.metadata.url.expose(), 4).unwrap();
    let account = store
        .create_account("test", options.slots.unwrap_or(3), 1024)
        .await
        .unwrap();
    let account: AccountId = account.id.parse().unwrap();
    let (_, key) = store.mint_key(account).await.unwrap().unwrap();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        settings,
        store,
        worker,
        account,
        key: key.expose().to_owned(),
    }
}

impl TestApp {
    /// Sends a request with `Authorization: <auth>` (none when `None`) and returns the status
    /// and the JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send_with(method, path, auth, body, &[]).await
    }

    /// [`TestApp::send`] with extra request headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, json)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    pub async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            "/api/v1/db/databases",
            Some(&self.bearer()),
            Some(body),
        )
        .await
    }

    /// Create with an `Idempotency-Key`.
    pub async fn create_keyed(&self, body: Value, key: &str) -> (StatusCode, Value) {
        self.send_with(
            Method::POST,
            "/api/v1/db/databases",
            Some(&self.bearer()),
            Some(body),
            &[("Idempotency-Key", key)],
        )
        .await
    }

    /// Rotate with an `Idempotency-Key`.
    pub async fn rotate_keyed(&self, id: &str, key: &str) -> (StatusCode, Value) {
        self.send_with(
            Method::POST,
            &format!("/api/v1/db/databases/{id}/rotate"),
            Some(&self.bearer()),
            None,
            &[("Idempotency-Key", key)],
        )
        .await
    }

    pub async fn list(&self) -> (StatusCode, Value) {
        self.send(
            Method::GET,
            "/api/v1/db/databases",
            Some(&self.bearer()),
            None,
        )
        .await
    }

    pub async fn reveal(&self, id: &str) -> (StatusCode, Value) {
        self.send(
            Method::GET,
            &format!("/api/v1/db/databases/{id}"),
            Some(&self.bearer()),
            None,
        )
        .await
    }

    pub async fn rotate(&self, id: &str) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            &format!("/api/v1/db/databases/{id}/rotate"),
            Some(&self.bearer()),
            None,
        )
        .await
    }

    /// A second account with its own key, on the same stack.
    pub async fn other_tenant(&self) -> (AccountId, String) {
        let a = self.store.create_account("other", 3, 1024).await.unwrap();
        let id: AccountId = a.id.parse().unwrap();
        let (_, key) = self.store.mint_key(id).await.unwrap().unwrap();
        (id, key.expose().to_owned())
    }

    /// Another account with its own key and storage quota; returns its id and bearer header.
    pub async fn tenant_with_quota(&self, storage_mb: i64) -> (AccountId, String) {
        let a = self
            .store
            .create_account("quota", 5, storage_mb)
            .await
            .unwrap();
        let id: AccountId = a.id.parse().unwrap();
        let (_, key) = self.store.mint_key(id).await.unwrap().unwrap();
        (id, format!("Bearer {}", key.expose()))
    }

    /// The account's 10-hex name tag.
    pub async fn tag(&self) -> String {
        self.store
            .account(self.account)
            .await
            .unwrap()
            .unwrap()
            .db_tag
    }

    /// Records a rotate intent for database `id` the way the gateway does (the new password
    /// sealed in the job), and returns the job's message and the new password.
    pub async fn rotate_intent(
        &self,
        id: hepdb_core::DatabaseId,
    ) -> (hepdb_core::job::JobMessage, hepdb_core::secret::Password) {
        let new = hepdb_core::secret::Password::generate();
        let sealed = self.settings.crypto.master_key().unwrap().seal(id, &new);
        let job = self
            .store
            .insert_rotate_job(self.account, id, sealed, None)
            .await
            .unwrap()
            .unwrap();
        let msg = hepdb_core::job::JobMessage {
            v: hepdb_core::job::MESSAGE_VERSION,
            job_id: job,
            database_id: id,
            kind: hepdb_core::job::JobKindWire::Rotate,
        };
        (msg, new)
    }

    /// Stands in for a delivery that took the job (one attempt counted) and died in its step.
    pub async fn claimed_by_a_dead_delivery(&self, msg: &hepdb_core::job::JobMessage) {
        let mut held = self
            .store
            .hold(msg.job_id, msg.database_id, true)
            .await
            .unwrap()
            .unwrap();
        held.claim().await.unwrap().expect("a live job");
        held.release().await;
    }

    /// Records a MariaDB create intent exactly as the gateway does, without publishing it (as
    /// if the gateway died right after its commit). Returns the reservation and the password.
    pub async fn reserve_intent(
        &self,
        name: &str,
    ) -> (
        hepdb_store::databases::Reserved,
        hepdb_core::secret::Password,
    ) {
        let id = hepdb_core::DatabaseId::new();
        let password = hepdb_core::secret::Password::generate();
        let key = self.settings.crypto.master_key().unwrap();
        let reserved = self
            .store
            .reserve_create(hepdb_store::databases::NewDatabase {
                id,
                account: self.account,
                name,
                engine: hepdb_core::Engine::Mariadb,
                password_sealed: key.seal(id, &password),
                hosts: &["mariadb"],
                idempotency: None,
            })
            .await
            .unwrap();
        (reserved, password)
    }

    /// Runs one statement on this test's metadata database, to build states no API call makes
    /// (what a crash at the wrong moment leaves).
    pub async fn metadata_sql(&self, sql: &str) -> usize {
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let mut conn =
            diesel_async::AsyncPgConnection::establish(self.settings.metadata.url.expose())
                .await
                .unwrap();
        diesel::sql_query(sql).execute(&mut conn).await.unwrap()
    }

    /// Starts the worker (again).
    pub async fn start_worker(&mut self) {
        let w = Worker::start(&self.settings).expect("worker");
        assert!(w.wait_consuming(Duration::from_secs(15)).await);
        self.worker = Some(w);
    }
}

/// Connects with a connection string as a user would, with the engine's own client library,
/// and writes and reads back a table (MongoDB: a collection).
pub async fn use_database(connection_string: &str) -> Result<(), String> {
    let scheme = connection_string.split("://").next().unwrap();
    match scheme {
        "mysql" => use_mariadb(connection_string)
            .await
            .map_err(|e| e.to_string()),
        "postgresql" => use_postgres(connection_string)
            .await
            .map_err(|e| e.to_string()),
        "mongodb" => use_mongo(connection_string)
            .await
            .map_err(|e| e.to_string()),
        other => panic!("unexpected scheme {other}"),
    }
}

async fn use_mariadb(connection_string: &str) -> Result<(), mysql_async::Error> {
    let opts = Opts::from_url(connection_string).expect("valid mysql:// URL");
    let mut conn =
        mysql_async::Conn::new(OptsBuilder::from_opts(opts).prefer_socket(false)).await?;
    conn.query_drop("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v TEXT)")
        .await?;
    conn.query_drop("REPLACE INTO t VALUES (1, 'hello')")
        .await?;
    let v: Option<String> = conn.query_first("SELECT v FROM t WHERE id = 1").await?;
    assert_eq!(v.as_deref(), Some("hello"));
    conn.disconnect().await
}

async fn use_postgres(connection_string: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v TEXT); \
             INSERT INTO t VALUES (1, 'hello') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
        )
        .await?;
    let row = client
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "hello");
    Ok(())
}

/// The smongo stand-in keeps all databases in one namespace, so the collection is named after
/// the database to keep tenants' test writes apart.
async fn use_mongo(connection_string: &str) -> Result<(), mongodb::error::Error> {
    use mongodb::bson::{Document, doc};
    let client = mongodb::Client::with_uri_str(connection_string).await?;
    let db = client.default_database().expect("database in the URL");
    let coll = db.collection::<Document>(&format!("t_{}", db.name()));
    coll.insert_one(doc! { "v": "hello" }).await?;
    let found = coll.find_one(doc! { "v": "hello" }).await?;
    assert!(found.is_some());
    client.shutdown().await;
    Ok(())
}

/// Whether the server lets this user log in and open the database the string names, right now.
pub async fn can_login(connection_string: &str) -> bool {
    let scheme = connection_string.split("://").next().unwrap();
    match scheme {
        "mysql" => {
            let opts = Opts::from_url(connection_string).expect("valid mysql:// URL");
            match mysql_async::Conn::new(OptsBuilder::from_opts(opts).prefer_socket(false)).await {
                Ok(c) => {
                    let _ = c.disconnect().await;
                    true
                }
                // 1045 wrong password, 1044 no rights on the database, 4151 account locked.
                Err(mysql_async::Error::Server(e)) if [1045, 1044, 4151].contains(&e.code) => false,
                Err(e) => panic!("unexpected login error: {e}"),
            }
        }
        "postgresql" => {
            match tokio_postgres::connect(connection_string, tokio_postgres::NoTls).await {
                Ok(_) => true,
                Err(e) => {
                    let code = e.code().map(|c| c.code().to_owned());
                    // 28P01 wrong password, 42501 no CONNECT on the database.
                    assert!(
                        matches!(code.as_deref(), Some("28P01" | "42501" | "28000")),
                        "unexpected login error: {e}"
                    );
                    false
                }
            }
        }
        "mongodb" => {
            let client = mongodb::Client::with_uri_str(connection_string)
                .await
                .unwrap();
            let db = client.default_database().expect("database in the URL");
            let r = db.list_collection_names().await;
            client.shutdown().await;
            match r {
                Ok(_) => true,
                Err(e) => match &*e.kind {
                    mongodb::error::ErrorKind::Authentication { .. } => false,
                    // 13: Unauthorized, 18: AuthenticationFailed.
                    mongodb::error::ErrorKind::Command(c) if c.code == 13 || c.code == 18 => false,
                    _ => panic!("unexpected login error: {e}"),
                },
            }
        }
        other => panic!("unexpected scheme {other}"),
    }
}

/// A root connection, for checking the engine from outside hepdb.
pub async fn root() -> mysql_async::Conn {
    let opts = Opts::from_url(&root_url()).unwrap();
    mysql_async::Conn::new(OptsBuilder::from_opts(opts).prefer_socket(false))
        .await
        .unwrap()
}

/// Databases on the engine whose names carry this account tag.
pub async fn engine_databases(tag: &str) -> Vec<String> {
    let mut c = root().await;
    let pattern = format!("um\\_{tag}\\_%");
    c.exec(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ? ORDER BY 1",
        (pattern,),
    )
    .await
    .unwrap()
}

/// Users on the engine whose names carry this account tag.
pub async fn engine_users(tag: &str) -> Vec<String> {
    let mut c = root().await;
    let pattern = format!("dum\\_{tag}\\_%");
    c.exec(
        "SELECT User FROM mysql.user WHERE User LIKE ? ORDER BY 1",
        (pattern,),
    )
    .await
    .unwrap()
}

pub fn data(body: &Value) -> &Value {
    assert_eq!(body["ok"], true, "expected success: {body}");
    &body["data"]
}

/// Asserts the error envelope: ok false, a message, and exactly this code (or none).
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: Option<&str>) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match want_code {
        Some(code) => assert_eq!(body["code"], code, "{body}"),
        None => assert!(body.get("code").is_none(), "no code expected: {body}"),
    }
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<_> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}
