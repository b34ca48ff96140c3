//! The audit log: who created, revealed, rotated, deleted, suspended or changed a key, when,
//! and from where. Entries hold ids only, never a secret.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hepdb_core::AccountId;
use serde::Serialize;

use crate::{
    Result, Store, StoreError,
    schema::{audit_log, platform_idempotency},
};

/// Who changes something, for the audit entry written in the same transaction as the change
/// (so there is never a change without its entry, nor an entry without its change).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// `platform:<token name>`, `operator:<user>`.
    pub name: &'a str,
    pub address: Option<&'a str>,
    /// A platform request's Idempotency-Key, bound in the same transaction to the resource
    /// the change is about (its key, else its database, else its account).
    pub idempotency: Option<Binding<'a>>,
}

/// An Idempotency-Key of one platform token, with its request's fingerprint.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub token: &'a str,
    pub key: &'a str,
    pub fingerprint: &'a [u8],
}

impl Binding<'_> {
    /// Binds the key to `resource`, on `c` (inside the change's transaction).
    pub(crate) async fn bind(
        self,
        c: &mut AsyncPgConnection,
        resource: &str,
    ) -> diesel::QueryResult<()> {
        // An expired binding of the same key gives way (a purge may not have run yet).
        diesel::delete(
            platform_idempotency::table
                .find((self.token, self.key))
                .filter(platform_idempotency::created_at.lt(crate::idempotency::window_start())),
        )
        .execute(c)
        .await?;
        diesel::insert_into(platform_idempotency::table)
            .values((
                platform_idempotency::token_id.eq(self.token),
                platform_idempotency::key.eq(self.key),
                platform_idempotency::fingerprint.eq(self.fingerprint),
                platform_idempotency::resource.eq(resource),
            ))
            .execute(c)
            .await?;
        Ok(())
    }
}

/// The primary key of `platform_idempotency`: a violation means a concurrent request bound
/// the same key first. Platform keys last as long as the public API's (the idempotency
/// window): a rotate's binding answers from its job's sealed password, which job retention
/// scrubs after that window.
pub const PLATFORM_KEY_TAKEN: &str = "platform_idempotency_pkey";

impl<'a> Actor<'a> {
    /// Writes `action` on `account` (and what `fill` adds) as one entry, on `c`.
    pub(crate) async fn record<'b>(
        self,
        c: &mut AsyncPgConnection,
        action: &'b str,
        account: &'b str,
        fill: impl FnOnce(AuditEntry<'b>) -> AuditEntry<'b>,
    ) -> diesel::QueryResult<()>
    where
        'a: 'b,
    {
        let entry = fill(AuditEntry {
            actor: self.name,
            action,
            account,
            address: self.address,
            ..AuditEntry::default()
        });
        if let Some(b) = self.idempotency {
            let resource = entry.key.or(entry.database).unwrap_or(entry.account);
            b.bind(c, resource).await?;
        }
        write(c, &[entry]).await
    }
}

/// Inserts entries in one statement.
async fn write(c: &mut AsyncPgConnection, entries: &[AuditEntry<'_>]) -> diesel::QueryResult<()> {
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                audit_log::actor.eq(e.actor),
                audit_log::action.eq(e.action),
                audit_log::account_id.eq(e.account),
                audit_log::database_id.eq(e.database),
                audit_log::key_id.eq(e.key),
                audit_log::address.eq(e.address),
                audit_log::detail.eq(e.detail),
            )
        })
        .collect();
    diesel::insert_into(audit_log::table)
        .values(rows)
        .execute(c)
        .await?;
    Ok(())
}

/// One thing to record. `actor` is `key:<id>` for API calls, `operator:<user>` for
/// hepdb-admin, `platform:<token name>` for the platform API.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub account: &'a str,
    pub database: Option<&'a str>,
    pub key: Option<&'a str>,
    pub address: Option<&'a str>,
    pub detail: Option<&'a str>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub account_id: String,
    pub database_id: Option<String>,
    pub key_id: Option<String>,
    pub address: Option<String>,
    pub detail: Option<String>,
}

impl AuditRow {
    /// The actor as (type, name): `key:<id>`, `platform:<token name>` and `operator:<user>`
    /// are stored as one text; a name may itself hold a colon.
    pub fn actor_parts(&self) -> (&str, &str) {
        self.actor.split_once(':').unwrap_or(("", &self.actor))
    }
}

impl Store {
    pub async fn audit(&self, e: AuditEntry<'_>) -> Result<()> {
        self.audit_many(&[e]).await
    }

    /// Several entries in one statement (the gateway commits concurrent requests' entries
    /// together).
    #[tracing::instrument(name = "metadata.audit", skip_all, fields(entries = entries.len()))]
    pub async fn audit_many(&self, entries: &[AuditEntry<'_>]) -> Result<()> {
        let mut conn = self.conn().await?;
        write(&mut conn, entries).await?;
        Ok(())
    }

    /// One page of the account's entries, newest first: at most `limit`, older than the
    /// entry `before` (the cursor: the last id of the previous page), only `action` if given.
    pub async fn audit_page(
        &self,
        account: AccountId,
        limit: i64,
        before: Option<i64>,
        action: Option<&str>,
    ) -> Result<Vec<AuditRow>> {
        let mut conn = self.conn().await?;
        let mut query = audit_log::table
            .filter(audit_log::account_id.eq(account.to_text()))
            .order(audit_log::id.desc())
            .limit(limit)
            .select(AuditRow::as_select())
            .into_boxed();
        if let Some(before) = before {
            query = query.filter(audit_log::id.lt(before));
        }
        if let Some(action) = action {
            query = query.filter(audit_log::action.eq(action));
        }
        Ok(query.load(&mut conn).await?)
    }

    /// What an earlier platform request with this token's key was, within the last 24 hours:
    /// its fingerprint and the resource it bound.
    pub async fn platform_prior(
        &self,
        token: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>> {
        use diesel::OptionalExtension;
        let mut conn = self.conn().await?;
        Ok(platform_idempotency::table
            .find((token, key))
            .filter(platform_idempotency::created_at.ge(crate::idempotency::window_start()))
            .select((
                platform_idempotency::fingerprint,
                platform_idempotency::resource,
            ))
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Drops platform keys past their 24 hours; returns how many.
    pub async fn purge_platform_keys(&self) -> Result<usize> {
        let mut conn = self.conn().await?;
        Ok(diesel::delete(
            platform_idempotency::table
                .filter(platform_idempotency::created_at.lt(crate::idempotency::window_start())),
        )
        .execute(&mut conn)
        .await?)
    }

    /// The account's entries, oldest first.
    pub async fn audit_log(&self, account: AccountId) -> Result<Vec<AuditRow>> {
        let mut conn = self.conn().await?;
        Ok(audit_log::table
            .filter(audit_log::account_id.eq(account.to_text()))
            .order(audit_log::id)
            .select(AuditRow::as_select())
            .load(&mut conn)
            .await?)
    }
}

/// Whether a change failed because a concurrent request bound the same Idempotency-Key first.
pub fn key_taken(error: &StoreError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(error, StoreError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
        if info.constraint_name() == Some(PLATFORM_KEY_TAKEN))
}
