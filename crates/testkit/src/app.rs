//! One test's stack: its own metadata database and queue prefix, a worker and a gateway
//! (port 0) in-process, and an account with a key.

use std::time::Duration;

use hepdb_core::{AccountId, settings::Settings};
use hepdb_gateway::Application;
use hepdb_store::{Store, migrate};
use hepdb_worker::Worker;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{bootstrap_provisioners, metadata::own_metadata};

/// One test's running stack. Its `Debug` leaves out the key and the settings (secrets).
pub struct TestApp {
    pub address: String,
    /// The platform API's own listener.
    pub platform_address: String,
    /// The gateway's `/metrics` listener.
    pub metrics_address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub store: Store,
    pub worker: Option<Worker>,
    pub account: AccountId,
    pub key: String,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("address", &self.address)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// How a test wants its stack.
#[derive(Debug, Default)]
pub struct Options {
    /// Start without a worker (jobs stay queued).
    pub no_worker: bool,
    /// Do not wait for the broker (for tests that point it somewhere dead).
    pub no_broker_wait: bool,
    pub slots: Option<i32>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default(), |_| {}).await
}

pub async fn spawn_app_with(options: Options, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::load().expect("settings");
    let tag = own_metadata(&mut settings, "");
    settings.metadata.pool_size = 8;
    settings.amqp.queue_prefix = format!("test_{tag}");
    // Idle test queues go within two minutes: every run makes three per test, and a broker
    // restarted (by the broker tests) with thousands of them to recover can take minutes.
    settings.amqp.queue_expires_secs = 120;
    settings.gateway.listen = "127.0.0.1:0".into();
    settings.platform.listen = "127.0.0.1:0".into();
    settings.gateway.metrics_listen = "127.0.0.1:0".into();
    // Tests drive one key hard; the rate-limit tests turn limits back on with their own.
    settings.rate_limit.enabled = false;
    settings.gateway.workers = 2;
    settings.worker.admin_listen = "127.0.0.1:0".into();
    // Tests run reconciler passes themselves (`Worker::reconcile`).
    settings.worker.reconcile_interval_secs = 0;
    settings.quota.interval_secs = 0;
    settings.engines.postgres.enabled = true;
    settings.engines.mongo.enabled = true;
    bootstrap_provisioners().await;
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
    let (port, platform_port, metrics_port) = (app.port(), app.platform_port(), app.metrics_port());
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
        platform_address: format!("http://127.0.0.1:{platform_port}"),
        metrics_address: format!("http://127.0.0.1:{metrics_port}"),
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
        let url = format!("{}{path}", self.address);
        self.request(method, url, auth, body, headers).await
    }

    /// A request to the platform API, with `Authorization: <auth>` (none when `None`).
    pub async fn platform(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/platform/v1{path}", self.platform_address);
        self.request(method, url, auth, body, &[]).await
    }

    /// Sends a request and returns the status and the JSON body (which must be JSON).
    async fn request(
        &self,
        method: Method,
        url: String,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, url);
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
        // Every test that meets a 503 or a 429 checks that it says when to come back.
        if matches!(status.as_u16(), 429 | 503) {
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            assert!(
                retry.is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s >= 1)),
                "a {status} without a Retry-After of whole seconds: {retry:?}"
            );
        }
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, json)
    }

    /// A new platform token named `name`, as `Bearer <token>`.
    pub async fn platform_token(&self, name: &str) -> String {
        let (_, token) = self.store.mint_platform_token(name).await.unwrap();
        format!("Bearer {}", token.expose())
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
            .insert_rotate_job(self.account, id, sealed, None, None)
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

    /// How many hosts' placement counts (kept on the host row by triggers) disagree with a
    /// count of their slot-holding databases, in one snapshot.
    pub async fn placement_counts_disagree(&self) -> usize {
        self.metadata_sql(
            "SELECT 1 FROM engine_hosts h WHERE h.databases <> \
             (SELECT count(*) FROM databases d WHERE d.host = h.name AND d.state <> 'failed')",
        )
        .await
    }

    /// Every job that carries a sealed password: its database id and the sealed bytes.
    pub async fn sealed_job_passwords(&self) -> Vec<(String, Vec<u8>)> {
        use diesel::prelude::*;
        use diesel_async::{AsyncConnection, RunQueryDsl};
        use hepdb_store::schema::jobs;
        let mut conn =
            diesel_async::AsyncPgConnection::establish(self.settings.metadata.url.expose())
                .await
                .unwrap();
        jobs::table
            .filter(jobs::password_sealed.is_not_null())
            .select((
                jobs::database_id.assume_not_null(),
                jobs::password_sealed.assume_not_null(),
            ))
            .load(&mut conn)
            .await
            .unwrap()
    }

    /// Starts the worker (again).
    pub async fn start_worker(&mut self) {
        let w = Worker::start(&self.settings).expect("worker");
        assert!(w.wait_consuming(Duration::from_secs(15)).await);
        self.worker = Some(w);
    }
}
