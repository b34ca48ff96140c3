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
    /// `worker.engine_timeout_secs`: the bound of every engine step.
    pub engine_timeout: std::time::Duration,
    /// How often a delivery that holds a job (waiting for its database's lock, or running the
    /// step) marks it alive, well within `worker.stale_job_secs`, so that the reconciler never
    /// sends again a job that is still being worked on.
    pub heartbeat: std::time::Duration,
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

/// Why a locked engine step did not complete.
#[derive(Debug)]
enum StepError {
    /// The step failed and left the engine as metadata says it is.
    Engine(EngineError),
    /// A rotate failed and putting the previous password back failed too: the engine may hold
    /// the new one. The job stays open and is retried; it is never marked failed like this.
    Unsettled(EngineError),
}

/// Bounds one engine call: a hung statement counts as the engine being unavailable, and the
/// database's lock and the metadata connection are given back.
pub(crate) async fn bounded<T>(
    limit: std::time::Duration,
    call: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(EngineError::Unavailable("engine step timed out".into())))
}

fn failure_of(e: &EngineError) -> JobFailure {
    match e {
        EngineError::Unreachable(_) | EngineError::Unavailable(_) => JobFailure::EngineUnavailable,
        EngineError::Conflict(_) => JobFailure::EngineConflict,
        EngineError::Failed(_) => JobFailure::Internal,
    }
}

/// Runs an access job in this process, now: it has no caller to answer, so it needs no trip
/// through the broker (the quota watcher, the reconciler). `Ok` when the engine matches.
pub async fn run_access(ctx: &JobContext, job: JobId, database: DatabaseId) -> Result<(), String> {
    let message = JobMessage {
        v: hepdb_core::job::MESSAGE_VERSION,
        job_id: job,
        database_id: database,
        kind: JobKindWire::Access,
    };
    match handle(ctx, &message).await {
        Disposition::Finished {
            outcome: JobOutcome::Done,
            ..
        } => Ok(()),
        other => Err(format!("{other:?}")),
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
        return give_up(
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
        return give_up(
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
            return give_up(
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
        return give_up(ctx, msg, kind, JobFailure::EngineUnavailable, None).await;
    };
    let secret = match kind {
        JobKind::Create | JobKind::Access => Some(db.password_sealed.clone()),
        JobKind::Rotate => claimed.password_sealed.clone(),
    };
    let Some(password) = secret.and_then(|s| ctx.key.open(msg.database_id, &s).ok()) else {
        tracing::error!(job = %msg.job_id, "sealed password does not open (wrong master key?)");
        return give_up(
            ctx,
            msg,
            kind,
            JobFailure::Internal,
            Some("sealed password does not open"),
        )
        .await;
    };

    let key = ctx.key.clone();
    let limit = ctx.engine_timeout;
    let engine = db.engine().as_str();
    let step_started = std::time::Instant::now();
    let ddl = tracing::info_span!(
        "engine",
        otel.kind = "client",
        otel.name = format!("{engine} {}", kind.as_str()),
        db.system.name = engine,
        server.address = %db.host,
    );
    let _alive = Heartbeat(tokio::spawn(keep_alive(
        ctx.store.clone(),
        msg.job_id,
        ctx.heartbeat,
    )));
    let result = ctx
        .store
        .run_locked(msg.job_id, msg.database_id, |locked: Locked| {
            step(driver, target, kind, locked, password, key, limit).instrument(ddl)
        })
        .await;
    let step_outcome = match &result {
        Ok(()) | Err(LockedError::AlreadyFinished) => "done",
        Err(LockedError::Engine(StepError::Unsettled(_))) => "unsettled",
        Err(LockedError::Engine(StepError::Engine(e))) => match e {
            EngineError::Unreachable(_) | EngineError::Unavailable(_) => "engine_unavailable",
            EngineError::Conflict(_) => "engine_conflict",
            EngineError::Failed(_) => "engine_failed",
        },
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
        Err(LockedError::Engine(StepError::Engine(error))) => {
            let failure = failure_of(&error);
            tracing::warn!(%error, job = %msg.job_id, kind = kind.as_str(), "job failed on the engine");
            give_up(ctx, msg, kind, failure, None).await
        }
        Err(LockedError::Engine(StepError::Unsettled(error))) => {
            tracing::error!(
                alert = true,
                %error,
                job = %msg.job_id,
                "a failed rotate could not put the previous password back; the job stays open"
            );
            Disposition::Retry
        }
        Err(LockedError::Store(error)) => {
            // The engine step may have been applied; the job is still `running`, and the
            // redelivery applies the same intent again.
            tracing::warn!(%error, job = %msg.job_id, "could not record the job's result, will retry");
            Disposition::Retry
        }
    }
}

/// The heartbeat task of one delivery, stopped when the delivery ends, however it ends.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Marks the job alive every `every` until aborted: while this delivery waits for the
/// database's lock behind other jobs, and while it runs the step.
async fn keep_alive(store: hepdb_store::Store, job: JobId, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = store.touch_job(job).await {
            tracing::debug!(%error, %job, "heartbeat not recorded");
        }
    }
}

/// The engine step of one job, under the database's lock, each engine call bounded by `limit`.
async fn step(
    driver: &EngineDriver,
    target: Target,
    kind: JobKind,
    locked: Locked,
    password: hepdb_core::secret::Password,
    key: MasterKey,
    limit: std::time::Duration,
) -> Result<(), StepError> {
    let current = locked.database;
    match kind {
        JobKind::Create => bounded(limit, driver.create(&target, &password))
            .await
            .map_err(StepError::Engine),
        JobKind::Access => bounded(limit, driver.set_access(&target, locked.wanted))
            .await
            .map_err(StepError::Engine),
        JobKind::Rotate => {
            let Err(error) = bounded(limit, driver.set_password(&target, &password)).await else {
                return Ok(());
            };
            if let EngineError::Unreachable(_) = error {
                // Nothing was sent: nothing to put back.
                return Err(StepError::Engine(error));
            }
            // Put back the password metadata still holds, so the two never disagree; if even
            // that fails, the engine may hold the new one, and the job must stay open.
            let restored = match key.open(current.database_id(), &current.password_sealed) {
                Ok(old) => bounded(limit, driver.restore_password(&target, &old)).await,
                Err(_) => Err(EngineError::Failed("sealed password does not open".into())),
            };
            match restored {
                Ok(()) => Err(StepError::Engine(error)),
                Err(restore) => {
                    tracing::warn!(%restore, database = %current.id, "could not put the previous password back");
                    Err(StepError::Unsettled(error))
                }
            }
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

/// Records a failure, under the database's lock and only while the job is live. A failed
/// create also removes whatever of it is ours on the engine, and frees its slot when that is
/// confirmed.
pub async fn give_up(
    ctx: &JobContext,
    msg: &JobMessage,
    kind: JobKind,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    match kind {
        JobKind::Create => give_up_create(ctx, msg, failure, dead_letter).await,
        // A rotate given up after many deliveries may have changed the engine in one that
        // died before its commit: put metadata's password back first.
        JobKind::Rotate if failure == JobFailure::Poisoned => {
            give_up_rotate(ctx, msg, dead_letter).await
        }
        // Recorded under the database's lock, and only while the job is still live: a
        // duplicate delivery may have run it to the end meanwhile, and its answer stands.
        JobKind::Rotate | JobKind::Access => {
            let recorded = ctx
                .store
                .fail_locked(msg.job_id, msg.database_id, failure, |_| async {
                    Ok::<(), std::convert::Infallible>(())
                })
                .await;
            given_up(ctx, msg, recorded, failure, dead_letter).await
        }
    }
}

/// Fails a create, and undoes it on the engine, under the database's lock and only while the
/// job is still live: a duplicate delivery may have finished the same create meanwhile, and
/// its database must stay. What cannot be dropped now is parked as `failed` for the
/// reconciler.
pub async fn give_up_create(
    ctx: &JobContext,
    msg: &JobMessage,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    let resolved = match target_of(ctx, msg).await {
        Ok(resolved) => resolved,
        Err(retry) => return retry,
    };
    let limit = ctx.engine_timeout;
    let undone = ctx
        .store
        .fail_create(msg.job_id, msg.database_id, failure, |row| async move {
            // After a name collision the driver already undid its own part, and must not
            // touch the other party's.
            if failure == JobFailure::EngineConflict {
                return true;
            }
            let Some((target, driver)) = resolved else {
                return false;
            };
            match bounded(limit, driver.drop_owned(&target)).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, database = %row.id, "could not clean up a failed create; parking it as failed");
                    false
                }
            }
        })
        .await;
    given_up(ctx, msg, undone, failure, dead_letter).await
}

/// Fails a poisoned rotate only once the engine holds the password metadata holds again.
async fn give_up_rotate(
    ctx: &JobContext,
    msg: &JobMessage,
    dead_letter: Option<&'static str>,
) -> Disposition {
    let failure = JobFailure::Poisoned;
    let resolved = match target_of(ctx, msg).await {
        Ok(resolved) => resolved,
        Err(retry) => return retry,
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
    let limit = ctx.engine_timeout;
    let undone = ctx
        .store
        .fail_locked(msg.job_id, msg.database_id, failure, |current| async move {
            let password = key
                .open(current.database_id(), &current.password_sealed)
                .map_err(|_| EngineError::Failed("sealed password does not open".into()))?;
            bounded(limit, driver.restore_password(&target, &password)).await
        })
        .await;
    given_up(ctx, msg, undone, failure, dead_letter).await
}

/// The engine target of the job's database, as its row is now: `None` when there is no row or
/// no driver for its host (nothing of ours on an engine to touch); `Err` to retry later.
async fn target_of<'a>(
    ctx: &'a JobContext,
    msg: &JobMessage,
) -> Result<Option<(Target, &'a EngineDriver)>, Disposition> {
    match ctx.store.database(msg.database_id).await {
        Ok(Some(db)) => Ok(resolve(ctx, &db)),
        Ok(None) => Ok(None),
        Err(error) => {
            tracing::warn!(%error, job = %msg.job_id, "cannot read the database row, will retry");
            Err(Disposition::Retry)
        }
    }
}

/// What to answer once a job was given up under the database's lock: the failure; what
/// metadata holds when another delivery finished it first; or a retry when the undo or the
/// record did not happen.
async fn given_up<E: std::fmt::Display>(
    ctx: &JobContext,
    msg: &JobMessage,
    undone: Result<(), LockedError<E>>,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    match undone {
        Ok(()) => Disposition::Finished {
            outcome: JobOutcome::Failed(failure),
            dead_letter,
        },
        Err(LockedError::AlreadyFinished) => recorded(ctx, msg.job_id).await,
        Err(error) => {
            tracing::warn!(%error, job = %msg.job_id, "could not give the job up yet, will retry");
            Disposition::Retry
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
