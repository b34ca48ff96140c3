//! A job's hold on its database: the database's advisory lock, taken at session level on one
//! pooled connection, for as long as one delivery works on the job.
//!
//! Everything that changes a database's engine state or finishes one of its jobs happens under
//! this lock, so jobs on one database never interleave. It is held across several statements
//! (the attempt count, then the step's transaction, or the failure's), which is why it is a
//! session lock and not a transaction lock: the attempt is committed before the engine step
//! starts, so a delivery that dies in the step still counts, and only a delivery that holds
//! the lock (and so runs the step) counts at all.
//!
//! A hold is released explicitly. Dropped instead (its future cancelled, a panic), it closes
//! its connection rather than return it to the pool still locked; the server then releases the
//! lock with the session.

use std::future::Future;

use diesel::{
    OptionalExtension,
    prelude::*,
    sql_types::{Bool, Text},
};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, pooled_connection::deadpool::Object,
};
use hepdb_core::{
    Access, DatabaseId, DatabaseState, JobId, JobState, job::JobFailure, state::JobKind,
};

use super::{Locked, LockedError, mark_failed, read_job};
use crate::{
    Result, Store, StoreError, exactly_one,
    models::{Database, Job},
    schema::{accounts, databases, jobs},
};

/// A claimed job, and its database's row as it was when the job was claimed (`None` when the
/// row is gone).
#[derive(Debug)]
pub struct Claim {
    pub job: Job,
    pub database: Option<Database>,
}

/// The lock of one database, held by one delivery of one job.
pub struct Held {
    conn: Option<Object<AsyncPgConnection>>,
    job: String,
    db: String,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("job", &self.job)
            .field("db", &self.db)
            .finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

impl Store {
    /// Takes `db`'s lock for a delivery of `job`. With `wait`, waits for it; without, answers
    /// `None` at once when another holder has it (a duplicate delivery, or another job of the
    /// same database), so that the caller can give its worker slot and its metadata connection
    /// back instead of waiting on them.
    #[tracing::instrument(name = "metadata.hold", skip_all)]
    pub async fn hold(&self, job: JobId, db: DatabaseId, wait: bool) -> Result<Option<Held>> {
        // Wrapped before the statement is sent: if this future is dropped while the server
        // is still waiting for the lock, the connection is closed, never pooled.
        let mut held = Held {
            conn: Some(self.conn().await?),
            job: job.to_text(),
            db: db.to_text(),
        };
        let lock = if wait {
            "(SELECT true FROM pg_advisory_lock(hashtextextended("
        } else {
            "(SELECT pg_try_advisory_lock(hashtextextended("
        };
        let got: bool = diesel::select(
            diesel::dsl::sql::<Bool>(lock)
                .bind::<Text, _>(held.db.clone())
                .sql(", 0)))"),
        )
        .get_result(held.conn())
        .await?;
        if got {
            Ok(Some(held))
        } else {
            // Not locked: the connection goes back to the pool as it is.
            drop(held.conn.take());
            Ok(None)
        }
    }
}

impl Held {
    fn conn(&mut self) -> &mut AsyncPgConnection {
        self.conn
            .as_mut()
            .expect("a hold has its connection until released")
    }

    /// Gives the lock back, and the connection to the pool; a connection that cannot unlock
    /// is closed instead.
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = diesel::select(
            diesel::dsl::sql::<Bool>("pg_advisory_unlock(hashtextextended(")
                .bind::<Text, _>(&self.db)
                .sql(", 0))"),
        )
        .get_result::<bool>(&mut conn)
        .await;
        if unlocked.is_err() {
            drop(Object::take(conn));
        }
    }

    /// The job as it is now, read on the hold's own connection: a delivery never waits for a
    /// second pooled connection while it holds one, so holds cannot exhaust the pool.
    pub async fn job(&mut self) -> Result<Option<Job>> {
        let job = self.job.clone();
        Ok(read_job(self.conn(), &job).await.optional()?)
    }

    /// The database row as it is now, on the hold's own connection.
    pub async fn database(&mut self) -> Result<Option<Database>> {
        let db = self.db.clone();
        Ok(databases::table
            .find(db)
            .select(Database::as_select())
            .first(self.conn())
            .await
            .optional()?)
    }

    /// Counts one attempt and takes the job: `pending` or `running` (a redelivery after a
    /// crash) becomes `running`. Committed at once, before the step: a delivery that dies in
    /// the step still counts. `None` when the job is finished, cancelled or gone.
    ///
    /// The database row is read in the same round trip (see [`Claim`]). The claim's commit is
    /// durable before the engine is touched: a gateway that times out cancels a job it finds
    /// `pending`, so a claim lost in a metadata crash after the step ran would let it cancel
    /// a job whose engine change had happened.
    #[tracing::instrument(name = "metadata.claim_job", skip_all)]
    pub async fn claim(&mut self) -> Result<Option<Claim>> {
        let (job, db) = (self.job.clone(), self.db.clone());
        // Two independent statements, pipelined: one round trip.
        let p: &AsyncPgConnection = self.conn();
        let claim =
            diesel::update(jobs::table.find(&job).filter(
                jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]),
            ))
            .set((
                jobs::state.eq(JobState::Running.as_str()),
                jobs::attempts.eq(jobs::attempts + 1),
                jobs::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Job::as_returning())
            .get_result(&mut &*p);
        let database = databases::table
            .find(&db)
            .select(Database::as_select())
            .first(&mut &*p);
        let (claim, database) = tokio::join!(claim, database);
        let Some(job) = claim.optional()? else {
            return Ok(None);
        };
        Ok(Some(Claim {
            job,
            database: database.optional()?,
        }))
    }

    /// Runs `apply` (the engine step, given the database row as it is under the lock), then
    /// records its result in the same transaction: a create becomes `active`, a rotate's new
    /// password becomes the current one, an access change is recorded. The password in
    /// metadata is therefore always the one last applied to the engine.
    ///
    /// If the process dies after `apply` but before the commit, the job stays `running` and its
    /// redelivery applies the same intent again, which converges.
    #[tracing::instrument(name = "metadata.run_locked", skip_all)]
    pub async fn run<E, F, Fut>(&mut self, apply: F) -> std::result::Result<(), LockedError<E>>
    where
        E: Send,
        F: FnOnce(Locked) -> Fut + Send,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
    {
        let (job, db) = (self.job.clone(), self.db.clone());
        self.conn()
            .transaction(async move |c| {
                // Three independent reads, pipelined: one round trip.
                let p: &AsyncPgConnection = c;
                let row = jobs::table
                    .find(&job)
                    .select(Job::as_select())
                    .first::<Job>(&mut &*p);
                let current = databases::table
                    .find(&db)
                    .for_update()
                    .select(Database::as_select())
                    .first::<Database>(&mut &*p);
                let suspended = databases::table
                    .inner_join(accounts::table)
                    .filter(databases::id.eq(&db))
                    .select(accounts::suspended)
                    .first::<bool>(&mut &*p);
                let (row, current, suspended) = tokio::join!(row, current, suspended);
                let row = row?;
                if row.state() != JobState::Running {
                    return Err(LockedError::AlreadyFinished);
                }
                let (current, suspended) = (current?, suspended?);
                let wanted = Access::wanted(suspended, current.state());
                apply(Locked {
                    database: current,
                    wanted,
                })
                .await
                .map_err(LockedError::Engine)?;
                // The job first: from here its row is locked, so a master-key rotation's
                // re-seal of it waits for this commit (then finds the copy below), or it came
                // before and the copy takes its result. Both statements in one round trip:
                // diesel-async sends pipelined statements in the order they are first polled
                // (its statement cache lock is first come, first served, and each sends in the
                // poll that releases it). Even in the other order the copy would converge: a
                // re-seal of the database row waits for this transaction's lock on it.
                let p: &AsyncPgConnection = c;
                let done = diesel::update(jobs::table.find(&job))
                    .set((
                        jobs::state.eq(JobState::Done.as_str()),
                        jobs::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(&mut &*p);
                let recorded = record(p, &db, row, wanted);
                let (done, recorded) = tokio::join!(done, recorded);
                exactly_one(done?, "mark job done")?;
                exactly_one(recorded?, "apply job result to database")?;
                Ok(())
            })
            .await
    }

    /// Fails the job, only while it is still live. For a rotate that may have reached the
    /// engine in an earlier delivery (one killed between the engine step and its commit),
    /// `undo` first puts the password metadata holds back on the engine, so engine and
    /// metadata agree again; if `undo` fails, nothing is recorded and the job stays open for
    /// another delivery. Without a database row, there is nothing to undo.
    #[tracing::instrument(name = "metadata.fail_locked", skip_all)]
    pub async fn fail<E, F, Fut>(
        &mut self,
        failure: JobFailure,
        undo: F,
    ) -> std::result::Result<(), LockedError<E>>
    where
        E: Send,
        F: FnOnce(Database) -> Fut + Send,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
    {
        let (job, db) = (self.job.clone(), self.db.clone());
        self.conn()
            .transaction(async move |c| {
                live_job(c, &job).await?;
                let current = databases::table
                    .find(&db)
                    .select(Database::as_select())
                    .first(c)
                    .await
                    .optional()?;
                if let Some(current) = current {
                    undo(current).await.map_err(LockedError::Engine)?;
                }
                mark_failed(c, &job, failure).await?;
                Ok(())
            })
            .await
    }

    /// A create failed. Only while the job is still live and its row still `creating`,
    /// `cleanup` removes what the create left on the engine (it answers whether nothing is
    /// left); then the intent row is removed, freeing the slot and the name, or parked as
    /// `failed` for the reconciler to finish, and the job is failed. A duplicate delivery that
    /// finished the create meanwhile (the row is `active`) makes this
    /// [`LockedError::AlreadyFinished`]: nothing is undone.
    #[tracing::instrument(name = "metadata.fail_create", skip_all)]
    pub async fn fail_create<F, Fut>(
        &mut self,
        failure: JobFailure,
        cleanup: F,
    ) -> std::result::Result<(), LockedError<std::convert::Infallible>>
    where
        F: FnOnce(Database) -> Fut + Send,
        Fut: Future<Output = bool> + Send,
    {
        let (job, db) = (self.job.clone(), self.db.clone());
        self.conn()
            .transaction(async move |c| {
                live_job(c, &job).await?;
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
}

/// The job, if it is still live (`pending` or `running`); a job another delivery finished is
/// [`LockedError::AlreadyFinished`].
async fn live_job<E>(
    c: &mut AsyncPgConnection,
    job: &str,
) -> std::result::Result<Job, LockedError<E>> {
    let row = read_job(c, job).await?;
    match row.state() {
        JobState::Pending | JobState::Running => Ok(row),
        _ => Err(LockedError::AlreadyFinished),
    }
}

/// Writes a finished step's result into the database row; answers how many rows it changed.
async fn record(
    p: &AsyncPgConnection,
    db: &str,
    job: Job,
    wanted: Access,
) -> std::result::Result<usize, StoreError> {
    Ok(match job.kind() {
        JobKind::Create => {
            diesel::update(
                databases::table
                    .find(db)
                    .filter(databases::state.eq(DatabaseState::Creating.as_str())),
            )
            .set(databases::state.eq(DatabaseState::Active.as_str()))
            .execute(&mut &*p)
            .await?
        }
        JobKind::Rotate => {
            if job.password_sealed.is_none() {
                return Err(StoreError::Guard("rotate job without a password".into()));
            }
            // Copied as the job row holds it now (not as it was read when the step began), so
            // a re-seal that happened meanwhile is what the database row gets.
            let sealed = jobs::table
                .find(&job.id)
                .select(jobs::password_sealed)
                .single_value()
                .assume_not_null();
            let visible = DatabaseState::texts(DatabaseState::is_visible);
            diesel::update(
                databases::table
                    .find(db)
                    .filter(databases::state.eq_any(visible)),
            )
            .set(databases::password_sealed.eq(sealed))
            .execute(&mut &*p)
            .await?
        }
        JobKind::Access => {
            diesel::update(databases::table.find(db))
                .set(databases::engine_access.eq(wanted.as_str()))
                .execute(&mut &*p)
                .await?
        }
        // Nothing of it is left on the engine: the row goes, and with it the slot.
        JobKind::Delete => {
            diesel::delete(
                databases::table
                    .find(db)
                    .filter(databases::state.eq(DatabaseState::Deleting.as_str())),
            )
            .execute(&mut &*p)
            .await?
        }
    })
}
