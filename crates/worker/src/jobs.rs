//! Running one job to completion. The metadata row is the intent; this module turns it into
//! engine state, records the result, and decides what the broker should do with the message.

use hepdb_core::{
    DatabaseId, JobId, JobState,
    job::{JobFailure, JobMessage, JobOutcome},
    secret::MasterKey,
    state::JobKind,
};
use hepdb_store::{
    Store,
    jobs::{Held, Locked, LockedError},
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
    /// `worker.job_retention_days`, for the reconciler's retention step.
    pub job_retention_days: u32,
    /// `worker.audit_retention_days`, for the same step.
    pub audit_retention_days: u32,
    /// `worker.engine_timeout_secs`: the bound of every engine step.
    pub engine_timeout: std::time::Duration,
    /// Which deliveries may wait for their database's lock instead of parking.
    pub waiters: crate::waiters::Waiters,
    /// How often a delivery marks its job alive while it runs the step, well within
    /// `worker.stale_job_secs`, so that the reconciler never sends again a job that is still
    /// being worked on.
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
    /// Another delivery holds the job's database (a duplicate of this one, or another job of
    /// the same database): nothing was counted or changed. Send the message again later,
    /// without holding a worker slot meanwhile.
    Busy,
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
/// through the broker (the quota watcher, the reconciler). It does not wait for the
/// database's lock: a pass must not stall behind one database, and a job left pending is
/// delivered later through the broker by the reconciler. `Ok` when the engine matches.
pub async fn run_access(ctx: &JobContext, job: JobId, database: DatabaseId) -> Result<(), String> {
    run_now(ctx, job, database, JobKind::Access).await
}

/// Runs a delete job in this process, now, like [`run_access`] (the reconciler finishing a
/// deletion): under the database's lock, so never beside another job of it.
pub async fn run_delete(ctx: &JobContext, job: JobId, database: DatabaseId) -> Result<(), String> {
    run_now(ctx, job, database, JobKind::Delete).await
}

async fn run_now(
    ctx: &JobContext,
    job: JobId,
    database: DatabaseId,
    kind: JobKind,
) -> Result<(), String> {
    let job = JobRef {
        id: job,
        database,
        kind,
    };
    match deliver(ctx, job, None, Release::Now).await {
        Disposition::Finished {
            outcome: JobOutcome::Done,
            ..
        } => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Runs the job named by a delivered message, whatever state an earlier delivery left it in.
/// When another delivery holds the database's lock, it waits for it only if it is this
/// worker's one waiter for that database (see [`crate::waiters`]); otherwise the answer is
/// [`Disposition::Busy`], and nothing was counted or changed.
pub async fn handle(ctx: &JobContext, msg: &JobMessage) -> Disposition {
    let job = JobRef::from(msg);
    let waiting = ctx.waiters.admit(job.database);
    deliver(ctx, job, waiting, Release::Behind).await
}

/// When a delivery gives its database's lock back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Before it answers: the in-process passes, which may take the same database's lock for
    /// their next row at once, and do not wait for it.
    Now,
    /// Behind the answer: the caller's reply does not wait for the unlock's round trip. A
    /// delivery of the same database that comes meanwhile waits for the lock (this worker's
    /// one waiter) or is parked briefly, as for any lock held by another delivery.
    Behind,
}

/// A job to run: which one, on which database, doing what. A delivered message names one
/// (and metadata must agree); the in-process passes name their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JobRef {
    id: JobId,
    database: DatabaseId,
    kind: JobKind,
}

impl From<&JobMessage> for JobRef {
    fn from(msg: &JobMessage) -> Self {
        Self {
            id: msg.job_id,
            database: msg.database_id,
            kind: msg.kind.into(),
        }
    }
}

/// Takes the database's lock, waiting for it only with a turn to wait (given up as soon as
/// the lock is taken), runs the job under it, and gives it back.
async fn deliver(
    ctx: &JobContext,
    msg: JobRef,
    waiting: Option<crate::waiters::Waiting>,
    release: Release,
) -> Disposition {
    let held = ctx
        .store
        .hold(msg.id, msg.database, waiting.is_some())
        .await;
    drop(waiting);
    let mut held = match held {
        Ok(Some(held)) => held,
        Ok(None) => return Disposition::Busy,
        Err(error) => {
            tracing::warn!(%error, job = %msg.id, "cannot take the database's lock, will retry");
            return Disposition::Retry;
        }
    };
    let disposition = match prepare(ctx, msg, &mut held).await {
        Ok(ready) => run(ctx, msg, &mut held, ready).await,
        Err(disposition) => disposition,
    };
    match release {
        Release::Now => held.release().await,
        // Dropped unfinished (the runtime shutting down), a hold closes its connection, and
        // the server releases the lock with the session.
        Release::Behind => drop(tokio::spawn(held.release())),
    }
    disposition
}

/// A claimed job, checked and ready for its engine step.
struct Ready<'a> {
    kind: JobKind,
    target: Target,
    driver: &'a EngineDriver,
    /// The password the step sets: a create's or a rotate's; access changes and deletions
    /// set none (so a password that does not open never blocks a deletion).
    password: Option<hepdb_core::secret::Password>,
    host: String,
    engine: &'static str,
}

/// Counts the attempt and checks the job against metadata: the message must name the job's
/// own database and kind, the job must not have failed too often, and its database, driver
/// and sealed password must be there. Anything else is the answer for the message.
async fn prepare<'a>(
    ctx: &'a JobContext,
    msg: JobRef,
    held: &mut Held,
) -> Result<Ready<'a>, Disposition> {
    let (claimed, db) = match held.claim().await {
        Ok(Some(claim)) => (claim.job, claim.database),
        // Finished, cancelled or unknown: a duplicate delivery gets the recorded answer.
        Ok(None) => return Err(recorded(held).await),
        Err(error) => {
            tracing::warn!(%error, job = %msg.id, "cannot claim job, will retry");
            return Err(Disposition::Retry);
        }
    };
    let kind = claimed.kind();
    let refuse = async |held: &mut Held, failure, reason| {
        Err(give_up_held(ctx, msg, held, kind, failure, reason).await)
    };
    if kind != msg.kind || claimed.database_id.as_deref() != Some(&msg.database.to_text()) {
        tracing::error!(job = %msg.id, "message does not match the job's metadata");
        let reason = Some("message disagrees with metadata");
        return refuse(held, JobFailure::Internal, reason).await;
    }
    if u32::try_from(claimed.attempts).unwrap_or(u32::MAX) > ctx.max_attempts {
        tracing::error!(job = %msg.id, attempts = claimed.attempts, "job keeps failing, dead-lettering it");
        return refuse(held, JobFailure::Poisoned, Some("too many attempts")).await;
    }
    let db = match db {
        Some(db) => db,
        // Deleted after this job was recorded (a rotate or an access change that lost the
        // race with a deletion): the caller's database is gone, 404. A create's row is never
        // removed before its job settles, so that one is an error.
        None if kind != JobKind::Create => return refuse(held, JobFailure::Gone, None).await,
        None => return refuse(held, JobFailure::Internal, Some("database row missing")).await,
    };
    if kind == JobKind::Rotate && !db.state().is_visible() {
        // Recorded just before a deletion: the database is going, and gets no new password.
        return refuse(held, JobFailure::Gone, None).await;
    }
    let Some((target, driver)) = resolve(ctx, &db) else {
        return refuse(held, JobFailure::EngineUnavailable, None).await;
    };
    let secret = match kind {
        JobKind::Create => Some(db.password_sealed.clone()),
        JobKind::Rotate => claimed.password_sealed.clone(),
        JobKind::Access | JobKind::Delete => None,
    };
    let password = match secret.map(|s| ctx.key.open(msg.database, &s)) {
        None if matches!(kind, JobKind::Access | JobKind::Delete) => None,
        Some(Ok(password)) => Some(password),
        None | Some(Err(_)) => {
            tracing::error!(job = %msg.id, "sealed password does not open (wrong master key?)");
            let reason = Some("sealed password does not open");
            return refuse(held, JobFailure::Internal, reason).await;
        }
    };
    Ok(Ready {
        kind,
        target,
        driver,
        password,
        engine: db.engine().as_str(),
        host: db.host,
    })
}

/// Runs the engine step under the lock, records it, and answers the message.
async fn run(ctx: &JobContext, msg: JobRef, held: &mut Held, ready: Ready<'_>) -> Disposition {
    let Ready {
        kind,
        target,
        driver,
        password,
        host,
        engine,
    } = ready;
    let (key, limit) = (ctx.key.clone(), ctx.engine_timeout);
    let step_started = std::time::Instant::now();
    let ddl = tracing::info_span!(
        "engine",
        otel.kind = "client",
        otel.name = format!("{engine} {}", kind.as_str()),
        db.system.name = engine,
        server.address = %host,
    );
    let _alive = Heartbeat(tokio::spawn(keep_alive(
        ctx.store.clone(),
        msg.id,
        ctx.heartbeat,
    )));
    let result = held
        .run(|locked: Locked| {
            step(driver, target, kind, locked, password, key, limit).instrument(ddl)
        })
        .await;
    record_step(&result, kind, engine, step_started);
    match result {
        Ok(()) => finished(JobOutcome::Done),
        Err(LockedError::AlreadyFinished) => recorded(held).await,
        Err(LockedError::Engine(StepError::Engine(error))) if kind == JobKind::Delete => {
            // A recorded deletion is never given up on an engine outage: it is retried (up to
            // the attempt cap, then the reconciler finishes it).
            tracing::warn!(%error, job = %msg.id, "a deletion failed on the engine; it stays open and is retried");
            Disposition::Retry
        }
        Err(LockedError::Engine(StepError::Engine(error))) => {
            let failure = failure_of(&error);
            tracing::warn!(%error, job = %msg.id, kind = kind.as_str(), "job failed on the engine");
            give_up_held(ctx, msg, held, kind, failure, None).await
        }
        Err(LockedError::Engine(StepError::Unsettled(error))) => {
            tracing::error!(
                alert = true,
                %error,
                job = %msg.id,
                "a failed rotate could not put the previous password back; the job stays open"
            );
            Disposition::Retry
        }
        Err(LockedError::Store(error)) => {
            // The engine step may have been applied; the job is still `running`, and the
            // redelivery applies the same intent again.
            tracing::warn!(%error, job = %msg.id, "could not record the job's result, will retry");
            Disposition::Retry
        }
    }
}

/// The step's metrics: how many, how long, and how each ended.
fn record_step(
    result: &Result<(), LockedError<StepError>>,
    kind: JobKind,
    engine: &'static str,
    started: std::time::Instant,
) {
    let outcome = match result {
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
        ("outcome", outcome),
    ];
    metrics::counter!("hepdb_engine_steps_total", &labels).increment(1);
    metrics::histogram!("hepdb_engine_step_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
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
    password: Option<hepdb_core::secret::Password>,
    key: MasterKey,
    limit: std::time::Duration,
) -> Result<(), StepError> {
    let current = locked.database;
    // Create and rotate always have one (see `prepare`).
    let password = || {
        password
            .as_ref()
            .ok_or_else(|| StepError::Engine(EngineError::Failed("no password to set".into())))
    };
    match kind {
        JobKind::Create => bounded(limit, driver.create(&target, password()?))
            .await
            .map_err(StepError::Engine),
        JobKind::Access => bounded(limit, driver.set_access(&target, locked.wanted))
            .await
            .map_err(StepError::Engine),
        // Only what carries hepdb's mark for this database; idempotent.
        JobKind::Delete => bounded(limit, driver.drop_owned(&target))
            .await
            .map_err(StepError::Engine),
        JobKind::Rotate => {
            let Err(error) = bounded(limit, driver.set_password(&target, password()?)).await else {
                return Ok(());
            };
            if let EngineError::Unreachable(_) = error {
                // Nothing was sent: nothing to put back.
                return Err(StepError::Engine(error));
            }
            // Put back the password metadata still holds, so the two never disagree; if even
            // that fails, the engine may hold the new one, and the job must stay open.
            tracing::warn!(%error, database = %current.id, "a rotate failed on the engine; putting the previous password back");
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

/// Records a failure of a job, waiting for its database's lock; see [`give_up_held`].
pub async fn give_up(
    ctx: &JobContext,
    msg: &JobMessage,
    kind: JobKind,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    let msg = JobRef::from(msg);
    match ctx.store.hold(msg.id, msg.database, true).await {
        Ok(Some(mut held)) => {
            let disposition = give_up_held(ctx, msg, &mut held, kind, failure, dead_letter).await;
            held.release().await;
            disposition
        }
        Ok(None) | Err(_) => Disposition::Retry,
    }
}

/// Fails a create and undoes it on the engine, waiting for its database's lock.
pub async fn give_up_create(
    ctx: &JobContext,
    msg: &JobMessage,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    give_up(ctx, msg, JobKind::Create, failure, dead_letter).await
}

/// Records a failure under the database's lock, only while the job is live: a duplicate
/// delivery may have run it to the end meanwhile, and its answer stands. A failed create
/// also removes whatever of it is ours on the engine; a poisoned rotate first puts
/// metadata's password back.
async fn give_up_held(
    ctx: &JobContext,
    msg: JobRef,
    held: &mut Held,
    kind: JobKind,
    failure: JobFailure,
    dead_letter: Option<&'static str>,
) -> Disposition {
    let undone = match kind {
        JobKind::Create => undo_create(ctx, held, failure).await,
        // A rotate given up after many deliveries may have changed the engine in one that
        // died before its commit.
        JobKind::Rotate if failure == JobFailure::Poisoned => undo_rotate(ctx, held).await,
        // A failed deletion leaves its row `deleting`: the reconciler finishes it.
        JobKind::Rotate | JobKind::Access | JobKind::Delete => {
            held.fail(failure, |_| async { Ok::<(), EngineError>(()) })
                .await
        }
    };
    match undone {
        Ok(()) => Disposition::Finished {
            outcome: JobOutcome::Failed(failure),
            dead_letter,
        },
        Err(LockedError::AlreadyFinished) => recorded(held).await,
        Err(error) => {
            tracing::warn!(%error, job = %msg.id, "could not give the job up yet, will retry");
            Disposition::Retry
        }
    }
}

/// Fails a create and drops what of it is ours on the engine. What cannot be dropped now is
/// parked as `failed` for the reconciler.
async fn undo_create(
    ctx: &JobContext,
    held: &mut Held,
    failure: JobFailure,
) -> Result<(), LockedError<EngineError>> {
    let resolved = target_of(ctx, held).await?;
    let limit = ctx.engine_timeout;
    let undone = held
        .fail_create(failure, |row| async move {
            // After a name collision the driver already undid its own part, and must not
            // touch the other party's.
            if failure == JobFailure::EngineConflict {
                return true;
            }
            let Some((target, driver)) = resolved else {
                return false;
            };
            tracing::warn!(database = %row.id, "undoing a failed create on the engine");
            match bounded(limit, driver.drop_owned(&target)).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, database = %row.id, "could not clean up a failed create; parking it as failed");
                    false
                }
            }
        })
        .await;
    undone.map_err(|e| match e {
        LockedError::AlreadyFinished => LockedError::AlreadyFinished,
        LockedError::Store(e) => LockedError::Store(e),
        LockedError::Engine(never) => match never {},
    })
}

/// Fails a poisoned rotate only once the engine holds the password metadata holds again.
/// Without a row or a driver for its host there is nothing of ours on an engine to put back.
async fn undo_rotate(ctx: &JobContext, held: &mut Held) -> Result<(), LockedError<EngineError>> {
    let resolved = target_of(ctx, held).await?;
    let (key, limit) = (ctx.key.clone(), ctx.engine_timeout);
    held.fail(JobFailure::Poisoned, |current| async move {
        let Some((target, driver)) = resolved else {
            return Ok(());
        };
        let password = key
            .open(current.database_id(), &current.password_sealed)
            .map_err(|_| EngineError::Failed("sealed password does not open".into()))?;
        bounded(limit, driver.restore_password(&target, &password)).await
    })
    .await
}

/// The engine target of the job's database, as its row is now: `None` when there is no row or
/// no driver for its host (nothing of ours on an engine to touch).
async fn target_of<'a>(
    ctx: &'a JobContext,
    held: &mut Held,
) -> Result<Option<(Target, &'a EngineDriver)>, LockedError<EngineError>> {
    Ok(held.database().await?.and_then(|db| resolve(ctx, &db)))
}

/// The answer metadata holds for a job that is no longer running.
async fn recorded(held: &mut Held) -> Disposition {
    match held.job().await {
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
