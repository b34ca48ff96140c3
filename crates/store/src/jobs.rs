//! Jobs: the write-ahead record of every create and rotate, and the guarded state transitions
//! that gateway and worker make on it.
//!
//! ```text
//!  pending ──claim──▶ running ──finish──▶ done
//!     │                  └────fail─────▶ failed
//!     └──cancel (gateway timeout, only while pending)──▶ cancelled
//! ```

use std::future::Future;

use diesel::{
    OptionalExtension,
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::Text,
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{
    Access, AccountId, DatabaseId, DatabaseState, JobId, JobState, job::JobFailure, state::JobKind,
};

use crate::{
    Result, Store, StoreError, exactly_one,
    idempotency::{KEY_TAKEN, KeyedRequest},
    models::{Database, Job},
    schema::{accounts, databases, jobs},
};

/// What a cancellation attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was still pending: it is cancelled (a create's intent row is removed).
    Cancelled,
    /// A worker had already taken the job; it is in this state now.
    TooLate(JobState, Option<JobFailure>),
    /// No such job.
    Missing,
}

/// What an engine step sees under the database's lock: the row, and the engine access it
/// should have now (from the row's state and whether its account is suspended).
#[derive(Debug)]
pub struct Locked {
    pub database: Database,
    pub wanted: Access,
}

/// A locked engine step failed, or was not needed.
#[derive(Debug, thiserror::Error)]
pub enum LockedError<E> {
    #[error(transparent)]
    Store(StoreError),
    #[error("engine step failed")]
    Engine(E),
    /// Another delivery of the same job finished it first.
    #[error("job already finished")]
    AlreadyFinished,
}

impl<E> From<DieselError> for LockedError<E> {
    fn from(e: DieselError) -> Self {
        LockedError::Store(e.into())
    }
}

impl<E> From<StoreError> for LockedError<E> {
    fn from(e: StoreError) -> Self {
        LockedError::Store(e)
    }
}

impl Store {
    /// Records a rotate: the new password, sealed, exists durably before any engine change.
    /// With an Idempotency-Key, the key is bound to the job in the same transaction; `Ok(None)`
    /// means a concurrent request with the same key bound it first.
    #[tracing::instrument(name = "metadata.insert_rotate_job", skip_all)]
    pub async fn insert_rotate_job(
        &self,
        account: AccountId,
        db: DatabaseId,
        sealed: Vec<u8>,
        idempotency: Option<KeyedRequest<'_>>,
    ) -> Result<Option<JobId>> {
        let mut conn = self.conn().await?;
        let id = JobId::new();
        let inserted = conn
            .transaction(async |c| {
                diesel::insert_into(jobs::table)
                    .values((
                        jobs::id.eq(id.to_text()),
                        jobs::database_id.eq(Some(db.to_text())),
                        jobs::kind.eq(JobKind::Rotate.as_str()),
                        jobs::state.eq(JobState::Pending.as_str()),
                        jobs::password_sealed.eq(Some(&sealed)),
                    ))
                    .execute(c)
                    .await?;
                crate::idempotency::bind(c, &account.to_text(), idempotency, id).await
            })
            .await;
        match inserted {
            Ok(()) => Ok(Some(id)),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
                if info.constraint_name() == Some(KEY_TAKEN) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(name = "metadata.job", skip_all)]
    pub async fn job(&self, id: JobId) -> Result<Option<Job>> {
        let mut conn = self.conn().await?;
        Ok(jobs::table
            .find(id.to_text())
            .select(Job::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Cancels a job no worker has taken. For a create, the intent row goes too, releasing the
    /// slot and the name; the account's sequence number stays consumed (names are never reused).
    #[tracing::instrument(name = "metadata.cancel_pending_job", skip_all)]
    pub async fn cancel_pending_job(&self, id: JobId) -> Result<CancelOutcome> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let Some(job) = jobs::table
                .find(&id)
                .for_update()
                .select(Job::as_select())
                .first(c)
                .await
                .optional()?
            else {
                return Ok(CancelOutcome::Missing);
            };
            if job.state() != JobState::Pending {
                let failure = job.error_code.as_deref().map(JobFailure::parse);
                return Ok(CancelOutcome::TooLate(job.state(), failure));
            }
            let n = diesel::update(jobs::table.find(&id))
                .set((
                    jobs::state.eq(JobState::Cancelled.as_str()),
                    jobs::updated_at.eq(diesel::dsl::now),
                ))
                .execute(c)
                .await?;
            exactly_one(n, "cancel job")?;
            if let (JobKind::Create, Some(db)) = (job.kind(), &job.database_id) {
                let n = diesel::delete(
                    databases::table
                        .find(db)
                        .filter(databases::state.eq(DatabaseState::Creating.as_str())),
                )
                .execute(c)
                .await?;
                exactly_one(n, "remove cancelled create intent")?;
            }
            Ok::<_, StoreError>(CancelOutcome::Cancelled)
        })
        .await
    }

    /// A worker takes a job: `pending` or `running` (a redelivery after a crash) becomes
    /// `running` with one more attempt. `None` when the job is finished, cancelled or gone.
    /// (Counted here, in its own statement, so that a delivery that dies in the step still
    /// counts; a live job's heartbeat keeps the reconciler from sending it again.)
    #[tracing::instrument(name = "metadata.claim_job", skip_all)]
    pub async fn claim_job(&self, id: JobId) -> Result<Option<Job>> {
        let mut conn = self.conn().await?;
        Ok(diesel::update(
            jobs::table.find(id.to_text()).filter(
                jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]),
            ),
        )
        .set((
            jobs::state.eq(JobState::Running.as_str()),
            jobs::attempts.eq(jobs::attempts + 1),
            jobs::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Job::as_returning())
        .get_result(&mut conn)
        .await
        .optional()?)
    }

    /// Runs `apply` (the engine step, given the database row as it is under the lock) while
    /// holding the database's advisory lock, then records
    /// its result in the same transaction: a create becomes `active`, a rotate's new password
    /// becomes the current one. Jobs on one database therefore never interleave, and the
    /// password in metadata is always the one last applied to the engine.
    ///
    /// If the process dies after `apply` but before the commit, the job stays `running` and its
    /// redelivery applies the same intent again, which converges.
    #[tracing::instrument(name = "metadata.run_locked", skip_all)]
    pub async fn run_locked<E, F, Fut>(
        &self,
        job: JobId,
        db: DatabaseId,
        apply: F,
    ) -> std::result::Result<(), LockedError<E>>
    where
        E: Send,
        F: FnOnce(Locked) -> Fut + Send,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
    {
        let mut conn = self.conn().await?;
        let (job, db) = (job.to_text(), db.to_text());
        conn.transaction(async move |c| {
            let row = lock_and_read_job(c, &db, &job).await?;
            if row.state() != JobState::Running {
                return Err(LockedError::AlreadyFinished);
            }
            let current = databases::table
                .find(&db)
                .for_update()
                .select(Database::as_select())
                .first(c)
                .await?;
            let suspended: bool = accounts::table
                .find(&current.account_id)
                .select(accounts::suspended)
                .first(c)
                .await?;
            let wanted = Access::wanted(suspended, current.state());
            apply(Locked {
                database: current,
                wanted,
            })
            .await
            .map_err(LockedError::Engine)?;
            let n = match row.kind() {
                JobKind::Create => {
                    diesel::update(
                        databases::table
                            .find(&db)
                            .filter(databases::state.eq(DatabaseState::Creating.as_str())),
                    )
                    .set(databases::state.eq(DatabaseState::Active.as_str()))
                    .execute(c)
                    .await?
                }
                JobKind::Rotate => {
                    let sealed = row
                        .password_sealed
                        .ok_or_else(|| StoreError::Guard("rotate job without a password".into()))?;
                    let visible = DatabaseState::texts(DatabaseState::is_visible);
                    diesel::update(
                        databases::table
                            .find(&db)
                            .filter(databases::state.eq_any(visible)),
                    )
                    .set(databases::password_sealed.eq(sealed))
                    .execute(c)
                    .await?
                }
                JobKind::Access => {
                    diesel::update(databases::table.find(&db))
                        .set(databases::engine_access.eq(wanted.as_str()))
                        .execute(c)
                        .await?
                }
            };
            exactly_one(n, "apply job result to database")?;
            let n = diesel::update(jobs::table.find(&job))
                .set((
                    jobs::state.eq(JobState::Done.as_str()),
                    jobs::updated_at.eq(diesel::dsl::now),
                ))
                .execute(c)
                .await?;
            exactly_one(n, "mark job done")?;
            Ok(())
        })
        .await
    }

    /// Fails a job under the database's lock, and only while it is still live. For a rotate that
    /// may have reached the engine in an earlier delivery (one killed between the engine step
    /// and its commit), `undo` first puts the password metadata holds back on the engine, so
    /// engine and metadata agree again; if `undo` fails, nothing is recorded and the job stays
    /// open for another delivery. Without a database row, there is nothing to undo.
    #[tracing::instrument(name = "metadata.fail_locked", skip_all)]
    pub async fn fail_locked<E, F, Fut>(
        &self,
        job: JobId,
        db: DatabaseId,
        failure: JobFailure,
        undo: F,
    ) -> std::result::Result<(), LockedError<E>>
    where
        E: Send,
        F: FnOnce(Database) -> Fut + Send,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
    {
        let mut conn = self.conn().await?;
        let (job, db) = (job.to_text(), db.to_text());
        conn.transaction(async move |c| {
            let row = lock_and_read_job(c, &db, &job).await?;
            if !matches!(row.state(), JobState::Pending | JobState::Running) {
                return Err(LockedError::AlreadyFinished);
            }
            let current = databases::table
                .find(&db)
                .select(Database::as_select())
                .first(c)
                .await
                .optional()?;
            // Without a row there is nothing of it on an engine to put back.
            if let Some(current) = current {
                undo(current).await.map_err(LockedError::Engine)?;
            }
            mark_failed(c, &job, failure).await?;
            Ok(())
        })
        .await
    }

    /// A create failed. Under the database's lock, and only while the job is still live and
    /// its row still `creating`, `cleanup` removes what the create left on the engine (it
    /// answers whether nothing is left); then the intent row is removed, freeing the slot and
    /// the name, or parked as `failed` for the reconciler to finish, and the job is failed.
    /// A duplicate delivery that finished the create meanwhile (the row is `active`) makes this
    /// [`LockedError::AlreadyFinished`]: nothing is undone.
    #[tracing::instrument(name = "metadata.fail_create", skip_all)]
    pub async fn fail_create<F, Fut>(
        &self,
        job: JobId,
        db: DatabaseId,
        failure: JobFailure,
        cleanup: F,
    ) -> std::result::Result<(), LockedError<std::convert::Infallible>>
    where
        F: FnOnce(Database) -> Fut + Send,
        Fut: Future<Output = bool> + Send,
    {
        let mut conn = self.conn().await?;
        let (job, db) = (job.to_text(), db.to_text());
        conn.transaction(async move |c| {
            let row = lock_and_read_job(c, &db, &job).await?;
            if !matches!(row.state(), JobState::Pending | JobState::Running) {
                return Err(LockedError::AlreadyFinished);
            }
            let creating = databases::table
                .find(&db)
                .filter(databases::state.eq(DatabaseState::Creating.as_str()));
            let current = creating
                .for_update()
                .select(Database::as_select())
                .first(c)
                .await
                .optional()?;
            if let Some(current) = current {
                if cleanup(current).await {
                    diesel::delete(creating).execute(c).await?;
                } else {
                    diesel::update(creating)
                        .set(databases::state.eq(DatabaseState::Failed.as_str()))
                        .execute(c)
                        .await?;
                }
            }
            mark_failed(c, &job, failure).await?;
            Ok(())
        })
        .await
    }

    /// A rotate (or any job) failed; the database row is untouched.
    #[tracing::instrument(name = "metadata.fail_job", skip_all)]
    pub async fn fail_job(&self, job: JobId, failure: JobFailure) -> Result<()> {
        let mut conn = self.conn().await?;
        mark_failed(&mut conn, &job.to_text(), failure).await
    }
}

/// Takes the database's advisory lock for the rest of the transaction, then reads the job
/// under it. In sequence, not pipelined: pipelined statements may reach the server out of
/// order (one may still be preparing), and the read must happen under the lock. The job row
/// itself is not locked: the advisory lock already serializes everything that finishes a job,
/// and the heartbeat (another connection) must be able to write it without waiting.
async fn lock_and_read_job(
    c: &mut diesel_async::AsyncPgConnection,
    db: &str,
    job: &str,
) -> diesel::QueryResult<Job> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<Text, _>(db)
        .execute(c)
        .await?;
    jobs::table
        .find(job)
        .select(Job::as_select())
        .first(c)
        .await
}

async fn mark_failed(
    c: &mut diesel_async::AsyncPgConnection,
    job: &str,
    failure: JobFailure,
) -> Result<()> {
    let n = diesel::update(
        jobs::table
            .find(job)
            .filter(jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()])),
    )
    .set((
        jobs::state.eq(JobState::Failed.as_str()),
        jobs::error_code.eq(failure.as_str()),
        jobs::updated_at.eq(diesel::dsl::now),
    ))
    .execute(c)
    .await?;
    exactly_one(n, "mark job failed")
}
