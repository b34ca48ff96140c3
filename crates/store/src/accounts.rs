//! Accounts: slots, storage quota, access flags and the suspension cascade.

use diesel::{OptionalExtension, prelude::*};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{AccountId, naming::DbTag};

use crate::{
    Result, Store, StoreError, exactly_one,
    models::Account,
    schema::{accounts, api_keys},
};

/// Fields an operator may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct AccountUpdate {
    pub slots: Option<i32>,
    pub storage_mb: Option<i64>,
    pub db_access: Option<bool>,
}

impl Store {
    pub async fn create_account(&self, name: &str, slots: i32, storage_mb: i64) -> Result<Account> {
        let mut conn = self.conn().await?;
        Ok(diesel::insert_into(accounts::table)
            .values((
                accounts::id.eq(AccountId::new().to_text()),
                accounts::name.eq(name),
                accounts::db_tag.eq(DbTag::generate().as_str()),
                accounts::slots.eq(slots),
                accounts::storage_mb.eq(storage_mb),
            ))
            .returning(Account::as_returning())
            .get_result(&mut conn)
            .await?)
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

    /// Applies an operator update; `None` if the account does not exist.
    pub async fn update_account(
        &self,
        id: AccountId,
        update: &AccountUpdate,
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
            Ok::<_, StoreError>(Some(a))
        })
        .await
    }

    /// Suspends the account and, in the same transaction, disables every enabled key of it,
    /// remembering which ones so that [`Store::unsuspend_account`] restores exactly those.
    /// Returns the number of keys disabled, or `None` if the account does not exist.
    pub async fn suspend_account(&self, id: AccountId) -> Result<Option<usize>> {
        self.set_suspended(id, true).await
    }

    /// Lifts a suspension and re-enables the keys the suspension disabled (not the ones the
    /// owner had disabled). Returns the number of keys re-enabled.
    pub async fn unsuspend_account(&self, id: AccountId) -> Result<Option<usize>> {
        self.set_suspended(id, false).await
    }

    async fn set_suspended(&self, id: AccountId, suspend: bool) -> Result<Option<usize>> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let n = diesel::update(accounts::table.find(&id))
                .set(accounts::suspended.eq(suspend))
                .execute(c)
                .await?;
            if n == 0 {
                return Ok(None);
            }
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
                        .filter(api_keys::disabled_by_suspension.eq(true)),
                )
                .set((
                    api_keys::enabled.eq(true),
                    api_keys::disabled_by_suspension.eq(false),
                ))
                .execute(c)
                .await?
            };
            Ok::<_, StoreError>(Some(keys))
        })
        .await
    }
}
