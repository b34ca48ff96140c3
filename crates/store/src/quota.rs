//! Storage quotas and engine access: measured sizes, the active <-> over_quota transitions,
//! access jobs that carry state changes to the engines, and the once-per-interval claim that
//! lets several workers share one watcher schedule.

use diesel::{
    OptionalExtension,
    prelude::*,
    sql_types::{Array, BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hepdb_core::{Access, AccountId, DatabaseId, DatabaseState, JobId, JobState, state::JobKind};

use crate::{
    Result, Store,
    schema::{accounts, databases, jobs, periodic_runs},
};

/// Bytes in the megabyte of `accounts.storage_mb`.
pub const MB: i64 = 1024 * 1024;

/// A database whose state the watcher changed, and the access job that carries it to the
/// engine.
#[derive(Debug, Clone)]
pub struct Transition {
    pub database: DatabaseId,
    pub account: String,
    /// Its engine host: the pass skips the rows of a host it found down.
    pub host: String,
    pub from: DatabaseState,
    pub to: DatabaseState,
    pub job: JobId,
}

/// A database whose engine access differs from what metadata wants.
#[derive(Debug, Clone)]
pub struct Drifted {
    pub id: String,
    /// Its engine host: a pass skips the rows of a host it found down.
    pub host: String,
}

/// What one host's measurement changed in metadata.
#[derive(Debug, Clone)]
pub struct SizeRecord {
    /// Databases whose size was stored.
    pub measured: usize,
    /// Visible databases of the host that it did not measure, with the passes in a row they
    /// have gone without a size: the longest-unmeasured, up to [`UNMEASURED_SAMPLE`].
    pub unmeasured: Vec<Unmeasured>,
    /// How many it did not measure in all.
    pub unmeasured_total: usize,
}

/// Unmeasured databases named per host and pass (the rest are counted): a host that lost
/// all of its databases must not fill the worker's memory or a log line with their names.
pub const UNMEASURED_SAMPLE: i64 = 100;

#[derive(QueryableByName)]
struct UnmeasuredRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    db_name: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    unmeasured_passes: i32,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Unmeasured {
    pub database: String,
    pub db_name: String,
    pub passes: i32,
}

/// Inserts one pending access job per database, inside the caller's transaction: one
/// statement per few thousand rows, not one per database (a suspension, a quota pass or a
/// host back from an outage can bring many). Answers each database's job in `ids`' order.
pub(crate) async fn insert_access_jobs(
    c: &mut AsyncPgConnection,
    ids: &[String],
) -> diesel::QueryResult<Vec<(JobId, DatabaseId)>> {
    // Four binds a row, well under PostgreSQL's 65,535 per statement.
    const ROWS_PER_INSERT: usize = 5_000;
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        let mut rows = Vec::with_capacity(chunk.len());
        for id in chunk {
            let database: DatabaseId = id.parse().map_err(|_| {
                diesel::result::Error::DeserializationError(
                    format!("malformed database id {id:?}").into(),
                )
            })?;
            let job = JobId::new();
            rows.push((
                jobs::id.eq(job.to_text()),
                jobs::database_id.eq(Some(id.as_str())),
                jobs::kind.eq(JobKind::Access.as_str()),
                jobs::state.eq(JobState::Pending.as_str()),
            ));
            out.push((job, database));
        }
        diesel::insert_into(jobs::table)
            .values(&rows)
            .execute(c)
            .await?;
    }
    Ok(out)
}

impl Store {
    /// Stores one host's measured sizes (`db_name`, bytes) and counts a pass without a size
    /// for every visible database of the host that the host did not report (it keeps its
    /// last size), in one transaction.
    pub async fn record_sizes(&self, host: &str, sizes: &[(String, i64)]) -> Result<SizeRecord> {
        let mut conn = self.conn().await?;
        let (names, bytes): (Vec<&str>, Vec<i64>) =
            sizes.iter().map(|(n, b)| (n.as_str(), *b)).unzip();
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        Ok(conn
            .transaction(async |c| {
                let measured = diesel::sql_query(
                    "UPDATE databases d SET size_bytes = m.bytes, size_refreshed_at = now(), \
                     unmeasured_passes = 0 \
                     FROM unnest($1::text[], $2::bigint[]) AS m(name, bytes) \
                     WHERE d.host = $3 AND d.db_name = m.name",
                )
                .bind::<Array<Text>, _>(&names)
                .bind::<Array<BigInt>, _>(&bytes)
                .bind::<Text, _>(host)
                .execute(c)
                .await?;
                // An anti-join against the measured names (hashed), not `<> ALL` (which
                // compares every row with every name). Every unmeasured row is counted; the
                // longest-unmeasured are returned, up to a sample.
                let unmeasured: Vec<UnmeasuredRow> = diesel::sql_query(
                    "WITH u AS ( \
                       UPDATE databases d SET unmeasured_passes = d.unmeasured_passes + 1 \
                       WHERE d.host = $1 AND d.state = ANY($2) \
                         AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS m(name) \
                                         WHERE m.name = d.db_name) \
                       RETURNING d.id, d.db_name, d.unmeasured_passes) \
                     SELECT id, db_name, unmeasured_passes, count(*) OVER () AS total FROM u \
                     ORDER BY unmeasured_passes DESC, db_name LIMIT $4",
                )
                .bind::<Text, _>(host)
                .bind::<Array<Text>, _>(DatabaseState::texts(DatabaseState::is_visible))
                .bind::<Array<Text>, _>(&names)
                .bind::<BigInt, _>(UNMEASURED_SAMPLE)
                .get_results(c)
                .await?;
                let unmeasured_total =
                    <[UnmeasuredRow]>::first(&unmeasured).map_or(0, |u| u.total as usize);
                let unmeasured = unmeasured
                    .into_iter()
                    .map(|u| Unmeasured {
                        database: u.id,
                        db_name: u.db_name,
                        passes: u.unmeasured_passes,
                    })
                    .collect();
                Ok::<_, diesel::result::Error>(SizeRecord {
                    measured,
                    unmeasured,
                    unmeasured_total,
                })
            })
            .await?)
    }

    /// Moves databases between `active` and `over_quota` by their account's measured total
    /// (all of `account`'s, or every account's), and records an access job for each change, in
    /// one transaction. Suspended accounts are left alone. An account with a database that has
    /// gone `max_unmeasured` passes without a size counts as over its quota.
    pub async fn quota_transitions(
        &self,
        account: Option<AccountId>,
        max_unmeasured: u32,
    ) -> Result<Vec<Transition>> {
        let max_unmeasured = i32::try_from(max_unmeasured).unwrap_or(i32::MAX);
        let mut conn = self.conn().await?;
        let only = account.map(|a| a.to_text());
        let visible = DatabaseState::texts(DatabaseState::is_visible);
        conn.transaction(async |c| {
            // Totals per account and the moves they call for, in the server: the worker never
            // holds more than the databases that change, however many metadata has. Sums
            // saturate at i64::MAX as the quota does; a size unread for too long counts as
            // that much (it cannot be used to hide one).
            let moved: Vec<Moved> = diesel::sql_query(
                "WITH totals AS ( \
                   SELECT d.account_id, \
                     least(sum(CASE WHEN d.unmeasured_passes >= $1 \
                                    THEN 9223372036854775807::numeric \
                                    ELSE d.size_bytes::numeric END), \
                           9223372036854775807::numeric) AS used, \
                     least(max(a.storage_mb)::numeric * 1048576, \
                           9223372036854775807::numeric) AS quota \
                   FROM databases d JOIN accounts a ON a.id = d.account_id \
                   WHERE NOT a.suspended AND d.state = ANY($2) \
                     AND ($3::text IS NULL OR d.account_id = $3) \
                   GROUP BY d.account_id) \
                 UPDATE databases d \
                 SET state = CASE WHEN t.used > t.quota THEN 'over_quota' ELSE 'active' END \
                 FROM totals t \
                 WHERE d.account_id = t.account_id \
                   AND d.state IN ('active', 'over_quota') \
                   AND d.state <> CASE WHEN t.used > t.quota THEN 'over_quota' ELSE 'active' END \
                 RETURNING d.id, d.account_id, d.state, d.host",
            )
            .bind::<diesel::sql_types::Integer, _>(max_unmeasured)
            .bind::<Array<Text>, _>(&visible)
            .bind::<diesel::sql_types::Nullable<Text>, _>(only.as_deref())
            .get_results(c)
            .await?;
            let ids: Vec<String> = moved.iter().map(|m| m.id.clone()).collect();
            let jobs = insert_access_jobs(c, &ids).await?;
            let mut out = Vec::with_capacity(moved.len());
            for (m, (job, database)) in moved.into_iter().zip(jobs) {
                let to: DatabaseState = m
                    .state
                    .parse()
                    .map_err(|_| diesel::result::Error::DeserializationError("bad state".into()))?;
                // Only two states move, so the one it left is the other.
                let from = if to == DatabaseState::OverQuota {
                    DatabaseState::Active
                } else {
                    DatabaseState::OverQuota
                };
                out.push(Transition {
                    database,
                    account: m.account_id,
                    host: m.host,
                    from,
                    to,
                    job,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Databases whose engine access differs from what metadata wants and that no access job
    /// is already working on.
    pub async fn access_drift(&self) -> Result<Vec<Drifted>> {
        let mut conn = self.conn().await?;
        let open: Vec<Option<String>> = jobs::table
            .filter(jobs::kind.eq(JobKind::Access.as_str()))
            .filter(jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]))
            .select(jobs::database_id)
            .load(&mut conn)
            .await?;
        let open: std::collections::HashSet<String> = open.into_iter().flatten().collect();
        // Pages by primary key, only the columns the comparison needs: memory stays that of one
        // page however many databases metadata holds.
        const PAGE: i64 = 2_000;
        let mut drifted = Vec::new();
        let mut after = String::new();
        loop {
            let page: Vec<(String, String, String, String, bool)> = databases::table
                .inner_join(accounts::table)
                .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::is_visible)))
                .filter(databases::id.gt(&after))
                .order(databases::id)
                .limit(PAGE)
                .select((
                    databases::id,
                    databases::host,
                    databases::state,
                    databases::engine_access,
                    accounts::suspended,
                ))
                .load(&mut conn)
                .await?;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) == PAGE;
            for (id, host, state, access, suspended) in page {
                let state: DatabaseState = state
                    .parse()
                    .expect("metadata holds valid states (CHECK constraint)");
                let access: Access = access
                    .parse()
                    .expect("metadata holds valid access levels (CHECK constraint)");
                if Access::wanted(suspended, state) != access && !open.contains(&id) {
                    drifted.push(Drifted {
                        id: id.clone(),
                        host,
                    });
                }
                after = id;
            }
            if !full {
                return Ok(drifted);
            }
        }
    }

    /// Records a pending access job for each database.
    pub async fn enqueue_access_jobs(&self, ids: &[String]) -> Result<Vec<(JobId, DatabaseId)>> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| insert_access_jobs(c, ids).await)
            .await?)
    }

    /// Claims the periodic task `name` if its last run is at least `interval_secs` old; only
    /// one claimer per interval succeeds, however many processes try.
    pub async fn claim_periodic(&self, name: &str, interval_secs: u64) -> Result<bool> {
        let mut conn = self.conn().await?;
        let claimed: Option<String> = diesel::sql_query(
            "INSERT INTO periodic_runs (name, last_run_at) VALUES ($1, now()) \
             ON CONFLICT (name) DO UPDATE SET last_run_at = now() \
             WHERE periodic_runs.last_run_at <= now() - make_interval(secs => $2) \
             RETURNING name",
        )
        .bind::<Text, _>(name)
        .bind::<diesel::sql_types::Double, _>(interval_secs as f64)
        .get_result::<Claimed>(&mut conn)
        .await
        .optional()?
        .map(|c| c.name);
        Ok(claimed.is_some())
    }

    /// Forgets when `name` last ran (so the next claim succeeds): for on-demand passes.
    pub async fn reset_periodic(&self, name: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        diesel::delete(periodic_runs::table.find(name))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Bytes the account's databases use, by the last measurement.
    pub async fn used_bytes(&self, account: AccountId) -> Result<i64> {
        let conn = self.conn().await?;
        Ok(used_bytes(&conn, &account.to_text()).await?)
    }
}

/// A database the quota watcher moved, with the state it moved to.
#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    account_id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    host: String,
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Bytes the account's slot-holding databases use, by the last measurement.
pub(crate) async fn used_bytes(c: &AsyncPgConnection, account: &str) -> diesel::QueryResult<i64> {
    let total = diesel::dsl::sql::<BigInt>("CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT)");
    databases::table
        .filter(databases::account_id.eq(account))
        .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::holds_slot)))
        .select(total)
        .first(&mut &*c)
        .await
}
