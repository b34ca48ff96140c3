//! Retention: what metadata stops keeping. A finished job's sealed password is needed only to
//! answer an idempotent replay, so it is scrubbed once the idempotency window has passed; the
//! job itself (its outcome, for `hepdb-admin` and the reconciler's failed-create sweep) is
//! deleted after `worker.job_retention_days`. Both go in batches of short transactions that
//! skip rows another transaction holds, so a pass never holds many locks or stalls a job.

use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::RunQueryDsl;
use hepdb_core::idempotency::RETENTION_HOURS;

use crate::{Result, Store};

/// Rows per statement.
const BATCH: i64 = 1000;

/// What one retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JobRetention {
    /// Finished jobs whose sealed password was scrubbed.
    pub scrubbed: usize,
    /// Finished jobs deleted.
    pub deleted: usize,
}

impl Store {
    /// Scrubs the sealed passwords of jobs finished before the idempotency window, and deletes
    /// jobs finished more than `keep_days` ago (0: keeps them). Deleting a job also deletes
    /// the idempotency key bound to it, long expired by then.
    pub async fn apply_job_retention(&self, keep_days: u32) -> Result<JobRetention> {
        let now = chrono::Utc::now();
        let scrub_before = now - chrono::Duration::hours(RETENTION_HOURS);
        let scrubbed = self
            .in_batches(
                "UPDATE jobs SET password_sealed = NULL WHERE id IN ( \
                   SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') \
                   AND updated_at < $1 AND password_sealed IS NOT NULL \
                   LIMIT $2 FOR UPDATE SKIP LOCKED)",
                scrub_before,
            )
            .await?;
        let deleted = if keep_days == 0 {
            0
        } else {
            let delete_before = now - chrono::Duration::days(i64::from(keep_days));
            self.in_batches(
                "DELETE FROM jobs WHERE id IN ( \
                   SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') \
                   AND updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                delete_before,
            )
            .await?
        };
        Ok(JobRetention { scrubbed, deleted })
    }

    /// Runs `sql` (bound to a cutoff and [`BATCH`]) until a batch changes fewer rows.
    async fn in_batches(
        &self,
        sql: &'static str,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize> {
        let mut conn = self.conn().await?;
        let mut total = 0;
        loop {
            let n = diesel::sql_query(sql)
                .bind::<Timestamptz, _>(cutoff)
                .bind::<BigInt, _>(BATCH)
                .execute(&mut conn)
                .await?;
            total += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
                return Ok(total);
            }
        }
    }
}
