//! The hepdb worker: consumes create and rotate jobs from RabbitMQ and runs the engine DDL.
//!
//! It is the only component that holds engine credentials. It trusts nothing in a message but
//! the job id: names and sealed passwords come from metadata.

mod admin_http;
mod consumer;
pub mod engines;
mod host_gate;
pub mod jobs;
pub mod oneshot;
pub mod quota;
pub mod reconciler;
pub mod waiters;

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
    _watcher: Option<AbortOnDrop>,
    admin: AdminServer,
    admin_port: u16,
}

impl Worker {
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        hepdb_telemetry::metrics();
        let store = Store::connect(settings.metadata.url.expose(), pool_size(settings))
            .context("metadata pool")?;
        let engine_timeout = Duration::from_secs(settings.worker.engine_timeout_secs);
        let engines = Engines::from_settings(&settings.engines)
            .context("engine drivers")?
            .with_engine_timeout(engine_timeout);
        let key = settings.crypto.master_key().context("crypto.master_key")?;
        let ctx = JobContext {
            store,
            engines,
            key,
            max_attempts: settings.worker.max_attempts,
            max_unmeasured_passes: settings.quota.max_unmeasured_passes,
            job_retention_days: settings.worker.job_retention_days,
            audit_retention_days: settings.worker.audit_retention_days,
            engine_timeout,
            heartbeat: heartbeat(settings),
            waiters: waiters::Waiters::for_slots(settings.worker.prefetch),
        };
        let topology = Topology::from_settings(&settings.amqp);
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
        let quota_interval = settings.quota.interval_secs;
        let watcher = (quota_interval > 0).then(|| {
            AbortOnDrop(tokio::spawn(watch_quota(
                Duration::from_secs(quota_interval),
                ctx.clone(),
            )))
        });
        let (admin, admin_port) =
            admin_http::serve(&settings.worker.admin_listen, ctx.clone(), broker.view())
                .with_context(|| {
                    format!(
                        "binding worker.admin_listen {}",
                        settings.worker.admin_listen
                    )
                })?;
        let handle = admin.handle();
        tokio::spawn(admin);
        let admin = AdminServer(handle);
        Ok(Self {
            broker,
            ctx,
            topology,
            stale_job_secs,
            _reconciler: reconciler,
            _watcher: watcher,
            admin,
            admin_port,
        })
    }

    /// The port of the admin server (`/healthz`, `/readyz`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Runs one quota watcher pass now (tests; the periodic pass does the same).
    pub async fn quota_pass(
        &self,
        account: Option<hepdb_core::AccountId>,
    ) -> anyhow::Result<quota::QuotaReport> {
        let lease = self
            .ctx
            .store
            .try_lease(quota::LEASE_KEY)
            .await?
            .context("a quota watcher pass is running")?;
        // Boxed: the pass is a deep future, and callers' own futures (tests hold several
        // passes in one) must not inherit its depth.
        let report = Box::pin(quota::pass(&self.ctx, account)).await;
        lease.release().await;
        Ok(report?)
    }

    /// Runs one reconciler pass now (tests; the periodic pass does the same).
    pub async fn reconcile(&self, dry_run: bool) -> Result<Report, ReconcileError> {
        let session = self.broker.current();
        let outbox = session.as_ref().map(|s| Outbox {
            channel: &s.channel,
            topology: &self.topology,
        });
        // Boxed, as the quota pass is.
        Box::pin(reconciler::reconcile(
            &self.ctx,
            outbox,
            self.stale_job_secs,
            dry_run,
        ))
        .await
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
    /// Graceful stop: no new jobs, the running ones finish (up to `deadline`), then the broker
    /// connection closes and anything still unacknowledged goes back to the queue. Returns how
    /// many jobs were handed back that way.
    pub async fn shutdown_within(self, deadline: Duration) -> usize {
        let left = match self.broker.current() {
            Some(session) => session.drain(deadline).await,
            None => 0,
        };
        self.shutdown().await;
        left
    }

    pub async fn shutdown(self) {
        drop(self._reconciler);
        drop(self._watcher);
        drop(self.admin);
        self.broker.shutdown().await;
    }

    pub fn context(&self) -> &JobContext {
        &self.ctx
    }
}

/// A third of `worker.stale_job_secs`: a live job is marked alive three times before the
/// reconciler would take it for stale.
pub(crate) fn heartbeat(settings: &Settings) -> Duration {
    Duration::from_millis(settings.worker.stale_job_secs.saturating_mul(1000) / 3)
        .max(Duration::from_millis(100))
}

/// Connections a worker keeps beyond one per job it runs at once: heartbeats, the reconciler's
/// and the quota watcher's leases and reads, `/readyz`.
const POOL_HEADROOM: usize = 4;

/// The worker's metadata pool: `metadata.pool_size`, but never less than one connection per
/// job it may run at once (each running job holds its database's lock on one) plus
/// [`POOL_HEADROOM`], so that holds can never take every connection.
fn pool_size(settings: &Settings) -> usize {
    settings
        .metadata
        .pool_size
        .max(usize::from(settings.worker.prefetch) + POOL_HEADROOM)
}

/// The periodic watcher: ticks several times per interval; the metadata claim lets exactly one
/// process per interval run a pass, and the lease keeps passes from overlapping.
async fn watch_quota(interval: Duration, ctx: JobContext) {
    let tick = (interval / 4).max(Duration::from_secs(1));
    loop {
        match ctx
            .store
            .claim_periodic(quota::PERIODIC_NAME, interval.as_secs())
            .await
        {
            Ok(true) => match ctx.store.try_lease(quota::LEASE_KEY).await {
                Ok(Some(lease)) => {
                    match quota::pass(&ctx, None).await {
                        Ok(r) => tracing::info!(
                            hosts = r.measured.len(),
                            changes = r.changes.len(),
                            "quota watcher pass"
                        ),
                        Err(error) => tracing::warn!(%error, "quota watcher pass failed"),
                    }
                    lease.release().await;
                }
                Ok(None) => tracing::debug!("quota watcher: another pass is running"),
                Err(error) => tracing::warn!(%error, "quota watcher: no lease"),
            },
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "quota watcher: cannot claim its interval"),
        }
        tokio::time::sleep(tick).await;
    }
}

/// The admin HTTP server, stopped with its owner.
#[derive(Debug)]
struct AdminServer(actix_web::dev::ServerHandle);

impl Drop for AdminServer {
    fn drop(&mut self) {
        let handle = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

/// A background task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Unfinished reconciler actions logged by name per pass; the rest are counted.
const FAILURES_NAMED: usize = 10;

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
            Ok(report) => {
                tracing::info!(
                    stale_jobs = report.stale_jobs.len(),
                    deletions = report.deletions.len(),
                    failed_creates = report.failed_creates.len(),
                    orphans = report.orphans.len(),
                    "reconciler pass"
                );
                // A few by name, the rest counted: a dead host with thousands of rows must
                // not write thousands of lines every pass.
                let failures: Vec<_> = report.failures().collect();
                for a in failures.iter().take(FAILURES_NAMED) {
                    tracing::warn!(id = %a.id, what = %a.what, outcome = %a.outcome, "reconciler could not finish an action; next pass tries again");
                }
                if failures.len() > FAILURES_NAMED {
                    tracing::warn!(
                        more = failures.len() - FAILURES_NAMED,
                        "reconciler could not finish more actions (all in hepdb-admin reconcile --dry-run)"
                    );
                }
            }
            Err(ReconcileError::Busy) => tracing::debug!("reconciler: another pass is running"),
            Err(error) => tracing::warn!(%error, "reconciler pass failed"),
        }
        tokio::time::sleep(interval).await;
    }
}
