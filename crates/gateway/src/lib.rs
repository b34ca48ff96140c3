//! The hepdb gateway: the public management API.
//!
//! It authenticates, validates, checks quotas and records intent in metadata; it never runs
//! engine DDL. Creates and rotates go to the worker over RabbitMQ ([`dispatch`]).

pub mod audit;
pub mod auth;
pub mod client_addr;
pub mod dispatch;
mod envelope;
pub mod error;
mod metrics;
pub mod openapi;
mod platform;
pub mod rate_limit;
pub mod request_id;
pub(crate) mod routes;
pub mod state;

use std::{net::TcpListener, time::Duration};

use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context;
use hepdb_core::settings::Settings;
use hepdb_queue::Topology;
use hepdb_store::Store;

use crate::{audit::AuditWriter, dispatch::Dispatcher, state::AppState};

/// A bound, not yet running gateway. Binding to port 0 picks a free port (tests).
pub struct Application {
    port: u16,
    server: Server,
    platform_port: u16,
    platform: Server,
    metrics_port: u16,
    metrics: Server,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish()
    }
}

impl Application {
    /// Binds the listener and registers the configured engine hosts in metadata (so placement
    /// and connection strings follow configuration). If metadata is down, registration is
    /// retried in the background and the gateway starts anyway: it answers 503 until then.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        hepdb_telemetry::metrics();
        let store = Store::connect(settings.metadata.url.expose(), settings.metadata.pool_size)
            .context("metadata pool")?;
        if let Err(error) = store.register_configured_hosts(&settings.engines).await {
            if matches!(error, hepdb_store::StoreError::Guard(_)) {
                return Err(error).context("registering engine hosts");
            }
            tracing::warn!(%error, "cannot register engine hosts yet; retrying in the background");
            let (store, engines) = (store.clone(), settings.engines.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    match store.register_configured_hosts(&engines).await {
                        Ok(()) => break tracing::info!("engine hosts registered"),
                        Err(error) => tracing::warn!(%error, "still cannot register engine hosts"),
                    }
                }
            });
        }
        let topology = Topology::from_settings(&settings.amqp);
        let dispatcher = Dispatcher::start(
            settings.amqp.url.expose(),
            topology,
            store.clone(),
            Duration::from_millis(settings.gateway.job_timeout_ms),
        );
        let state = web::Data::new(AppState {
            audit: AuditWriter::start(store.clone()),
            store,
            dispatcher,
            key: settings.crypto.master_key().context("crypto.master_key")?,
            engines: settings.engines.clone(),
            limits: rate_limit::Limits::from_settings(&settings.rate_limit),
        });
        // Forwarding headers are believed on the public listener only (behind the ingress).
        let proxies = web::Data::new(
            client_addr::TrustedProxies::parse(
                &settings.gateway.trusted_proxies,
                &settings.gateway.client_address_header,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "`gateway.trusted_proxies` / `gateway.client_address_header` \
                     (HEPDB__GATEWAY__TRUSTED_PROXIES, HEPDB__GATEWAY__CLIENT_ADDRESS_HEADER): {e}"
                )
            })?,
        );
        if state.limits.is_some() {
            // Callers whose budgets are whole again are forgotten, so that the counts stay as
            // small as the set of recent callers.
            let state = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    if let Some(limits) = &state.limits {
                        limits.forget_idle();
                    }
                }
            });
        }
        let listener = TcpListener::bind(&settings.gateway.listen)
            .with_context(|| format!("binding gateway.listen {}", settings.gateway.listen))?;
        let port = listener.local_addr()?.port();
        let json = web::JsonConfig::default()
            .limit(settings.gateway.max_body_bytes)
            .error_handler(error::json_error);
        let (app_state, app_json) = (state.clone(), json.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(rate_limit::headers))
                .wrap(actix_web::middleware::from_fn(metrics::record))
                .wrap(actix_web::middleware::from_fn(request_id::assign))
                .app_data(app_state.clone())
                .app_data(app_json.clone())
                .app_data(proxies.clone())
                .configure(routes::configure)
                .default_service(web::to(error::no_route))
        })
        .listen(listener)?
        .shutdown_timeout(settings.gateway.shutdown_secs);
        if settings.gateway.workers > 0 {
            server = server.workers(settings.gateway.workers);
        }
        let (platform, platform_port) = platform_server(settings, state.clone(), json)?;
        let (metrics, metrics_port) = metrics_server(settings)?;
        Ok(Self {
            port,
            server: server.run(),
            platform_port,
            platform,
            metrics_port,
            metrics,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the platform API's own listener.
    pub fn platform_port(&self) -> u16 {
        self.platform_port
    }

    /// The port of the `/metrics` listener.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Waits until the broker connection is up (used at start-up and by tests).
    pub async fn wait_broker(&self, timeout: Duration) -> bool {
        self.state.dispatcher.wait_connected(timeout).await
    }

    /// Serves until the server is stopped; on SIGTERM actix stops accepting and drains
    /// in-flight requests (up to the shutdown timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let _state = self.state;
        let (public, platform, metrics) =
            futures_util::future::join3(self.server, self.platform, self.metrics).await;
        public.and(platform).and(metrics)
    }
}

/// `/metrics` on a listener of its own (`gateway.metrics_listen`), one thread.
fn metrics_server(settings: &Settings) -> anyhow::Result<(Server, u16)> {
    let listener = TcpListener::bind(&settings.gateway.metrics_listen).with_context(|| {
        format!(
            "binding gateway.metrics_listen {}",
            settings.gateway.metrics_listen
        )
    })?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(|| {
        App::new()
            .route("/metrics", web::get().to(metrics::render))
            .default_service(web::to(error::no_route))
    })
    .listen(listener)?
    .workers(1)
    .shutdown_timeout(settings.gateway.shutdown_secs)
    .run();
    Ok((server, port))
}

/// The platform API's server: its own listener (`platform.listen`), its own routes, the same
/// state, middleware and JSON limits as the public one. Two threads: it serves the platform's
/// few services, not the public's load.
fn platform_server(
    settings: &Settings,
    state: web::Data<AppState>,
    json: web::JsonConfig,
) -> anyhow::Result<(Server, u16)> {
    let listener = TcpListener::bind(&settings.platform.listen)
        .with_context(|| format!("binding platform.listen {}", settings.platform.listen))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(request_id::assign))
            .app_data(state.clone())
            .app_data(json.clone())
            .configure(platform::configure)
            .default_service(web::to(error::no_route))
    })
    .listen(listener)?
    .workers(2)
    .shutdown_timeout(settings.gateway.shutdown_secs)
    .run();
    Ok((server, port))
}
