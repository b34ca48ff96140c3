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
    pub from: DatabaseState,
    pub to: DatabaseState,
    pub job: JobId,
}

/// What one host's measurement changed in metadata.
#[derive(Debug, Clone)]
pub struct SizeRecord {
    /// Databases whose size was stored.
    pub measured: usize,
    /// Quota-managed databases of the host that it did not measure, with the passes in a row
    /// they have gone without a size.
    pub unmeasured: Vec<Unmeasured>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Unmeasured {
    pub database: String,
    pub db_name: String,
    pub passes: i32,
}

/// Inserts one pending access job per database, inside the caller's transaction.
pub(crate) async fn insert_access_jobs(
    c: &mut AsyncPgConnection,
    ids: &[String],
) -> diesel::QueryResult<Vec<(JobId, DatabaseId)>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let job = JobId::new();
        diesel::insert_into(jobs::table)
            .values((
                jobs::id.eq(job.to_text()),
                jobs::database_id.eq(Some(id)),
                jobs::kind.eq(JobKind::Access.as_str()),
                jobs::state.eq(JobState::Pending.as_str()),
            ))
            .execute(c)
            .await?;
        if let Ok(db) = id.parse() {
            out.push((job, db));
        }
    }
    Ok(out)
}

impl Store {
    /// Stores one host's measured sizes (`db_name`, bytes) and counts a pass without a size
    /// for every quota-managed database of the host that the host did not report (it keeps its
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
                let unmeasured: Vec<Unmeasured> = diesel::update(
                    databases::table
                        .filter(databases::host.eq(host))
                        .filter(
                            databases::state
                                .eq_any(DatabaseState::texts(DatabaseState::is_visible)),
                        )
                        .filter(databases::db_name.ne_all(&names)),
                )
                .set(databases::unmeasured_passes.eq(databases::unmeasured_passes + 1))
                .returning((
                    databases::id,
                    databases::db_name,
                    databases::unmeasured_passes,
                ))
                .get_results::<(String, String, i32)>(c)
                .await?
                .into_iter()
                .map(|(id, db_name, passes)| Unmeasured {
                    database: id,
                    db_name,
                    passes,
                })
                .collect();
                Ok::<_, diesel::result::Error>(SizeRecord {
                    measured,
                    unmeasured,
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
        conn.transaction(async |c| {
            let mut q = databases::table
                .inner_join(accounts::table)
                .filter(accounts::suspended.eq(false))
                .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::is_visible)))
                .select((
                    databases::id,
                    databases::account_id,
                    databases::state,
                    databases::size_bytes,
                    accounts::storage_mb,
                    databases::unmeasured_passes,
                ))
                .into_boxed();
            if let Some(a) = &only {
                q = q.filter(databases::account_id.eq(a));
            }
            let rows: Vec<(String, String, String, i64, i64, i32)> = q.load(c).await?;
            let mut totals = std::collections::HashMap::<&str, (i64, i64)>::new();
            for (_, account, _, size, quota_mb, unmeasured) in &rows {
                let t = totals
                    .entry(account)
                    .or_insert((0, quota_mb.saturating_mul(MB)));
                // A size that cannot be read for too long cannot be used to hide one.
                let size = if *unmeasured >= max_unmeasured {
                    i64::MAX
                } else {
                    *size
                };
                t.0 = t.0.saturating_add(size);
            }
            let mut changes = Vec::new();
            for (id, account, state, ..) in &rows {
                let (used, quota) = totals[account.as_str()];
                let to = if used > quota {
                    DatabaseState::OverQuota
                } else {
                    DatabaseState::Active
                };
                let from: DatabaseState = state
                    .parse()
                    .map_err(|_| diesel::result::Error::DeserializationError("bad state".into()))?;
                if from.is_quota_managed() && from != to {
                    let n = diesel::update(
                        databases::table.find(id).filter(databases::state.eq(state)),
                    )
                    .set(databases::state.eq(to.as_str()))
                    .execute(c)
                    .await?;
                    if n == 1 {
                        changes.push((id.clone(), account.clone(), from, to));
                    }
                }
            }
            let ids: Vec<String> = changes.iter().map(|c| c.0.clone()).collect();
            let jobs = insert_access_jobs(c, &ids).await?;
            Ok(changes
                .into_iter()
                .zip(jobs)
                .map(|((_, account, from, to), (job, database))| Transition {
                    database,
                    account,
                    from,
                    to,
                    job,
                })
                .collect())
        })
        .await
    }

    /// Databases whose engine access differs from what metadata wants and that no access job
    /// is already working on.
    pub async fn access_drift(&self) -> Result<Vec<String>> {
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
        const PAGE: i64 = 10_000;
        let mut drifted = Vec::new();
        let mut after = String::new();
        loop {
            let page: Vec<(String, String, String, bool)> = databases::table
                .inner_join(accounts::table)
                .filter(databases::state.eq_any(DatabaseState::texts(DatabaseState::is_visible)))
                .filter(databases::id.gt(&after))
                .order(databases::id)
                .limit(PAGE)
                .select((
                    databases::id,
                    databases::state,
                    databases::engine_access,
                    accounts::suspended,
                ))
                .load(&mut conn)
                .await?;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) == PAGE;
            for (id, state, access, suspended) in page {
                let state: DatabaseState = state
                    .parse()
                    .expect("metadata holds valid states (CHECK constraint)");
                let access: Access = access
                    .parse()
                    .expect("metadata holds valid access levels (CHECK constraint)");
                if Access::wanted(suspended, state) != access && !open.contains(&id) {
                    drifted.push(id.clone());
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
