//! Databases: the create intent (slot check and name allocation), reads for the API, and the
//! operator's deletion bookkeeping.

use diesel::{
    OptionalExtension,
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hepdb_core::{
    AccountId, DatabaseId, DatabaseState, Engine, JobId, JobState,
    naming::{DbTag, EngineNames},
    state::JobKind,
};

use crate::{
    Result, Store, StoreError,
    audit::{Actor, AuditEntry},
    idempotency::{KEY_TAKEN, KeyedRequest},
    models::{Account, Database, EngineHost},
    schema::{accounts, databases, engine_hosts, jobs},
};

/// What the gateway asks for when a user creates a database.
#[derive(Debug)]
pub struct NewDatabase<'a> {
    pub id: DatabaseId,
    pub account: AccountId,
    pub name: &'a str,
    pub engine: Engine,
    pub password_sealed: Vec<u8>,
    /// The hosts of `engine` this gateway may place on (its configured ones); metadata's
    /// drain flag and the free capacity pick among them.
    pub hosts: &'a [&'a str],
    /// The request's Idempotency-Key, bound to the job in the same transaction.
    pub idempotency: Option<KeyedRequest<'a>>,
}

/// What a deletion request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteIntent {
    /// No such database.
    Missing,
    /// Its create has not finished, or a failed create is being cleaned up: nothing to
    /// delete yet.
    Unsettled,
    /// The delete job to run; `new` is false when it joins one already open.
    Job { job: JobId, new: bool },
}

/// A reserved create: the row, the host it was placed on, and its job.
#[derive(Debug)]
pub struct Reserved {
    pub database: Database,
    pub host: EngineHost,
    pub job: JobId,
}

/// Why a create intent was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("no free slot")]
    OutOfSlots,
    #[error("duplicate name")]
    DuplicateName,
    #[error("account not found")]
    NoAccount,
    /// Every host of the engine is full or drained.
    #[error("no engine host has room")]
    NoCapacity,
    /// The account's databases already use more than its storage quota.
    #[error("over the storage quota")]
    OverQuota,
    /// A concurrent request with the same Idempotency-Key bound it first.
    #[error("idempotency key taken concurrently")]
    KeyTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DieselError> for ReserveError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some("databases_account_name") =>
            {
                ReserveError::DuplicateName
            }
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some(KEY_TAKEN) =>
            {
                ReserveError::KeyTaken
            }
            _ => ReserveError::Store(e.into()),
        }
    }
}

/// The states that hold a slot, and room on a host: everything but a failed create.
pub(crate) fn slot_holding() -> Vec<&'static str> {
    DatabaseState::texts(DatabaseState::holds_slot)
}

/// The states visible through the API.
pub(crate) fn visible() -> Vec<&'static str> {
    DatabaseState::texts(DatabaseState::is_visible)
}

impl Store {
    /// Records the intent to create a database and its create job, in one transaction that
    /// holds the account row lock: concurrent creates of one account serialize here, so N
    /// parallel requests against k free slots reserve exactly k.
    ///
    /// The database goes to the non-drained host with the most free capacity. Host rows are
    /// locked after the account row (always in that order, so no deadlock), which keeps
    /// concurrent creates of different accounts from overfilling one host.
    #[tracing::instrument(name = "metadata.reserve_create", skip_all)]
    pub async fn reserve_create(&self, new: NewDatabase<'_>) -> Result<Reserved, ReserveError> {
        let mut conn = self.conn().await?;
        let account_id = new.account.to_text();
        conn.transaction(async |c| {
            let account = accounts::table
                .find(&account_id)
                .for_update()
                .select(Account::as_select())
                .first(c)
                .await
                .optional()?
                .ok_or(ReserveError::NoAccount)?;
            // Three independent reads under the account lock (taken by the awaited statement
            // above), pipelined: one round trip.
            let p: &AsyncPgConnection = c;
            let used = databases::table
                .filter(databases::account_id.eq(&account_id))
                .filter(databases::state.eq_any(slot_holding()))
                .count()
                .get_result::<i64>(&mut &*p);
            let bytes = crate::quota::used_bytes(p, &account_id);
            let taken = databases::table
                .filter(databases::account_id.eq(&account_id))
                .filter(databases::name.eq(new.name))
                .filter(databases::state.ne("failed"))
                .count()
                .get_result::<i64>(&mut &*p);
            let (used, bytes, taken) = tokio::join!(used, bytes, taken);
            if used? >= i64::from(account.slots) {
                return Err(ReserveError::OutOfSlots);
            }
            if bytes? > account.storage_mb.saturating_mul(crate::quota::MB) {
                return Err(ReserveError::OverQuota);
            }
            if taken? > 0 {
                return Err(ReserveError::DuplicateName);
            }
            // Only a create that passed its checks locks the host rows (after the account's,
            // always in that order, so no deadlock): a refused one never holds up other
            // accounts' placements.
            let host = place(candidates(c, new.engine, new.hosts).await?)?;
            let seq = account.next_db_seq;
            let tag = DbTag::parse(&account.db_tag)
                .ok_or_else(|| StoreError::Guard("account db_tag is malformed".into()))?;
            let names = EngineNames::new(&tag, u32::try_from(seq).unwrap_or_default());
            let job = JobId::new();
            // The sequence bump and the row are independent and share a round trip; the job
            // follows once the row exists (pipelined statements may reach the server out of
            // order, and the job references the row).
            let p: &AsyncPgConnection = c;
            let bump = diesel::update(accounts::table.find(&account_id))
                .set(accounts::next_db_seq.eq(seq + 1))
                .execute(&mut &*p);
            let db = diesel::insert_into(databases::table)
                .values((
                    databases::id.eq(new.id.to_text()),
                    databases::account_id.eq(&account_id),
                    databases::name.eq(new.name),
                    databases::engine.eq(new.engine.as_str()),
                    databases::seq.eq(seq),
                    databases::db_name.eq(names.db_name()),
                    databases::db_user.eq(names.db_user()),
                    databases::password_sealed.eq(&new.password_sealed),
                    databases::state.eq(DatabaseState::Creating.as_str()),
                    databases::host.eq(&host.name),
                ))
                .returning(Database::as_returning())
                .get_result(&mut &*p);
            let (bump, db) = tokio::join!(bump, db);
            bump?;
            let db = db?;
            diesel::insert_into(jobs::table)
                .values((
                    jobs::id.eq(job.to_text()),
                    jobs::database_id.eq(Some(new.id.to_text())),
                    jobs::kind.eq(JobKind::Create.as_str()),
                    jobs::state.eq(JobState::Pending.as_str()),
                    // The first password, kept with the job so an idempotent replay returns
                    // it even after later rotations.
                    jobs::password_sealed.eq(Some(&new.password_sealed)),
                ))
                .execute(c)
                .await?;
            crate::idempotency::bind(c, &account_id, new.idempotency, job).await?;
            Ok(Reserved {
                database: db,
                host,
                job,
            })
        })
        .await
    }

    /// One visible database with its host, only if `account` owns it.
    #[tracing::instrument(name = "metadata.owned_database", skip_all)]
    pub async fn owned_database(
        &self,
        account: AccountId,
        id: DatabaseId,
    ) -> Result<Option<(Database, EngineHost)>> {
        self.visible_database_of(Some(account), id).await
    }

    /// One visible database with its host, whoever owns it (the platform API).
    #[tracing::instrument(name = "metadata.visible_database", skip_all)]
    pub async fn visible_database(&self, id: DatabaseId) -> Result<Option<(Database, EngineHost)>> {
        self.visible_database_of(None, id).await
    }

    async fn visible_database_of(
        &self,
        account: Option<AccountId>,
        id: DatabaseId,
    ) -> Result<Option<(Database, EngineHost)>> {
        let mut conn = self.conn().await?;
        let mut query = databases::table
            .inner_join(engine_hosts::table)
            .filter(databases::id.eq(id.to_text()))
            .filter(databases::state.eq_any(visible()))
            .select((Database::as_select(), EngineHost::as_select()))
            .into_boxed();
        if let Some(account) = account {
            query = query.filter(databases::account_id.eq(account.to_text()));
        }
        Ok(query.first(&mut conn).await.optional()?)
    }

    /// Every database of the account, in any state, oldest first (the platform API's view).
    pub async fn databases_of(&self, account: AccountId) -> Result<Vec<Database>> {
        let mut conn = self.conn().await?;
        Ok(databases::table
            .filter(databases::account_id.eq(account.to_text()))
            .order((databases::created_at, databases::id))
            .select(Database::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Any database by id, whatever its state (worker and operator use).
    #[tracing::instrument(name = "metadata.database", skip_all)]
    pub async fn database(&self, id: DatabaseId) -> Result<Option<Database>> {
        let mut conn = self.conn().await?;
        Ok(databases::table
            .find(id.to_text())
            .select(Database::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// The open delete job of a database already being deleted, read without taking the
    /// row's lock (which that job holds while it runs on the engine): a repeated deletion
    /// request joins it at once instead of queueing behind it.
    #[tracing::instrument(name = "metadata.open_delete_job", skip_all)]
    pub async fn open_delete_job(&self, id: DatabaseId) -> Result<Option<JobId>> {
        let mut conn = self.conn().await?;
        let open: Option<String> = jobs::table
            .filter(jobs::database_id.eq(id.to_text()))
            .filter(jobs::kind.eq(JobKind::Delete.as_str()))
            .filter(jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]))
            .select(jobs::id)
            .first(&mut conn)
            .await
            .optional()?;
        Ok(open.and_then(|j| j.parse().ok()))
    }

    /// Records a deletion: the row becomes `deleting` (hidden, its name and slot still held)
    /// and a pending delete job carries it to the worker, in one transaction. A database
    /// already being deleted answers the open job, so a repeated request joins it.
    #[tracing::instrument(name = "metadata.insert_delete_job", skip_all)]
    pub async fn insert_delete_job(
        &self,
        id: DatabaseId,
        actor: Option<Actor<'_>>,
    ) -> Result<DeleteIntent> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let Some(db) = databases::table
                .find(&id)
                .for_update()
                .select(Database::as_select())
                .first(c)
                .await
                .optional()?
            else {
                return Ok(DeleteIntent::Missing);
            };
            if matches!(db.state(), DatabaseState::Creating | DatabaseState::Failed) {
                return Ok(DeleteIntent::Unsettled);
            }
            if db.state() == DatabaseState::Deleting {
                let open: Option<String> = jobs::table
                    .filter(jobs::database_id.eq(&id))
                    .filter(jobs::kind.eq(JobKind::Delete.as_str()))
                    .filter(
                        jobs::state
                            .eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]),
                    )
                    .select(jobs::id)
                    .first(c)
                    .await
                    .optional()?;
                if let Some(job) = open.and_then(|j| j.parse().ok()) {
                    return Ok(DeleteIntent::Job { job, new: false });
                }
            }
            diesel::update(databases::table.find(&id))
                .set(databases::state.eq(DatabaseState::Deleting.as_str()))
                .execute(c)
                .await?;
            let job = JobId::new();
            diesel::insert_into(jobs::table)
                .values((
                    jobs::id.eq(job.to_text()),
                    jobs::database_id.eq(Some(&id)),
                    jobs::kind.eq(JobKind::Delete.as_str()),
                    jobs::state.eq(JobState::Pending.as_str()),
                ))
                .execute(c)
                .await?;
            // The deletion is audited once, when it is recorded; asking again after a job gave
            // up starts another attempt at the same deletion. (A platform request's
            // Idempotency-Key is still bound.)
            match actor {
                Some(actor) if db.state() != DatabaseState::Deleting => {
                    actor
                        .record(c, "database.delete", &db.account_id, |e| AuditEntry {
                            database: Some(&id),
                            detail: Some(&db.db_name),
                            ..e
                        })
                        .await?;
                }
                Some(Actor {
                    idempotency: Some(binding),
                    ..
                }) => binding.bind(c, &id).await?,
                _ => {}
            }
            Ok(DeleteIntent::Job { job, new: true })
        })
        .await
    }
}

/// The hosts a new database may go to (`allowed` hosts of `engine` that are not drained),
/// their rows locked, with their counts of slot-holding databases.
fn candidates<'a>(
    p: &'a diesel_async::AsyncPgConnection,
    engine: Engine,
    allowed: &'a [&str],
) -> impl Future<Output = diesel::QueryResult<Vec<(EngineHost, i64)>>> + Send + 'a {
    // Each host's count of slot-holding databases is kept on its row by triggers (migration
    // `host_database_counts`), so this reads no database rows; the row locks, held until the
    // new row's insert has counted itself, keep concurrent placements exact.
    engine_hosts::table
        .filter(engine_hosts::engine.eq(engine.as_str()))
        .filter(engine_hosts::name.eq_any(allowed))
        .filter(engine_hosts::drained.eq(false))
        .order(engine_hosts::name)
        .for_update()
        .select((EngineHost::as_select(), engine_hosts::databases))
        .load(&mut &*p)
}

/// Picks the host for a new database: the candidate with the most free capacity; ties go to
/// the first by name.
fn place(candidates: Vec<(EngineHost, i64)>) -> Result<EngineHost, ReserveError> {
    let free = |(h, used): &(EngineHost, i64)| i64::from(h.capacity) - used;
    candidates
        .into_iter()
        .filter(|h| free(h) > 0)
        // max_by_key keeps the last of equals; reverse the name order so ties go to the first.
        .rev()
        .max_by_key(free)
        .map(|(h, _)| h)
        .ok_or(ReserveError::NoCapacity)
}
