//! What `hepdb-admin` runs once, in its own process, without a worker: one reconciler pass,
//! one quota watcher pass, and publishing jobs it recorded. Each opens its own small metadata
//! pool and, when it must publish, a broker connection of its own.

use std::time::Duration;

use anyhow::Context;
use hepdb_core::settings::Settings;
use hepdb_queue::Topology;
use hepdb_store::Store;

use crate::{
    engines::Engines,
    heartbeat,
    jobs::JobContext,
    quota,
    reconciler::{self, Outbox, Report},
};

/// One reconciler pass from outside a worker (`hepdb-admin reconcile`): its own metadata pool
/// and, unless `dry_run`, its own broker connection for republishing.
pub async fn reconcile_once(settings: &Settings, dry_run: bool) -> anyhow::Result<Report> {
    let ctx = context(settings)?;
    let topology = Topology::from_settings(&settings.amqp);
    let channel = if dry_run {
        None
    } else {
        Some(broker(settings, &topology).await?)
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

/// What running jobs needs, for a process that is not a worker (`hepdb-admin`).
pub fn context(settings: &Settings) -> anyhow::Result<JobContext> {
    Ok(JobContext {
        store: Store::connect(settings.metadata.url.expose(), 2).context("metadata pool")?,
        engines: Engines::from_settings(&settings.engines)
            .context("engine drivers")?
            .with_engine_timeout(Duration::from_secs(settings.worker.engine_timeout_secs)),
        key: settings.crypto.master_key().context("crypto.master_key")?,
        max_attempts: settings.worker.max_attempts,
        max_unmeasured_passes: settings.quota.max_unmeasured_passes,
        job_retention_days: settings.worker.job_retention_days,
        audit_retention_days: settings.worker.audit_retention_days,
        engine_timeout: Duration::from_secs(settings.worker.engine_timeout_secs),
        heartbeat: heartbeat(settings),
        waiters: Default::default(),
    })
}

/// A one-off broker connection with a confirm-mode channel and the topology declared.
async fn broker(
    settings: &Settings,
    topology: &Topology,
) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let conn = hepdb_queue::connect(
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
    Ok((conn, channel))
}

/// Publishes jobs already recorded in metadata (for `hepdb-admin`, which has no worker). A job
/// that cannot be published now is delivered later by the reconciler; returns how many went.
pub async fn publish_jobs(
    settings: &Settings,
    jobs: &[(
        hepdb_core::JobId,
        hepdb_core::DatabaseId,
        hepdb_core::state::JobKind,
    )],
) -> usize {
    let topology = Topology::from_settings(&settings.amqp);
    let Ok((conn, channel)) = broker(settings, &topology).await else {
        tracing::warn!("broker unreachable: the reconciler will deliver these jobs");
        return 0;
    };
    let mut sent = 0;
    for (job, database, kind) in jobs {
        let message = hepdb_core::job::JobMessage {
            v: hepdb_core::job::MESSAGE_VERSION,
            job_id: *job,
            database_id: *database,
            kind: (*kind).into(),
        };
        let headers = lapin::types::FieldTable::default();
        if hepdb_queue::publish_job(&channel, &topology, &message, headers, None)
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    let _ = conn.close(200, "done".into()).await;
    sent
}

/// One quota watcher pass now (`hepdb-admin quota refresh`), unless one is running.
pub async fn quota_refresh(
    settings: &Settings,
    account: Option<hepdb_core::AccountId>,
) -> anyhow::Result<quota::QuotaReport> {
    let ctx = context(settings)?;
    let lease = ctx
        .store
        .try_lease(quota::LEASE_KEY)
        .await?
        .context("a quota watcher pass is running; try again shortly")?;
    let report = quota::pass(&ctx, account).await;
    lease.release().await;
    Ok(report?)
}
