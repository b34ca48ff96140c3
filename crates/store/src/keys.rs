//! API keys: minted here, stored as hashes, looked up on every request (no cache, so disabling
//! a key takes effect on the next request on every gateway replica).

use diesel::{OptionalExtension, prelude::*};
use diesel_async::RunQueryDsl;
use hepdb_core::{AccountId, KeyId, secret::ApiKey, secret::KeyHash};

use crate::{
    Result, Store,
    models::{Account, ApiKeyRow},
    schema::{accounts, api_keys},
};

impl Store {
    /// Mints a key for the account. The plain key is returned once and never stored.
    /// `None` if the account does not exist.
    pub async fn mint_key(&self, account: AccountId) -> Result<Option<(KeyId, ApiKey)>> {
        if self.account(account).await?.is_none() {
            return Ok(None);
        }
        let (id, key) = (KeyId::new(), ApiKey::generate());
        let mut conn = self.conn().await?;
        diesel::insert_into(api_keys::table)
            .values((
                api_keys::id.eq(id.to_text()),
                api_keys::account_id.eq(account.to_text()),
                api_keys::key_hash.eq(&key.hash().0[..]),
            ))
            .execute(&mut conn)
            .await?;
        Ok(Some((id, key)))
    }

    /// Enables or disables a key by its id. Returns whether the key exists.
    pub async fn set_key_enabled(&self, id: KeyId, enabled: bool) -> Result<bool> {
        let mut conn = self.conn().await?;
        let n = diesel::update(api_keys::table.find(id.to_text()))
            .set((
                api_keys::enabled.eq(enabled),
                api_keys::disabled_by_suspension.eq(false),
            ))
            .execute(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// The account a key belongs to.
    pub async fn key_account(&self, id: KeyId) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        Ok(api_keys::table
            .find(id.to_text())
            .select(api_keys::account_id)
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// The key with this hash and its account: one indexed point select.
    #[tracing::instrument(name = "metadata.find_key", skip_all)]
    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<(ApiKeyRow, Account)>> {
        let mut conn = self.conn().await?;
        Ok(api_keys::table
            .inner_join(accounts::table)
            .filter(api_keys::key_hash.eq(&hash.0[..]))
            .select((ApiKeyRow::as_select(), Account::as_select()))
            .first(&mut conn)
            .await
            .optional()?)
    }
}
