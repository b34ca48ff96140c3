//! Databases: the create intent (slot check and name allocation), reads for the API, and the
//! operator's deletion bookkeeping.

use diesel::{
    OptionalExtension,
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{
    AccountId, DatabaseId, DatabaseState, Engine, JobId, JobState,
    naming::{DbTag, EngineNames},
    state::JobKind,
};

use crate::{
    Result, Store, StoreError, exactly_one,
    models::{Account, Database},
    schema::{accounts, databases, jobs},
};

/// What the gateway asks for when a user creates a database.
#[derive(Debug)]
pub struct NewDatabase<'a> {
    pub id: DatabaseId,
    pub account: AccountId,
    pub name: &'a str,
    pub engine: Engine,
    pub password_sealed: Vec<u8>,
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
            _ => ReserveError::Store(e.into()),
        }
    }
}

/// The states that hold a slot: everything but a failed create.
const SLOT_HOLDING: [&str; 5] = ["creating", "active", "over_quota", "disabled", "deleting"];
/// The states visible through the API.
const VISIBLE: [&str; 3] = ["active", "over_quota", "disabled"];

impl Store {
    /// Records the intent to create a database and its create job, in one transaction that
    /// holds the account row lock: concurrent creates of one account serialize here, so N
    /// parallel requests against k free slots reserve exactly k.
    pub async fn reserve_create(
        &self,
        new: NewDatabase<'_>,
    ) -> Result<(Database, JobId), ReserveError> {
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
            let used: i64 = databases::table
                .filter(databases::account_id.eq(&account_id))
                .filter(databases::state.eq_any(SLOT_HOLDING))
                .count()
                .get_result(c)
                .await?;
            if used >= i64::from(account.slots) {
                return Err(ReserveError::OutOfSlots);
            }
            let taken: i64 = databases::table
                .filter(databases::account_id.eq(&account_id))
                .filter(databases::name.eq(new.name))
                .filter(databases::state.ne("failed"))
                .count()
                .get_result(c)
                .await?;
            if taken > 0 {
                return Err(ReserveError::DuplicateName);
            }
            let seq = account.next_db_seq;
            diesel::update(accounts::table.find(&account_id))
                .set(accounts::next_db_seq.eq(seq + 1))
                .execute(c)
                .await?;
            let tag = DbTag::parse(&account.db_tag)
                .ok_or_else(|| StoreError::Guard("account db_tag is malformed".into()))?;
            let names = EngineNames::new(&tag, u32::try_from(seq).unwrap_or_default());
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
                ))
                .returning(Database::as_returning())
                .get_result(c)
                .await?;
            let job = JobId::new();
            diesel::insert_into(jobs::table)
                .values((
                    jobs::id.eq(job.to_text()),
                    jobs::database_id.eq(Some(new.id.to_text())),
                    jobs::kind.eq(JobKind::Create.as_str()),
                    jobs::state.eq(JobState::Pending.as_str()),
                ))
                .execute(c)
                .await?;
            Ok((db, job))
        })
        .await
    }

    /// The account's visible databases, oldest first.
    pub async fn list_databases(&self, account: AccountId) -> Result<Vec<Database>> {
        let mut conn = self.conn().await?;
        Ok(databases::table
            .filter(databases::account_id.eq(account.to_text()))
            .filter(databases::state.eq_any(VISIBLE))
            .order((databases::created_at.asc(), databases::id.asc()))
            .select(Database::as_select())
            .load(&mut conn)
            .await?)
    }

    /// One visible database, only if `account` owns it.
    pub async fn owned_database(
        &self,
        account: AccountId,
        id: DatabaseId,
    ) -> Result<Option<Database>> {
        let mut conn = self.conn().await?;
        Ok(databases::table
            .find(id.to_text())
            .filter(databases::account_id.eq(account.to_text()))
            .filter(databases::state.eq_any(VISIBLE))
            .select(Database::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Any database by id, whatever its state (worker and operator use).
    pub async fn database(&self, id: DatabaseId) -> Result<Option<Database>> {
        let mut conn = self.conn().await?;
        Ok(databases::table
            .find(id.to_text())
            .select(Database::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Moves a database to `deleting` (the write-ahead mark of an operator deletion) unless it
    /// is still being created. Returns the row as it was.
    pub async fn mark_deleting(&self, id: DatabaseId) -> Result<Option<Database>> {
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
                return Ok(None);
            };
            if db.state() == DatabaseState::Creating {
                return Err(StoreError::Guard(
                    "database is still being created; retry when its job has finished".into(),
                ));
            }
            let n = diesel::update(databases::table.find(&id))
                .set(databases::state.eq(DatabaseState::Deleting.as_str()))
                .execute(c)
                .await?;
            exactly_one(n, "mark database deleting")?;
            Ok(Some(db))
        })
        .await
    }

    /// Removes a row in `deleting` state once its engine objects are gone.
    pub async fn remove_deleted(&self, id: DatabaseId) -> Result<()> {
        let mut conn = self.conn().await?;
        let n = diesel::delete(
            databases::table
                .find(id.to_text())
                .filter(databases::state.eq(DatabaseState::Deleting.as_str())),
        )
        .execute(&mut conn)
        .await?;
        exactly_one(n, "remove deleted database")
    }
}
