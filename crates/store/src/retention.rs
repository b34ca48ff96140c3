//! Retention: what metadata stops keeping. A finished job's sealed password is needed only to
//! answer an idempotent replay, so it is scrubbed once the idempotency window has passed; the
//! job itself (its outcome, for `hepdb-admin` and the reconciler's failed-create sweep) is
//! deleted after `worker.job_retention_days`. Both go in batches of short transactions that
//! skip rows another transaction holds, so a pass never holds many locks or stalls a job. The
//! audit log is partitioned by month and loses whole partitions after
//! `worker.audit_retention_days`: no row-by-row delete, so no bloat.

use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::RunQueryDsl;

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
        let scrub_before = crate::idempotency::window_start();
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

/// What one audit-log maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRetention {
    /// Monthly partitions dropped whole (their names, `audit_log_YYYYMM`).
    pub dropped: Vec<String>,
}

/// Months of audit partitions kept ready ahead of now. An entry whose month has no partition
/// cannot be written, so the reconciler makes them long before they are needed.
const MONTHS_AHEAD: i32 = 3;

#[derive(diesel::QueryableByName)]
struct Partition {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    attached: bool,
}

impl Store {
    /// Keeps the audit log's monthly partitions: makes the next [`MONTHS_AHEAD`], and drops
    /// each whose month ended more than `keep_days` ago (0: keeps every one). A partition is
    /// detached `CONCURRENTLY` (no lock that stops writers or readers) and then dropped; a
    /// pass interrupted between the two finishes the job the next time.
    pub async fn maintain_audit_log(&self, keep_days: u32) -> Result<AuditRetention> {
        let mut conn = self.conn().await?;
        diesel::sql_query(
            "SELECT hepdb_ensure_audit_partition((m + make_interval(months => g))::date) \
             FROM (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AS m) AS now_month, \
             generate_series(0, $1) AS g",
        )
        .bind::<diesel::sql_types::Integer, _>(MONTHS_AHEAD)
        .execute(&mut conn)
        .await?;
        let mut report = AuditRetention::default();
        if keep_days == 0 {
            return Ok(report);
        }
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(keep_days));
        // Partitions (attached or left detached by an interrupted pass), by the name this
        // schema gives them: never a table of anyone else's.
        let partitions: Vec<Partition> = diesel::sql_query(
            "SELECT c.relname::text AS name, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i \
                            WHERE i.inhrelid = c.oid \
                            AND i.inhparent = 'audit_log'::regclass) AS attached \
             FROM pg_catalog.pg_class c \
             WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace \
             AND c.relname ~ '^audit_log_[0-9]{6}$' ORDER BY 1",
        )
        .load(&mut conn)
        .await?;
        for p in partitions {
            if !month_ended_before(&p.name, cutoff) {
                continue;
            }
            if p.attached {
                let detach = format!(
                    "ALTER TABLE audit_log DETACH PARTITION {} CONCURRENTLY",
                    p.name
                );
                if let Err(e) = diesel::sql_query(&detach).execute(&mut conn).await {
                    // An earlier pass was cut off half-way through its detach.
                    if !e.to_string().contains("pending detach") {
                        return Err(e.into());
                    }
                    let finalize =
                        format!("ALTER TABLE audit_log DETACH PARTITION {} FINALIZE", p.name);
                    diesel::sql_query(&finalize).execute(&mut conn).await?;
                }
            }
            diesel::sql_query(format!("DROP TABLE {}", p.name))
                .execute(&mut conn)
                .await?;
            report.dropped.push(p.name);
        }
        Ok(report)
    }
}

/// Whether the month an `audit_log_YYYYMM` partition holds ended before `cutoff`.
fn month_ended_before(name: &str, cutoff: chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::TimeZone;
    let Some(digits) = name.strip_prefix("audit_log_") else {
        return false;
    };
    let (Some(Ok(year)), Some(Ok(month))) = (
        digits.get(..4).map(str::parse::<i32>),
        digits.get(4..).map(str::parse::<u32>),
    ) else {
        return false;
    };
    if digits.len() != 6 || !(1..=12).contains(&month) {
        return false;
    }
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::Utc
        .with_ymd_and_hms(next_year, next_month, 1, 0, 0, 0)
        .single()
        .is_some_and(|end| end <= cutoff)
}

#[cfg(test)]
mod tests {
    use super::month_ended_before;
    use chrono::TimeZone;

    #[test]
    fn a_month_ends_when_the_next_begins() {
        let at = |y, m, d| chrono::Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap();
        assert!(month_ended_before("audit_log_202512", at(2026, 1, 1)));
        assert!(!month_ended_before("audit_log_202512", at(2025, 12, 31)));
        assert!(month_ended_before("audit_log_202511", at(2025, 12, 2)));
        assert!(!month_ended_before("audit_log_2025xx", at(2030, 1, 1)));
        assert!(!month_ended_before("audit_log_202513", at(2030, 1, 1)));
        assert!(!month_ended_before("other_202501", at(2030, 1, 1)));
    }
}
