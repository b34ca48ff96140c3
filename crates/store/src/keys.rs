//! API keys: minted here, stored as hashes, looked up on every request (no cache, so disabling
//! a key takes effect on the next request on every gateway replica).

use diesel::{OptionalExtension, dsl::AsSelect, pg::Pg, prelude::*};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hepdb_core::{AccountId, DatabaseId, KeyId, secret::ApiKey, secret::KeyHash};

use crate::{
    Result, Store,
    audit::{Actor, AuditEntry},
    databases::visible,
    models::{Account, ApiKeyRow, Database, EngineHost},
    schema::{accounts, api_keys, databases, engine_hosts},
};

impl Store {
    /// Mints a key for the account. The plain key is returned once and never stored.
    /// `None` if the account does not exist.
    pub async fn mint_key(&self, account: AccountId) -> Result<Option<(KeyId, ApiKey)>> {
        Ok(self
            .mint_labeled_key(account, "", None)
            .await?
            .map(|(row, key)| (row.id.parse().expect("a minted key's id"), key)))
    }

    /// [`Store::mint_key`] with the label the dashboard shows; returns the stored row too. A
    /// key minted while its account is suspended waits for the unsuspension like the others
    /// (`disabledBy: suspension`).
    pub async fn mint_labeled_key(
        &self,
        account: AccountId,
        label: &str,
        actor: Option<Actor<'_>>,
    ) -> Result<Option<(ApiKeyRow, ApiKey)>> {
        let (id, key) = (KeyId::new(), ApiKey::generate());
        let mut conn = self.conn().await?;
        let account = account.to_text();
        conn.transaction(async |c| {
            let Some(suspended) = suspended_for_share(c, &account).await? else {
                return Ok(None);
            };
            let row = diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(id.to_text()),
                    api_keys::account_id.eq(&account),
                    api_keys::key_hash.eq(&key.hash().0[..]),
                    api_keys::label.eq(label),
                    api_keys::enabled.eq(!suspended),
                    api_keys::disabled_by_suspension.eq(suspended),
                ))
                .returning(ApiKeyRow::as_returning())
                .get_result::<ApiKeyRow>(c)
                .await?;
            if let Some(actor) = actor {
                actor
                    .record(c, "key.mint", &account, |e| AuditEntry {
                        key: Some(&row.id),
                        ..e
                    })
                    .await?;
            }
            Ok(Some((row, key)))
        })
        .await
    }

    /// The owner's switch: enables or disables a key by its id. While its account is
    /// suspended, switching it on only lets the unsuspension enable it. A revoked key stays
    /// revoked. Returns the key as it is now, `None` if there is no such live key.
    pub async fn set_key_enabled(
        &self,
        id: KeyId,
        enabled: bool,
        actor: Option<Actor<'_>>,
    ) -> Result<Option<ApiKeyRow>> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let Some(account) = api_keys::table
                .find(&id)
                .filter(api_keys::revoked_at.is_null())
                .select(api_keys::account_id)
                .first::<String>(c)
                .await
                .optional()?
            else {
                return Ok(None);
            };
            let suspended = suspended_for_share(c, &account).await?.unwrap_or(false);
            let row = diesel::update(
                api_keys::table
                    .find(&id)
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set((
                api_keys::enabled.eq(enabled && !suspended),
                api_keys::disabled_by_suspension.eq(enabled && suspended),
            ))
            .returning(ApiKeyRow::as_returning())
            .get_result::<ApiKeyRow>(c)
            .await
            .optional()?;
            if let (Some(actor), Some(_)) = (actor, &row) {
                let action = if enabled { "key.enable" } else { "key.disable" };
                actor
                    .record(c, action, &account, |e| AuditEntry {
                        key: Some(&id),
                        ..e
                    })
                    .await?;
            }
            Ok(row)
        })
        .await
    }

    /// Revokes a key for good: it never works again, and neither the owner nor an
    /// unsuspension enables it. Returns the account it belonged to, `None` if there is no such
    /// live key.
    pub async fn revoke_key(&self, id: KeyId, actor: Option<Actor<'_>>) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        let id = id.to_text();
        conn.transaction(async |c| {
            let account: Option<String> = diesel::update(
                api_keys::table
                    .find(&id)
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set((
                api_keys::enabled.eq(false),
                api_keys::disabled_by_suspension.eq(false),
                api_keys::revoked_at.eq(diesel::dsl::now),
            ))
            .returning(api_keys::account_id)
            .get_result(c)
            .await
            .optional()?;
            if let (Some(actor), Some(account)) = (actor, &account) {
                actor
                    .record(c, "key.revoke", account, |e| AuditEntry {
                        key: Some(&id),
                        ..e
                    })
                    .await?;
            }
            Ok(account)
        })
        .await
    }

    /// One key by id, revoked or not.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRow>> {
        let mut conn = self.conn().await?;
        Ok(api_keys::table
            .find(id)
            .select(ApiKeyRow::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// The account's keys that were not revoked, oldest first.
    pub async fn keys_of(&self, account: AccountId) -> Result<Vec<ApiKeyRow>> {
        let mut conn = self.conn().await?;
        Ok(api_keys::table
            .filter(api_keys::account_id.eq(account.to_text()))
            .filter(api_keys::revoked_at.is_null())
            .order(api_keys::created_at)
            .select(ApiKeyRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Records that a key was used, at most once an hour per key: `lastUsedAt` is coarse so
    /// that authentication never adds a write per request.
    pub async fn note_key_use(&self, id: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        diesel::update(
            api_keys::table.find(id).filter(
                api_keys::last_used_at
                    .is_null()
                    .or(api_keys::last_used_at.lt(hour_ago)),
            ),
        )
        .set(api_keys::last_used_at.eq(diesel::dsl::now))
        .execute(&mut conn)
        .await?;
        Ok(())
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
        Ok(key_and_account(hash).first(&mut conn).await.optional()?)
    }
}

/// Whether the account is suspended, read `FOR SHARE`: a suspension or unsuspension (which
/// updates the account row) waits for the caller's transaction, and the other way round, so
/// a key changed meanwhile is never left out of the cascade. `None` if there is no account.
async fn suspended_for_share(c: &mut AsyncPgConnection, account: &str) -> Result<Option<bool>> {
    Ok(accounts::table
        .find(account)
        .for_share()
        .select(accounts::suspended)
        .first(c)
        .await
        .optional()?)
}

/// A read request's key and account, fetched in the same round trip as the rows it reads.
pub type KeyedRead<T> = Option<(ApiKeyRow, Account, T)>;

impl Store {
    /// The key with this hash, its account, and the account's visible databases, oldest
    /// first: the whole of a list request in one statement (the key and account repeated on
    /// each database's row; one row with no database when it has none). The caller
    /// authorizes the key before it shows a row.
    #[tracing::instrument(name = "metadata.list_for_key", skip_all)]
    pub async fn list_for_key(&self, hash: &KeyHash) -> Result<KeyedRead<Vec<Database>>> {
        let mut conn = self.conn().await?;
        let rows: Vec<(ApiKeyRow, Account, Option<Database>)> = api_keys::table
            .inner_join(
                accounts::table.left_join(
                    databases::table.on(databases::account_id
                        .eq(accounts::id)
                        .and(databases::state.eq_any(visible()))),
                ),
            )
            .filter(api_keys::key_hash.eq(&hash.0[..]))
            .order((databases::created_at.asc(), databases::id.asc()))
            .select((
                ApiKeyRow::as_select(),
                Account::as_select(),
                DATABASE.nullable(),
            ))
            .load(&mut conn)
            .await?;
        let mut rows = rows.into_iter();
        let Some((key, account, first)) = rows.next() else {
            return Ok(None);
        };
        let databases = first
            .into_iter()
            .chain(rows.filter_map(|(_, _, db)| db))
            .collect();
        Ok(Some((key, account, databases)))
    }

    /// The key with this hash, its account, and database `id` with its host if the key's
    /// account owns it and it is visible: the reads of a reveal or a rotate in one statement.
    #[tracing::instrument(name = "metadata.reveal_for_key", skip_all)]
    pub async fn reveal_for_key(
        &self,
        hash: &KeyHash,
        id: DatabaseId,
    ) -> Result<KeyedRead<Option<(Database, EngineHost)>>> {
        let mut conn = self.conn().await?;
        type Row = (ApiKeyRow, Account, Option<Database>, Option<EngineHost>);
        let row: Option<Row> = api_keys::table
            .inner_join(
                accounts::table
                    .left_join(
                        databases::table.on(databases::account_id
                            .eq(accounts::id)
                            .and(databases::id.eq(id.to_text()))
                            .and(databases::state.eq_any(visible()))),
                    )
                    .left_join(engine_hosts::table.on(engine_hosts::name.eq(databases::host))),
            )
            .filter(api_keys::key_hash.eq(&hash.0[..]))
            .select((
                ApiKeyRow::as_select(),
                Account::as_select(),
                DATABASE.nullable(),
                ENGINE_HOST.nullable(),
            ))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(row.map(|(key, account, db, host)| (key, account, db.zip(host))))
    }
}

/// A table's columns in a model's field order, as a type and as a value to select: for reads
/// that join the model nullable (a Selectable cannot be).
macro_rules! columns {
    ($ty:ident, $value:ident = $table:ident: $($column:ident),+ $(,)?) => {
        type $ty = ($($table::$column,)+);
        const $value: $ty = ($($table::$column,)+);
    };
}

columns!(DatabaseColumns, DATABASE = databases:
    id, account_id, name, engine, seq, db_name, db_user, password_sealed, state, size_bytes,
    size_refreshed_at, created_at, host, engine_access,
);

columns!(EngineHostColumns, ENGINE_HOST = engine_hosts:
    name, engine, public_host, public_port, capacity, drained, updated_at,
);

/// The key with this hash and its account (one indexed point select).
#[diesel::dsl::auto_type(no_type_alias)]
fn key_and_account<'a>(hash: &'a KeyHash) -> _ {
    let columns: (AsSelect<ApiKeyRow, Pg>, AsSelect<Account, Pg>) =
        (ApiKeyRow::as_select(), Account::as_select());
    let hash: &'a [u8] = &hash.0[..];
    api_keys::table
        .inner_join(accounts::table)
        .filter(api_keys::key_hash.eq(hash))
        .select(columns)
}
