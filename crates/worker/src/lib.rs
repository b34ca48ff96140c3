//! The hepdb worker: consumes create and rotate jobs from RabbitMQ and runs the engine DDL.
//!
//! It is the only component that holds engine credentials. It trusts nothing in a message but
//! the job id: names and sealed passwords come from metadata.

mod consumer;
pub mod engines;
pub mod jobs;
pub mod reconciler;

use std::time::Duration;

use anyhow::Context;
use hepdb_core::settings::Settings;
use hepdb_queue::{SessionView, Supervised, Topology, supervise};
use hepdb_store::Store;

use crate::{
    engines::Engines,
    jobs::JobContext,
    reconciler::{Outbox, ReconcileError, Report},
};

/// A running worker: its broker connection is supervised and its consumer restarts with it.
/// Dropping it stops consuming; unacked jobs go back to the queue.
#[derive(Debug)]
pub struct Worker {
    broker: Supervised<consumer::Session>,
    ctx: JobContext,
    topology: Topology,
    stale_job_secs: u64,
    _reconciler: Option<AbortOnDrop>,
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
        let (setup_ctx, setup_topology) = (ctx.clone(), topology.clone());
        let retries = consumer::Retries::default();
        let broker = supervise(
            settings.amqp.url.expose().to_owned(),
            "hepdb-worker",
            move |conn| {
                consumer::setup(
                    conn,
                    setup_topology.clone(),
                    prefetch,
                    setup_ctx.clone(),
                    retries.clone(),
                )
            },
        );
        let stale_job_secs = settings.worker.stale_job_secs;
        let interval = settings.worker.reconcile_interval_secs;
        let reconciler = (interval > 0).then(|| {
            AbortOnDrop(tokio::spawn(reconcile_every(
                Duration::from_secs(interval),
                ctx.clone(),
                broker.view(),
                topology.clone(),
                stale_job_secs,
            )))
        });
        Ok(Self {
            broker,
            ctx,
            topology,
            stale_job_secs,
            _reconciler: reconciler,
        })
    }

    /// Runs one reconciler pass now (tests; the periodic pass does the same).
    pub async fn reconcile(&self, dry_run: bool) -> Result<Report, ReconcileError> {
        let session = self.broker.current();
        let outbox = session.as_ref().map(|s| Outbox {
            channel: &s.channel,
            topology: &self.topology,
        });
        reconciler::reconcile(&self.ctx, outbox, self.stale_job_secs, dry_run).await
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
        drop(self._reconciler);
        self.broker.shutdown().await;
    }

    pub fn context(&self) -> &JobContext {
        &self.ctx
    }
}

/// One reconciler pass from outside a worker (`hepdb-admin reconcile`): its own metadata pool
/// and, unless `dry_run`, its own broker connection for republishing.
pub async fn reconcile_once(settings: &Settings, dry_run: bool) -> anyhow::Result<Report> {
    let ctx = JobContext {
        store: Store::connect(settings.metadata.url.expose(), 2).context("metadata pool")?,
        engines: Engines::from_settings(&settings.engines).context("engine drivers")?,
        key: settings.crypto.master_key().context("crypto.master_key")?,
        max_attempts: settings.worker.max_attempts,
    };
    let topology = Topology::new(
        &settings.amqp.queue_prefix,
        settings.amqp.queue_expires_secs,
    );
    let channel = if dry_run {
        None
    } else {
        let conn = lapin::Connection::connect(
            settings.amqp.url.expose(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .context("connecting to the broker")?;
        let channel = conn.create_channel().await?;
        topology.declare(&channel).await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        Some((conn, channel))
    };
    let outbox = channel.as_ref().map(|(_, channel)| Outbox {
        channel,
        topology: &topology,
    });
    let report =
        reconciler::reconcile(&ctx, outbox, settings.worker.stale_job_secs, dry_run).await?;
    if let Some((conn, _)) = channel {
        let _ = conn.close(200, "done".into()).await;
    }
    Ok(report)
}

/// A background task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The periodic reconciler: a pass at start, then one every `interval`. A pass that finds
/// another one running (another worker) simply skips.
async fn reconcile_every(
    interval: Duration,
    ctx: JobContext,
    broker: SessionView<consumer::Session>,
    topology: Topology,
    stale_job_secs: u64,
) {
    loop {
        let session = broker.current();
        let outbox = session.as_ref().map(|s| Outbox {
            channel: &s.channel,
            topology: &topology,
        });
        match reconciler::reconcile(&ctx, outbox, stale_job_secs, false).await {
            Ok(report) if report.is_clean() => tracing::debug!("reconciler: nothing to do"),
            Ok(report) => tracing::info!(
                stale_jobs = report.stale_jobs.len(),
                deletions = report.deletions.len(),
                failed_creates = report.failed_creates.len(),
                orphans = report.orphans.len(),
                "reconciler pass"
            ),
            Err(ReconcileError::Busy) => tracing::debug!("reconciler: another pass is running"),
            Err(error) => tracing::warn!(%error, "reconciler pass failed"),
        }
        tokio::time::sleep(interval).await;
    }
}
