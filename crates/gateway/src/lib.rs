//! The hepdb gateway: the public management API.
//!
//! It authenticates, validates, checks quotas and records intent in metadata; it never runs
//! engine DDL. Creates and rotates go to the worker over RabbitMQ ([`dispatch`]).

pub mod auth;
pub mod dispatch;
pub mod error;
mod routes;
pub mod state;

use std::{net::TcpListener, time::Duration};

use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context;
use hepdb_core::settings::Settings;
use hepdb_queue::Topology;
use hepdb_store::Store;

use crate::{dispatch::Dispatcher, state::AppState};

/// A bound, not yet running gateway. Binding to port 0 picks a free port (tests).
pub struct Application {
    port: u16,
    server: Server,
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
    pub fn build(settings: &Settings) -> anyhow::Result<Self> {
        let store = Store::connect(settings.metadata.url.expose(), settings.metadata.pool_size)
            .context("metadata pool")?;
        let topology = Topology::new(
            &settings.amqp.queue_prefix,
            settings.amqp.queue_expires_secs,
        );
        let dispatcher = Dispatcher::start(
            settings.amqp.url.expose(),
            topology,
            store.clone(),
            Duration::from_millis(settings.gateway.job_timeout_ms),
        );
        let state = web::Data::new(AppState {
            store,
            dispatcher,
            key: settings.crypto.master_key().context("crypto.master_key")?,
            engines: settings.engines.clone(),
        });
        let listener = TcpListener::bind(&settings.gateway.listen)
            .with_context(|| format!("binding gateway.listen {}", settings.gateway.listen))?;
        let port = listener.local_addr()?.port();
        let json = web::JsonConfig::default()
            .limit(settings.gateway.max_body_bytes)
            .error_handler(error::json_error);
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(json.clone())
                .configure(routes::configure)
                .default_service(web::to(error::no_route))
        })
        .listen(listener)?
        .shutdown_timeout(30);
        if settings.gateway.workers > 0 {
            server = server.workers(settings.gateway.workers);
        }
        Ok(Self {
            port,
            server: server.run(),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until the broker connection is up (used at start-up and by tests).
    pub async fn wait_broker(&self, timeout: Duration) -> bool {
        self.state.dispatcher.wait_connected(timeout).await
    }

    /// Serves until the server is stopped; on SIGTERM actix stops accepting and drains
    /// in-flight requests (up to the shutdown timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let _state = self.state;
        self.server.await
    }
}
