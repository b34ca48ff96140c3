//! Idempotency keys: bound to a job in the same transaction as the job's intent, so a retry
//! finds either nothing (and runs) or the job it must answer from.

use diesel::{OptionalExtension, prelude::*};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{AccountId, JobId, JobState, idempotency::RETENTION_HOURS};

use crate::{
    Result, Store,
    models::Job,
    schema::{idempotency_keys, jobs},
};

/// A key and the fingerprint of the request that came with it.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRequest<'a> {
    pub key: &'a str,
    pub fingerprint: [u8; 32],
}

/// What an earlier use of a key means for this request.
#[derive(Debug)]
pub enum Prior {
    /// Unused (or expired, or its job changed nothing): run the request.
    Fresh,
    /// The same request ran before: answer from this job.
    Replay(Job),
    /// The key was used for a different request.
    Mismatch,
}

/// The unique-violation constraint name that means "bound concurrently by the same key".
pub const KEY_TAKEN: &str = "idempotency_keys_pkey";

impl Store {
    /// Looks a key up for `account`. A binding older than the retention, or to a job that ended
    /// `failed` or `cancelled` (nothing changed, so a retry may run again), is released.
    #[tracing::instrument(name = "metadata.idempotency_prior", skip_all)]
    pub async fn idempotency_prior(
        &self,
        account: AccountId,
        req: KeyedRequest<'_>,
    ) -> Result<Prior> {
        let mut conn = self.conn().await?;
        let account = account.to_text();
        conn.transaction(async |c| {
            let found: Option<(Vec<u8>, chrono::DateTime<chrono::Utc>, Job)> =
                idempotency_keys::table
                    .inner_join(jobs::table)
                    .filter(idempotency_keys::account_id.eq(&account))
                    .filter(idempotency_keys::key.eq(req.key))
                    .for_update()
                    .select((
                        idempotency_keys::fingerprint,
                        idempotency_keys::created_at,
                        Job::as_select(),
                    ))
                    .first(c)
                    .await
                    .optional()?;
            let Some((fingerprint, created_at, job)) = found else {
                return Ok(Prior::Fresh);
            };
            let expired = created_at < window_start();
            let changed_nothing = matches!(job.state(), JobState::Failed | JobState::Cancelled);
            if expired || changed_nothing {
                diesel::delete(
                    idempotency_keys::table
                        .filter(idempotency_keys::account_id.eq(&account))
                        .filter(idempotency_keys::key.eq(req.key)),
                )
                .execute(c)
                .await?;
                return Ok(Prior::Fresh);
            }
            if fingerprint != req.fingerprint {
                return Ok(Prior::Mismatch);
            }
            Ok(Prior::Replay(job))
        })
        .await
    }

    /// Drops keys past their retention; returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<usize> {
        let mut conn = self.conn().await?;
        let cutoff = window_start();
        Ok(
            diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(cutoff)))
                .execute(&mut conn)
                .await?,
        )
    }
}

/// The start of the idempotency window ([`RETENTION_HOURS`] ago): keys older than this are
/// expired, on both APIs, and so is any job's need for its sealed password.
pub(crate) fn window_start() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::hours(RETENTION_HOURS)
}

/// Binds `req`'s key to `job`, inside the caller's intent transaction. A concurrent request
/// with the same key makes this fail with a unique violation on [`KEY_TAKEN`].
pub(crate) async fn bind(
    c: &mut diesel_async::AsyncPgConnection,
    account: &str,
    req: Option<KeyedRequest<'_>>,
    job: JobId,
) -> diesel::QueryResult<()> {
    let Some(req) = req else { return Ok(()) };
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::account_id.eq(account),
            idempotency_keys::key.eq(req.key),
            idempotency_keys::fingerprint.eq(req.fingerprint.as_slice()),
            idempotency_keys::job_id.eq(job.to_text()),
        ))
        .execute(c)
        .await
        .map(drop)
}
