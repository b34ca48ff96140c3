//! The hepdb worker: consumes create and rotate jobs from RabbitMQ and runs the engine DDL.
//!
//! It is the only component that holds engine credentials. It trusts nothing in a message but
//! the job id: names and sealed passwords come from metadata.

mod consumer;
pub mod engines;
pub mod jobs;

use std::time::Duration;

use anyhow::Context;
use hepdb_core::settings::Settings;
use hepdb_queue::{Supervised, Topology, supervise};
use hepdb_store::Store;

use crate::{engines::Engines, jobs::JobContext};

/// A running worker: its broker connection is supervised and its consumer restarts with it.
/// Dropping it stops consuming; unacked jobs go back to the queue.
#[derive(Debug)]
pub struct Worker {
    broker: Supervised<consumer::Session>,
    ctx: JobContext,
}

impl Worker {
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        let store = Store::connect(settings.metadata.url.expose(), settings.metadata.pool_size)
            .context("metadata pool")?;
        let engines = Engines::from_settings(&settings.engines).context("engine drivers")?;
        let key = settings.crypto.master_key().context("crypto.master_key")?;
        let ctx = JobContext {
            store,
            engines,
            key,
            max_attempts: settings.worker.max_attempts,
        };
        let topology = Topology::new(
            &settings.amqp.queue_prefix,
            settings.amqp.queue_expires_secs,
        );
        let prefetch = settings.worker.prefetch;
        let setup_ctx = ctx.clone();
        let broker = supervise(
            settings.amqp.url.expose().to_owned(),
            "hepdb-worker",
            move |conn| consumer::setup(conn, topology.clone(), prefetch, setup_ctx.clone()),
        );
        Ok(Self { broker, ctx })
    }

    /// Whether the broker connection is up and consuming.
    pub fn is_consuming(&self) -> bool {
        self.broker.is_connected()
    }

    /// Waits until consuming (start-up, or after a broker restart).
    pub async fn wait_consuming(&self, timeout: Duration) -> bool {
        self.broker.wait_connected(timeout).await.is_some()
    }

    /// Stops consuming and closes the broker connection; unacked jobs return to the queue.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
    }

    pub fn context(&self) -> &JobContext {
        &self.ctx
    }
}
