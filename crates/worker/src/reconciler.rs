//! The reconciler: finds work that stopped between states and moves it on, and reports engine
//! objects that carry hepdb's mark but have no metadata row.
//!
//! - a pending or running job untouched for `stale_job_secs` is published again (the jobs table
//!   is the outbox: a gateway that died right after its commit leaves a pending job, which this
//!   delivers; the job itself is idempotent, so a duplicate is harmless);
//! - a `deleting` row (an operator deletion that was interrupted) is finished;
//! - a `failed` create whose engine cleanup did not complete is cleaned up and removed;
//! - a marked engine object without a row is dropped if its id is that of a create that failed
//!   (a late statement of an abandoned create can leave one after the create was undone);
//!   any other is reported, never dropped: it may belong to another deployment sharing the
//!   server, or to metadata restored from an older backup. Alerts are one summary per pass;
//! - retention: expired idempotency keys are purged, finished jobs lose their sealed password
//!   after the idempotency window and are deleted after `worker.job_retention_days`, and the
//!   audit log's monthly partitions are made ahead and dropped after
//!   `worker.audit_retention_days`.
//!
//! One pass runs at a time across all processes (a PostgreSQL advisory lease).

use hepdb_core::{
    DatabaseId, DatabaseState, JobId,
    job::{JobFailure, JobKindWire, JobMessage, MESSAGE_VERSION},
};
use hepdb_queue::{Topology, publish_job};
use hepdb_store::{StoreError, models::Database, quota::Drifted};
use lapin::Channel;
use serde::Serialize;

use crate::{engines::EngineError, host_gate::HostGate, jobs::JobContext};

/// Marked engine objects looked up in metadata per query by the orphan scan.
const ORPHAN_SCAN_SLICE: usize = 5_000;

/// The advisory lock key of the reconciler lease ("hepdbrec").
pub const LEASE_KEY: i64 = 0x6865_7064_6272_6563;

/// What one pass found and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub stale_jobs: Vec<Action>,
    pub deletions: Vec<Action>,
    pub failed_creates: Vec<Action>,
    /// Databases whose engine access did not match metadata (an interrupted suspension or
    /// quota change).
    pub access: Vec<Action>,
    pub orphans: Vec<Orphan>,
    /// Marked engine objects of creates that failed, dropped.
    pub failed_create_leftovers: Vec<Action>,
    pub unreachable_hosts: Vec<String>,
    pub expired_idempotency_keys: usize,
    /// Finished jobs whose sealed password went, and finished jobs deleted.
    pub job_retention: hepdb_store::retention::JobRetention,
    /// Audit partitions dropped.
    pub audit_retention: hepdb_store::retention::AuditRetention,
}

impl Report {
    /// Whether the pass found anything at all.
    pub fn is_clean(&self) -> bool {
        self.stale_jobs.is_empty()
            && self.deletions.is_empty()
            && self.failed_creates.is_empty()
            && self.access.is_empty()
            && self.orphans.is_empty()
            && self.failed_create_leftovers.is_empty()
    }

    /// The actions the pass tried and could not finish (the next pass tries again).
    pub fn failures(&self) -> impl Iterator<Item = &Action> {
        [
            &self.stale_jobs,
            &self.deletions,
            &self.failed_creates,
            &self.access,
            &self.failed_create_leftovers,
        ]
        .into_iter()
        .flatten()
        .filter(|a| a.outcome.starts_with("error"))
    }
}

/// One thing to resolve and what became of it: `planned` in a dry run, then `done` or
/// `error: ...`.
#[derive(Debug, Serialize)]
pub struct Action {
    pub id: String,
    pub what: String,
    pub outcome: String,
}

#[derive(Debug, Serialize)]
pub struct Orphan {
    pub host: String,
    pub id: String,
    pub object: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("another reconciler pass is running")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where republished jobs go; `None` when the broker is down (stale jobs then wait a pass).
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    pub channel: &'a Channel,
    pub topology: &'a Topology,
}

/// Runs one pass. With `dry_run`, only reads and reports.
pub async fn reconcile(
    ctx: &JobContext,
    outbox: Option<Outbox<'_>>,
    stale_job_secs: u64,
    dry_run: bool,
) -> Result<Report, ReconcileError> {
    let lease = ctx
        .store
        .try_lease(LEASE_KEY)
        .await?
        .ok_or(ReconcileError::Busy)?;
    let result = pass(ctx, outbox, stale_job_secs, dry_run).await;
    lease.release().await;
    result
}

fn outcome<E: std::fmt::Display>(dry_run: bool, r: impl FnOnce() -> Result<(), E>) -> String {
    if dry_run {
        return "planned".into();
    }
    match r() {
        Ok(()) => "done".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// The pass's time is `hepdb_span_duration_seconds{span="reconcile.pass"}` (span metrics).
#[tracing::instrument(name = "reconcile.pass", skip_all)]
async fn pass(
    ctx: &JobContext,
    outbox: Option<Outbox<'_>>,
    stale_job_secs: u64,
    dry_run: bool,
) -> Result<Report, ReconcileError> {
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    for job in ctx.store.stale_jobs(stale_job_secs).await? {
        let what = format!("publish stale {} job again", job.kind);
        let result = if dry_run {
            Ok(())
        } else {
            republish(ctx, outbox, &job).await
        };
        report.stale_jobs.push(Action {
            id: job.id.clone(),
            what,
            outcome: outcome(dry_run, || result),
        });
    }
    // A host that cannot be reached or does not answer in time is not tried again in this
    // pass: each try would wait out a timeout, and a dead host with many rows would hold up
    // the pass. Its rows only wait for the next pass.
    let mut gate = HostGate::default();
    for db in ctx.store.deletions_to_finish().await? {
        let result = if dry_run {
            Ok(())
        } else if let Err(skip) = gate.check(&db.host) {
            Err(skip)
        } else {
            let result = finish_deletion(ctx, db.database_id()).await;
            if result.is_err() {
                gate.action_failed(ctx, &db.host).await;
            }
            result
        };
        report.deletions.push(Action {
            id: db.id.clone(),
            what: format!("finish deleting {}", db.db_name),
            outcome: outcome(dry_run, || result),
        });
    }
    for db in ctx.store.databases_in_state(DatabaseState::Failed).await? {
        let result = if dry_run {
            Ok(())
        } else if let Err(skip) = gate.check(&db.host) {
            Err(skip)
        } else {
            drop_then(ctx, &db, &mut gate, async |id| {
                ctx.store.remove_failed(id).await
            })
            .await
        };
        report.failed_creates.push(Action {
            id: db.id.clone(),
            what: format!("clean up failed create {}", db.db_name),
            outcome: outcome(dry_run, || result),
        });
    }
    let drifted = ctx.store.access_drift().await?;
    // Rows of a host already found down get no job now; the next pass finds them again.
    let (skipped, drifted): (Vec<Drifted>, Vec<Drifted>) = drifted
        .into_iter()
        .partition(|d| !dry_run && gate.check(&d.host).is_err());
    for d in skipped {
        report.access.push(Action {
            what: "bring engine access in line with metadata".into(),
            outcome: format!("error: {}", gate.check(&d.host).unwrap_err()),
            id: d.id,
        });
    }
    let jobs = if dry_run {
        vec![]
    } else {
        let ids: Vec<String> = drifted.iter().map(|d| d.id.clone()).collect();
        ctx.store.enqueue_access_jobs(&ids).await?
    };
    for (i, d) in drifted.iter().enumerate() {
        let result = match jobs.get(i) {
            // A job whose host went down meanwhile stays pending; the stale-job step of a
            // later pass sends it through the broker.
            Some(_) if gate.check(&d.host).is_err() => gate.check(&d.host),
            Some((job, database)) => {
                let result = crate::jobs::run_access(ctx, *job, *database).await;
                if result.is_err() {
                    gate.action_failed(ctx, &d.host).await;
                }
                result
            }
            None => Ok(()),
        };
        report.access.push(Action {
            id: d.id.clone(),
            what: "bring engine access in line with metadata".into(),
            outcome: outcome(dry_run, || result),
        });
    }
    for (host, driver) in ctx.engines.iter() {
        let marked = match crate::jobs::bounded(ctx.engine_timeout, driver.marked()).await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, host, "reconciler cannot list the host's objects");
                report.unreachable_hosts.push(host.to_owned());
                continue;
            }
        };
        // Checked against metadata a slice at a time: memory follows the engine's marked
        // objects, not every row metadata holds.
        let mut unknown = Vec::new();
        for slice in marked.chunks(ORPHAN_SCAN_SLICE) {
            let ids: Vec<String> = slice.iter().map(|m| m.id.clone()).collect();
            let known = ctx.store.database_ids_on_host(host, &ids).await?;
            unknown.extend(slice.iter().filter(|m| !known.contains(&m.id)).cloned());
        }
        let ids: Vec<String> = unknown.iter().map(|m| m.id.clone()).collect();
        let failed = ctx.store.failed_create_ids(&ids).await?;
        for m in unknown {
            if failed.contains(&m.id) {
                let result = if dry_run {
                    Ok(())
                } else {
                    drop_leftover(driver, &m, ctx.engine_timeout).await
                };
                report.failed_create_leftovers.push(Action {
                    id: m.id,
                    what: format!("drop {} on {host}, left by a failed create", m.object),
                    outcome: outcome(dry_run, || result),
                });
            } else {
                tracing::debug!(host, id = %m.id, object = %m.object, "orphan");
                report.orphans.push(Orphan {
                    host: host.to_owned(),
                    id: m.id,
                    object: m.object,
                });
            }
        }
    }
    if !report.orphans.is_empty() {
        tracing::error!(
            alert = true,
            orphans = report.orphans.len(),
            "engine objects carry hepdb's mark but have no metadata row; left in place \
             (their ids: debug log, or hepdb-admin reconcile --dry-run)"
        );
    }
    let cleaned = &report.failed_create_leftovers;
    if !cleaned.is_empty() {
        let failed = cleaned
            .iter()
            .filter(|a| a.outcome.starts_with("error"))
            .count();
        tracing::warn!(
            dropped = cleaned.len() - failed,
            failed,
            "engine objects left by failed creates"
        );
    }
    if !dry_run {
        report.expired_idempotency_keys =
            ctx.store.purge_idempotency_keys().await? + ctx.store.purge_platform_keys().await?;
        report.job_retention = ctx
            .store
            .apply_job_retention(ctx.job_retention_days)
            .await?;
    }
    // Partitions ahead are made in a dry run too: an audit entry without one cannot be written.
    let keep_days = if dry_run { 0 } else { ctx.audit_retention_days };
    report.audit_retention = ctx.store.maintain_audit_log(keep_days).await?;
    Ok(report)
}

async fn republish(
    ctx: &JobContext,
    outbox: Option<Outbox<'_>>,
    job: &hepdb_store::models::Job,
) -> Result<(), String> {
    let id: JobId = job.id.parse().map_err(|_| "malformed job id".to_owned())?;
    let Some(database) = job
        .database_id
        .as_deref()
        .and_then(|d| d.parse::<DatabaseId>().ok())
    else {
        // Its database row is gone: nothing left to do but close the job.
        return ctx
            .store
            .fail_job(id, JobFailure::Internal)
            .await
            .map_err(|e| e.to_string());
    };
    let Some(outbox) = outbox else {
        return Err("broker unavailable; next pass".into());
    };
    // Touched first: a worker may finish the job before the publish call even returns. A job
    // that moved on meanwhile needs nothing from us.
    if ctx.store.touch_job(id).await.is_err() {
        return Ok(());
    }
    let message = JobMessage {
        v: MESSAGE_VERSION,
        job_id: id,
        database_id: database,
        kind: JobKindWire::from(job.kind()),
    };
    publish_job(
        outbox.channel,
        outbox.topology,
        &message,
        lapin::types::FieldTable::default(),
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(job = %job.id, kind = %job.kind, "stale job published again");
    Ok(())
}

/// Drops what a failed create left: its names come from the object, and the driver drops only
/// what carries this id's mark.
async fn drop_leftover(
    driver: &crate::engines::EngineDriver,
    m: &crate::engines::Marked,
    limit: std::time::Duration,
) -> Result<(), String> {
    let id: DatabaseId = m.id.parse().map_err(|_| "malformed mark".to_owned())?;
    let names = hepdb_core::naming::EngineNames::of_object(&m.object)
        .ok_or_else(|| format!("{} is not a generated name", m.object))?;
    crate::jobs::bounded(
        limit,
        driver.drop_owned(&crate::engines::Target { id, names }),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Finishes an interrupted deletion as a delete job, run here under the database's lock (so
/// never beside a delivery of another job of it); a database another delivery holds is left
/// to that job's delivery through the broker.
async fn finish_deletion(ctx: &JobContext, id: DatabaseId) -> Result<(), String> {
    use hepdb_store::databases::DeleteIntent;
    match ctx.store.insert_delete_job(id, None).await {
        Ok(DeleteIntent::Job { job, .. }) => crate::jobs::run_delete(ctx, job, id).await,
        Ok(DeleteIntent::Missing) => Ok(()),
        Ok(DeleteIntent::Unsettled) => Err("the database is not settled yet".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Drops the database's marked engine objects, then runs `finish` on its row. A host that
/// cannot be reached or did not answer in time is down for the rest of the pass.
async fn drop_then(
    ctx: &JobContext,
    db: &Database,
    gate: &mut HostGate,
    finish: impl AsyncFnOnce(DatabaseId) -> Result<(), StoreError>,
) -> Result<(), String> {
    let (target, driver) =
        crate::jobs::resolve(ctx, db).ok_or_else(|| format!("no driver for host {}", db.host))?;
    crate::jobs::bounded(ctx.engine_timeout, driver.drop_owned(&target))
        .await
        .map_err(|e: EngineError| {
            gate.engine_failed(&db.host, &e);
            e.to_string()
        })?;
    finish(db.database_id()).await.map_err(|e| e.to_string())
}
