//! Accounts: slots, storage quota, access flags and the suspension cascade.

use diesel::{OptionalExtension, prelude::*};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{Access, AccountId, DatabaseId, DatabaseState, JobId, naming::DbTag};

use crate::{
    Result, Store, StoreError,
    audit::{Actor, AuditEntry},
    exactly_one,
    models::{Account, Database},
    schema::{accounts, api_keys, databases},
};

/// Fields an operator may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct AccountUpdate {
    pub slots: Option<i32>,
    pub storage_mb: Option<i64>,
    pub db_access: Option<bool>,
}

/// A new account, as the platform API or `hepdb-admin` asks for it.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    /// The platform's own id for the owner, unique when given.
    pub external_id: Option<&'a str>,
    pub name: &'a str,
    pub slots: i32,
    pub storage_mb: i64,
    pub db_access: bool,
}

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("an account with this external id exists already")]
    ExternalIdTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A random 40-bit `db_tag` collides with an existing one about once in 10^12 / accounts
/// creations; a collision is retried with a new tag, this many times, never surfaced.
const DB_TAG_TRIES: usize = 8;

/// What an account holds: slots and bytes in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub slots_used: i64,
    pub used_bytes: i64,
    /// Databases whose engine access is not yet what metadata wants (a suspension or a quota
    /// change still on its way to the engines).
    pub access_pending: i64,
}

impl Store {
    pub async fn create_account(&self, name: &str, slots: i32, storage_mb: i64) -> Result<Account> {
        let new = NewAccount {
            external_id: None,
            name,
            slots,
            storage_mb,
            db_access: true,
        };
        self.insert_account(&new, None).await.map_err(|e| match e {
            CreateAccountError::Store(e) => e,
            CreateAccountError::ExternalIdTaken => StoreError::Guard("external id taken".into()),
        })
    }

    /// Creates an account with a fresh `db_tag`; a tag that collides is retried with another.
    /// With an `actor`, its audit entry is written in the same transaction.
    pub async fn insert_account(
        &self,
        new: &NewAccount<'_>,
        actor: Option<Actor<'_>>,
    ) -> std::result::Result<Account, CreateAccountError> {
        self.insert_account_tagged(new, actor, DbTag::generate)
            .await
    }

    /// [`Store::insert_account`] with its fresh tags drawn from `tag` (a test makes the first
    /// one collide).
    pub async fn insert_account_tagged(
        &self,
        new: &NewAccount<'_>,
        actor: Option<Actor<'_>>,
        mut tag: impl FnMut() -> DbTag,
    ) -> std::result::Result<Account, CreateAccountError> {
        use diesel::result::{DatabaseErrorKind::UniqueViolation, Error::DatabaseError};
        let mut conn = self.conn().await?;
        for _ in 0..DB_TAG_TRIES {
            let db_tag = tag();
            let inserted = conn
                .transaction(async |c| {
                    let account: Account = diesel::insert_into(accounts::table)
                        .values((
                            accounts::id.eq(AccountId::new().to_text()),
                            accounts::name.eq(new.name),
                            accounts::db_tag.eq(db_tag.as_str()),
                            accounts::slots.eq(new.slots),
                            accounts::storage_mb.eq(new.storage_mb),
                            accounts::db_access.eq(new.db_access),
                            accounts::external_id.eq(new.external_id),
                        ))
                        .returning(Account::as_returning())
                        .get_result(c)
                        .await?;
                    if let Some(actor) = actor {
                        actor
                            .record(c, "account.create", &account.id, |e| e)
                            .await?;
                    }
                    Ok::<_, diesel::result::Error>(account)
                })
                .await;
            match inserted {
                Ok(account) => return Ok(account),
                Err(DatabaseError(UniqueViolation, info))
                    if info.constraint_name() == Some("accounts_db_tag_key") =>
                {
                    tracing::info!("db_tag collision; retrying with a new tag");
                }
                Err(DatabaseError(UniqueViolation, info))
                    if info.constraint_name() == Some("accounts_external_id_key") =>
                {
                    return Err(CreateAccountError::ExternalIdTaken);
                }
                Err(e) => return Err(StoreError::from(e).into()),
            }
        }
        Err(StoreError::Guard("no free db_tag after several tries".into()).into())
    }

    /// Accounts, oldest first, at most `limit`.
    pub async fn accounts(&self, limit: i64) -> Result<Vec<Account>> {
        let mut conn = self.conn().await?;
        Ok(accounts::table
            .order((accounts::created_at, accounts::id))
            .limit(limit)
            .select(Account::as_select())
            .load(&mut conn)
            .await?)
    }

    /// The account with this platform id.
    pub async fn account_by_external_id(&self, external_id: &str) -> Result<Option<Account>> {
        let mut conn = self.conn().await?;
        Ok(accounts::table
            .filter(accounts::external_id.eq(external_id))
            .select(Account::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Slots and bytes the account uses, and how many of its databases' engine access has not
    /// caught up with metadata yet.
    pub async fn usage(&self, account: &Account) -> Result<Usage> {
        use diesel::dsl::count_star;
        let conn = self.conn().await?;
        let id = account.id.as_str();
        let slots_used: i64 = databases::table
            .filter(databases::account_id.eq(id))
            .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::holds_slot)))
            .select(count_star())
            .get_result(&mut &*conn)
            .await?;
        let used_bytes = crate::quota::used_bytes(&conn, id).await?;
        let visible: Vec<Database> = databases::table
            .filter(databases::account_id.eq(id))
            .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::is_visible)))
            .select(Database::as_select())
            .load(&mut &*conn)
            .await?;
        let access_pending = visible
            .iter()
            .filter(|d| Access::wanted(account.suspended, d.state()) != d.engine_access())
            .count();
        Ok(Usage {
            slots_used,
            used_bytes,
            access_pending: i64::try_from(access_pending).unwrap_or(i64::MAX),
        })
    }

    pub async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let mut conn = self.conn().await?;
        Ok(accounts::table
            .find(id.to_text())
            .select(Account::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Applies an operator update; `None` if the account does not exist. With an `actor`, its
    /// audit entry is written in the same transaction.
    pub async fn update_account(
        &self,
        id: AccountId,
        update: &AccountUpdate,
        actor: Option<Actor<'_>>,
    ) -> Result<Option<Account>> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let Some(mut a) = accounts::table
                .find(&id)
                .for_update()
                .select(Account::as_select())
                .first(c)
                .await
                .optional()?
            else {
                return Ok(None);
            };
            a.slots = update.slots.unwrap_or(a.slots);
            a.storage_mb = update.storage_mb.unwrap_or(a.storage_mb);
            a.db_access = update.db_access.unwrap_or(a.db_access);
            let n = diesel::update(accounts::table.find(&id))
                .set((
                    accounts::slots.eq(a.slots),
                    accounts::storage_mb.eq(a.storage_mb),
                    accounts::db_access.eq(a.db_access),
                ))
                .execute(c)
                .await?;
            exactly_one(n, "update account")?;
            if let Some(actor) = actor {
                let detail = format!(
                    "slots={} storage_mb={} db_access={}",
                    a.slots, a.storage_mb, a.db_access
                );
                actor
                    .record(c, "account.update", &id, |e| AuditEntry {
                        detail: Some(&detail),
                        ..e
                    })
                    .await?;
            }
            Ok::<_, StoreError>(Some(a))
        })
        .await
    }

    /// Suspends the account in one transaction: every enabled key is disabled (remembering
    /// which, so [`Store::unsuspend_account`] restores exactly those), every database becomes
    /// `disabled`, and one access job per database is recorded to lock its engine user.
    /// `None` if the account does not exist.
    pub async fn suspend_account(
        &self,
        id: AccountId,
        actor: Option<Actor<'_>>,
    ) -> Result<Option<Suspension>> {
        self.set_suspended(id, true, actor).await
    }

    /// Lifts a suspension: the keys the suspension disabled work again (not the ones the owner
    /// had disabled), databases return to `active` or `over_quota` by the last measured total,
    /// and access jobs unlock their engine users.
    pub async fn unsuspend_account(
        &self,
        id: AccountId,
        actor: Option<Actor<'_>>,
    ) -> Result<Option<Suspension>> {
        self.set_suspended(id, false, actor).await
    }

    async fn set_suspended(
        &self,
        id: AccountId,
        suspend: bool,
        actor: Option<Actor<'_>>,
    ) -> Result<Option<Suspension>> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let Some(storage_mb) = diesel::update(accounts::table.find(&id))
                .set(accounts::suspended.eq(suspend))
                .returning(accounts::storage_mb)
                .get_result::<i64>(c)
                .await
                .optional()?
            else {
                return Ok(None);
            };
            let keys = if suspend {
                diesel::update(
                    api_keys::table
                        .filter(api_keys::account_id.eq(&id))
                        .filter(api_keys::enabled.eq(true)),
                )
                .set((
                    api_keys::enabled.eq(false),
                    api_keys::disabled_by_suspension.eq(true),
                ))
                .execute(c)
                .await?
            } else {
                diesel::update(
                    api_keys::table
                        .filter(api_keys::account_id.eq(&id))
                        .filter(api_keys::disabled_by_suspension.eq(true))
                        .filter(api_keys::revoked_at.is_null()),
                )
                .set((
                    api_keys::enabled.eq(true),
                    api_keys::disabled_by_suspension.eq(false),
                ))
                .execute(c)
                .await?
            };
            let of_account = databases::account_id.eq(&id);
            if suspend {
                diesel::update(databases::table.filter(of_account).filter(
                    databases::state.eq_any(DatabaseState::texts(DatabaseState::is_quota_managed)),
                ))
                .set(databases::state.eq(DatabaseState::Disabled.as_str()))
                .execute(c)
                .await?;
            } else {
                let used = crate::quota::used_bytes(&*c, &id).await?;
                let back = if used > storage_mb.saturating_mul(crate::quota::MB) {
                    DatabaseState::OverQuota
                } else {
                    DatabaseState::Active
                };
                diesel::update(
                    databases::table
                        .filter(of_account)
                        .filter(databases::state.eq(DatabaseState::Disabled.as_str())),
                )
                .set(databases::state.eq(back.as_str()))
                .execute(c)
                .await?;
            }
            let ids: Vec<String> = databases::table
                .filter(databases::account_id.eq(&id))
                .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::is_visible)))
                .select(databases::id)
                .load(c)
                .await?;
            let jobs = crate::quota::insert_access_jobs(c, &ids).await?;
            if let Some(actor) = actor {
                let action = if suspend {
                    "account.suspend"
                } else {
                    "account.unsuspend"
                };
                actor.record(c, action, &id, |e| e).await?;
            }
            Ok::<_, StoreError>(Some(Suspension { keys, jobs }))
        })
        .await
    }
}

/// What a suspension or unsuspension changed: keys switched, and the access jobs that carry
/// it to the engines (to publish, or for the reconciler to deliver).
#[derive(Debug, serde::Serialize)]
pub struct Suspension {
    pub keys: usize,
    pub jobs: Vec<(JobId, DatabaseId)>,
}
