//! Jobs: the write-ahead record of every create and rotate, and the guarded state transitions
//! that gateway and worker make on it.
//!
//! ```text
//!  pending ──claim──▶ running ──finish──▶ done
//!     │                  └────fail─────▶ failed
//!     └──cancel (gateway timeout, only while pending)──▶ cancelled
//! ```

mod held;
pub use held::{Claim, Held};

use diesel::{
    OptionalExtension,
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hepdb_core::{
    Access, AccountId, DatabaseId, DatabaseState, JobId, JobState, job::JobFailure, state::JobKind,
};

use crate::{
    Result, Store, StoreError,
    audit::{Binding, PLATFORM_KEY_TAKEN},
    exactly_one,
    idempotency::{KEY_TAKEN, KeyedRequest},
    models::{Database, Job},
    schema::{databases, jobs},
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
        platform: Option<Binding<'_>>,
    ) -> Result<Option<JobId>> {
        let mut conn = self.conn().await?;
        let id = JobId::new();
        let job = diesel::insert_into(jobs::table).values((
            jobs::id.eq(id.to_text()),
            jobs::database_id.eq(Some(db.to_text())),
            jobs::kind.eq(JobKind::Rotate.as_str()),
            jobs::state.eq(JobState::Pending.as_str()),
            jobs::password_sealed.eq(Some(sealed)),
        ));
        if idempotency.is_none() && platform.is_none() {
            // Nothing to bind: one statement, its own transaction.
            job.execute(&mut conn).await?;
            return Ok(Some(id));
        }
        let inserted = conn
            .transaction(async |c| {
                job.execute(c).await?;
                if let Some(binding) = platform {
                    binding.bind(c, &id.to_text()).await?;
                }
                crate::idempotency::bind(c, &account.to_text(), idempotency, id).await
            })
            .await;
        match inserted {
            Ok(()) => Ok(Some(id)),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
                if [Some(KEY_TAKEN), Some(PLATFORM_KEY_TAKEN)]
                    .contains(&info.constraint_name()) =>
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

    /// A rotate (or any job) failed; the database row is untouched.
    #[tracing::instrument(name = "metadata.fail_job", skip_all)]
    pub async fn fail_job(&self, job: JobId, failure: JobFailure) -> Result<()> {
        let mut conn = self.conn().await?;
        mark_failed(&mut conn, &job.to_text(), failure).await
    }
}

/// Reads the job under the hold's lock. The job row itself is not locked: the database's
/// lock already serializes everything that finishes a job, and the heartbeat (another
/// connection) must be able to write it without waiting.
async fn read_job(c: &mut AsyncPgConnection, job: &str) -> diesel::QueryResult<Job> {
    jobs::table
        .find(job)
        .select(Job::as_select())
        .first(c)
        .await
}

async fn mark_failed(c: &mut AsyncPgConnection, job: &str, failure: JobFailure) -> Result<()> {
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
