//! Running one job to completion. The metadata row is the intent; this module turns it into
//! engine state, records the result, and decides what the broker should do with the message.

use hepdb_core::{
    DatabaseId, JobId, JobState,
    job::{JobFailure, JobKindWire, JobMessage, JobOutcome},
    secret::MasterKey,
    state::JobKind,
};
use hepdb_store::{
    Store,
    jobs::{Locked, LockedError},
    models::Database,
};

use crate::engines::{EngineDriver, EngineError, Engines, Target};
use tracing::Instrument;

/// What the worker needs to run jobs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub store: Store,
    pub engines: Engines,
    pub key: MasterKey,
    pub max_attempts: u32,
    /// `quota.max_unmeasured_passes`, for the quota watcher.
    pub max_unmeasured_passes: u32,
}

/// What to do with the message.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Answer the caller with this outcome and ack. `dead_letter` also parks the message.
    Finished {
        outcome: JobOutcome,
        dead_letter: Option<&'static str>,
    },
    /// Metadata is unreachable: nothing was recorded, requeue the message after a pause.
    Retry,
}

fn finished(outcome: JobOutcome) -> Disposition {
    Disposition::Finished {
        outcome,
        dead_letter: None,
    }
}

fn failure_of(e: &EngineError) -> JobFailure {
    match e {
        EngineError::Unavailable(_) => JobFailure::EngineUnavailable,
        EngineError::Conflict(_) => JobFailure::EngineConflict,
        EngineError::Failed(_) => JobFailure::Internal,
    }
}

/// Runs the job named by `msg`, whatever state an earlier delivery left it in.
pub async fn handle(ctx: &JobContext, msg: &JobMessage) -> Disposition {
    let claimed = match ctx.store.claim_job(msg.job_id).await {
        Ok(Some(job)) => job,
        // Finished, cancelled or unknown: a duplicate delivery gets the recorded answer.
        Ok(None) => return recorded(ctx, msg.job_id).await,
        Err(error) => {
            tracing::warn!(%error, job = %msg.job_id, "cannot claim job, will retry");
            return Disposition::Retry;
        }
    };
    let kind = claimed.kind();
    if JobKindWire::from(kind) != msg.kind
        || claimed.database_id.as_deref() != Some(&msg.database_id.to_text())
    {
        tracing::error!(job = %msg.job_id, "message does not match the job's metadata");
        return fail(
            ctx,
            msg,
            kind,
            JobFailure::Internal,
            Some("message disagrees with metadata"),
        )
        .await;
    }
    if u32::try_from(claimed.attempts).unwrap_or(u32::MAX) > ctx.max_attempts {
        tracing::error!(job = %msg.job_id, attempts = claimed.attempts, "job keeps failing, dead-lettering it");
        return fail(
            ctx,
            msg,
            kind,
            JobFailure::Poisoned,
            Some("too many attempts"),
        )
        .await;
    }
    let db = match ctx.store.database(msg.database_id).await {
        Ok(Some(db)) => db,
        Ok(None) => {
            return fail(
                ctx,
                msg,
                kind,
                JobFailure::Internal,
                Some("database row missing"),
            )
            .await;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read database row, will retry");
            return Disposition::Retry;
        }
    };
    let Some((target, driver)) = resolve(ctx, &db) else {
        return fail(ctx, msg, kind, JobFailure::EngineUnavailable, None).await;
    };
    let secret = match kind {
        JobKind::Create | JobKind::Access => Some(db.password_sealed.clone()),
        JobKind::Rotate => claimed.password_sealed.clone(),
    };
    let Some(password) = secret.and_then(|s| ctx.key.open(msg.database_id, &s).ok()) else {
        tracing::error!(job = %msg.job_id, "sealed password does not open (wrong master key?)");
        return fail(
            ctx,
            msg,
            kind,
            JobFailure::Internal,
            Some("sealed password does not open"),
        )
        .await;
    };

    let key = ctx.key.clone();
    let engine = db.engine().as_str();
    let step_started = std::time::Instant::now();
    let ddl = tracing::info_span!(
        "engine",
        otel.kind = "client",
        otel.name = format!("{engine} {}", kind.as_str()),
        db.system.name = engine,
        server.address = %db.host,
    );
    let result = ctx
        .store
        .run_locked(msg.job_id, msg.database_id, |locked: Locked| {
            async move {
            let current = locked.database;
            match kind {
                JobKind::Create => driver.create(&target, &password).await,
                JobKind::Access => driver.set_access(&target, locked.wanted).await,
                JobKind::Rotate => {
                    let outcome = driver.set_password(&target, &password).await;
                    if outcome.is_err() {
                        // Put back the password metadata still holds, so the two never disagree.
                        if let Ok(old) = key.open(current.database_id(), &current.password_sealed)
                            && let Err(error) = driver.restore_password(&target, &old).await
                        {
                            tracing::error!(%error, database = %current.id, "could not restore the previous password after a failed rotate");
                        }
                    }
                    outcome
                }
            }
            }
            .instrument(ddl)
        })
        .await;
    let step_outcome = match &result {
        Ok(()) | Err(LockedError::AlreadyFinished) => "done",
        Err(LockedError::Engine(EngineError::Unavailable(_))) => "engine_unavailable",
        Err(LockedError::Engine(EngineError::Conflict(_))) => "engine_conflict",
        Err(LockedError::Engine(EngineError::Failed(_))) => "engine_failed",
        Err(LockedError::Store(_)) => "metadata_unavailable",
    };
    let labels = [
        ("kind", kind.as_str()),
        ("engine", engine),
        ("outcome", step_outcome),
    ];
    metrics::counter!("hepdb_engine_steps_total", &labels).increment(1);
    metrics::histogram!("hepdb_engine_step_duration_seconds", &labels)
        .record(step_started.elapsed().as_secs_f64());
    match result {
        Ok(()) => finished(JobOutcome::Done),
        Err(LockedError::AlreadyFinished) => recorded(ctx, msg.job_id).await,
        Err(LockedError::Engine(error)) => {
            let failure = failure_of(&error);
            tracing::warn!(%error, job = %msg.job_id, kind = kind.as_str(), "job failed on the engine");
            fail(ctx, msg, kind, failure, None).await
        }
        Err(LockedError::Store(error)) => {
            // The engine step may have been applied; the job is still `running`, and the
            // redelivery applies the same intent again.
            tracing::warn!(%error, job = %msg.job_id, "could not record the job's result, will retry");
            Disposition::Retry
        }
    }
}

pub(crate) fn resolve<'a>(
    ctx: &'a JobContext,
    db: &Database,
) -> Option<(Target, &'a EngineDriver)> {
    let Some(names) = db.names() else {
        tracing::error!(database = %db.id, "stored names are malformed; refusing to run DDL");
        return None;
    };
    let Some(driver) = ctx.engines.get(&db.host) else {
        tracing::error!(database = %db.id, host = %db.host, "this worker has no driver for the database's host");
        return None;
    };
    Some((
        Target {
            id: db.database_id(),
            names,
        },
        driver,
    ))
}

/// Records a failure. A failed create also removes whatever of it is ours on the engine, and
/// frees its slot when that is confirmed.
async fn fail(
    ctx: &JobContext,
    msg: &JobMessage,
    kind: JobKind,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    let recorded = match kind {
        JobKind::Create => {
            let engine_clean = match failure {
                // The driver already undid its own part and must not touch the other party's.
                JobFailure::EngineConflict => true,
                _ => cleanup_create(ctx, msg.database_id).await,
            };
            ctx.store
                .fail_create(msg.job_id, msg.database_id, failure, engine_clean)
                .await
        }
        // A rotate given up after many deliveries may have changed the engine in one that
        // died before its commit: put metadata's password back first.
        JobKind::Rotate if failure == JobFailure::Poisoned => {
            return give_up_rotate(ctx, msg, dead_letter).await;
        }
        JobKind::Rotate | JobKind::Access => ctx.store.fail_job(msg.job_id, failure).await,
    };
    if let Err(error) = recorded {
        tracing::warn!(%error, job = %msg.job_id, "could not record the failure, will retry");
        return Disposition::Retry;
    }
    Disposition::Finished {
        outcome: JobOutcome::Failed(failure),
        dead_letter,
    }
}

/// Fails a poisoned rotate only once the engine holds the password metadata holds again.
async fn give_up_rotate(
    ctx: &JobContext,
    msg: &JobMessage,
    dead_letter: Option<&'static str>,
) -> Disposition {
    let failure = JobFailure::Poisoned;
    let resolved = match ctx.store.database(msg.database_id).await {
        Ok(Some(db)) => resolve(ctx, &db),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, job = %msg.job_id, "cannot read the database row, will retry");
            return Disposition::Retry;
        }
    };
    let Some((target, driver)) = resolved else {
        // No row or no driver: nothing of ours on an engine to put back.
        return match ctx.store.fail_job(msg.job_id, failure).await {
            Ok(()) => Disposition::Finished {
                outcome: JobOutcome::Failed(failure),
                dead_letter,
            },
            Err(_) => Disposition::Retry,
        };
    };
    let key = ctx.key.clone();
    let undone = ctx
        .store
        .fail_locked(msg.job_id, msg.database_id, failure, |current| async move {
            let password = key
                .open(current.database_id(), &current.password_sealed)
                .map_err(|_| EngineError::Failed("sealed password does not open".into()))?;
            driver.restore_password(&target, &password).await
        })
        .await;
    match undone {
        Ok(()) => Disposition::Finished {
            outcome: JobOutcome::Failed(failure),
            dead_letter,
        },
        Err(LockedError::AlreadyFinished) => recorded(ctx, msg.job_id).await,
        Err(error) => {
            tracing::warn!(%error, job = %msg.job_id, "could not put the previous password back; will retry");
            Disposition::Retry
        }
    }
}

async fn cleanup_create(ctx: &JobContext, id: DatabaseId) -> bool {
    let Ok(Some(db)) = ctx.store.database(id).await else {
        return false;
    };
    let Some((target, driver)) = resolve(ctx, &db) else {
        return false;
    };
    match driver.drop_owned(&target).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, database = %db.id, "could not clean up a failed create; parking it as failed");
            false
        }
    }
}

/// The answer metadata holds for a job that is no longer running.
async fn recorded(ctx: &JobContext, id: JobId) -> Disposition {
    match ctx.store.job(id).await {
        Ok(Some(job)) => finished(match job.state() {
            JobState::Done => JobOutcome::Done,
            JobState::Failed => JobOutcome::Failed(
                job.error_code
                    .as_deref()
                    .map_or(JobFailure::Internal, JobFailure::parse),
            ),
            _ => JobOutcome::Failed(JobFailure::Internal),
        }),
        Ok(None) => finished(JobOutcome::Failed(JobFailure::Internal)),
        Err(_) => Disposition::Retry,
    }
}
