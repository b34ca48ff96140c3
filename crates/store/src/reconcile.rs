//! What the reconciler reads and changes: a lease so that one pass runs at a time across
//! worker replicas, jobs nobody is moving, and database rows stuck between states.

use std::collections::HashSet;

use diesel::{
    prelude::*,
    sql_types::{BigInt, Bool},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl, pooled_connection::deadpool::Object};
use hepdb_core::{DatabaseId, DatabaseState, JobId, JobState, state::JobKind};

use crate::{
    Result, Store, exactly_one,
    models::{Database, Job},
    schema::{databases, jobs},
};

/// A session-level advisory lock, held on one pooled connection. Released explicitly; if it is
/// dropped instead, the connection is closed (never returned to the pool still holding it).
pub struct Lease {
    conn: Option<Object<AsyncPgConnection>>,
    key: i64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).finish()
    }
}

impl Lease {
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = diesel::select(
                diesel::dsl::sql::<Bool>("pg_advisory_unlock(")
                    .bind::<BigInt, _>(self.key)
                    .sql(")"),
            )
            .get_result::<bool>(&mut conn)
            .await;
            if unlocked.is_err() {
                drop(Object::take(conn));
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

impl Store {
    /// Takes the lease `key` if nobody holds it.
    pub async fn try_lease(&self, key: i64) -> Result<Option<Lease>> {
        let mut conn = self.conn().await?;
        let got: bool = diesel::select(
            diesel::dsl::sql::<Bool>("pg_try_advisory_lock(")
                .bind::<BigInt, _>(key)
                .sql(")"),
        )
        .get_result(&mut conn)
        .await?;
        Ok(got.then_some(Lease {
            conn: Some(conn),
            key,
        }))
    }

    /// Pending or running jobs untouched for `older_than_secs`: their message was never
    /// published (the gateway died after its commit) or is gone.
    pub async fn stale_jobs(&self, older_than_secs: u64) -> Result<Vec<Job>> {
        let mut conn = self.conn().await?;
        let cutoff = chrono::Utc::now()
            - chrono::Duration::seconds(i64::try_from(older_than_secs).unwrap_or(i64::MAX / 2));
        Ok(jobs::table
            .filter(jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]))
            .filter(jobs::updated_at.lt(cutoff))
            .order(jobs::created_at)
            .select(Job::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Records that a stale job was sent again, so the next pass does not resend it at once.
    pub async fn touch_job(&self, id: JobId) -> Result<()> {
        let mut conn = self.conn().await?;
        let n =
            diesel::update(jobs::table.find(id.to_text()).filter(
                jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]),
            ))
            .set(jobs::updated_at.eq(diesel::dsl::now))
            .execute(&mut conn)
            .await?;
        exactly_one(n, "touch stale job")
    }

    /// Databases in one state (the reconciler looks at `deleting` and `failed`).
    pub async fn databases_in_state(&self, state: DatabaseState) -> Result<Vec<Database>> {
        let mut conn = self.conn().await?;
        Ok(databases::table
            .filter(databases::state.eq(state.as_str()))
            .order(databases::created_at)
            .select(Database::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Rows left `deleting` with no delete job working on them: an operator's deletion that
    /// was interrupted, or a delete job that failed. (A live delete job finishes its own.)
    pub async fn deletions_to_finish(&self) -> Result<Vec<Database>> {
        let mut conn = self.conn().await?;
        let open = jobs::table
            .filter(jobs::kind.eq(JobKind::Delete.as_str()))
            .filter(jobs::state.eq_any([JobState::Pending.as_str(), JobState::Running.as_str()]))
            .select(jobs::database_id.assume_not_null());
        Ok(databases::table
            .filter(databases::state.eq(DatabaseState::Deleting.as_str()))
            .filter(databases::id.ne_all(open))
            .order(databases::created_at)
            .select(Database::as_select())
            .load(&mut conn)
            .await?)
    }

    /// Removes a `failed` create's row once nothing of it is left on the engine.
    pub async fn remove_failed(&self, id: DatabaseId) -> Result<()> {
        let mut conn = self.conn().await?;
        let n = diesel::delete(
            databases::table
                .find(id.to_text())
                .filter(databases::state.eq(DatabaseState::Failed.as_str())),
        )
        .execute(&mut conn)
        .await?;
        exactly_one(n, "remove failed create")
    }

    /// Of `ids` (databases without a row), those whose create job failed or was cancelled:
    /// hepdb made them, and nobody will ever want what is left of them.
    pub async fn failed_create_ids(&self, ids: &[String]) -> Result<HashSet<String>> {
        let mut conn = self.conn().await?;
        let found: Vec<Option<String>> = jobs::table
            .filter(jobs::kind.eq(hepdb_core::state::JobKind::Create.as_str()))
            .filter(jobs::state.eq_any([JobState::Failed.as_str(), JobState::Cancelled.as_str()]))
            .filter(jobs::database_id.eq_any(ids))
            .select(jobs::database_id)
            .load(&mut conn)
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Which of `ids` have a database row on `host`, whatever its state: looked up by primary
    /// key, so the reconciler's orphan scan never holds every id of a host in memory.
    pub async fn database_ids_on_host(
        &self,
        host: &str,
        ids: &[String],
    ) -> Result<HashSet<String>> {
        let mut conn = self.conn().await?;
        let found: Vec<String> = databases::table
            .filter(databases::id.eq_any(ids))
            .filter(databases::host.eq(host))
            .select(databases::id)
            .load(&mut conn)
            .await?;
        Ok(found.into_iter().collect())
    }
}
