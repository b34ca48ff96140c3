//! A master-key rotation's metadata side: stored passwords not sealed under the current key
//! (databases' and rotate jobs'), re-sealed a batch at a time. Each value is replaced only if
//! it is still the one that was read (compare and set), so a password that a concurrent rotate
//! changed meanwhile is never overwritten; every value stays readable throughout (the key ring
//! opens old and new). A pass killed anywhere leaves only values that open, and the next pass
//! goes on from what is left.

use diesel::{PgBinaryExpressionMethods, prelude::*};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{DatabaseId, secret::MasterKey};

use crate::{
    Result, Store, StoreError,
    schema::{databases, jobs},
};

/// Where a pass has got to: the last row of each table a batch read. Batches go on from it
/// by primary key, so a pass reads each row once however many are already current.
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    database: Option<String>,
    job: Option<String>,
}

/// What one batch did.
#[derive(Debug, Default, Clone)]
pub struct Resealed {
    /// Values under another key that the batch read (zero: the pass is over).
    pub seen: usize,
    pub databases: usize,
    pub jobs: usize,
    /// Where the next batch of this pass starts.
    pub next: Cursor,
}

/// What is left under other keys.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Unsealed {
    pub databases: i64,
    pub jobs: i64,
}

/// A `LIKE` pattern for values that start with `prefix` (the current key's version and id):
/// its bytes literal, `%`, `_` and `\` escaped.
fn starts_with(prefix: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(prefix.len() * 2 + 1);
    for &b in prefix {
        if matches!(b, b'%' | b'_' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
    pattern.push(b'%');
    pattern
}

impl Store {
    /// How many stored passwords are sealed under another key than `key`'s current one.
    pub async fn unsealed(&self, key: &MasterKey) -> Result<Unsealed> {
        let current = starts_with(&key.sealed_prefix());
        let mut conn = self.conn().await?;
        let databases = databases::table
            .filter(databases::password_sealed.not_like(current.clone()))
            .count()
            .get_result(&mut conn)
            .await?;
        let jobs = jobs::table
            .filter(jobs::password_sealed.is_not_null())
            .filter(jobs::password_sealed.not_like(current.clone()))
            .count()
            .get_result(&mut conn)
            .await?;
        Ok(Unsealed { databases, jobs })
    }

    /// Re-seals up to `limit` stored passwords under the current key, from `after` on,
    /// databases first, in one transaction. `seen` zero: the pass is over (a value changed
    /// meanwhile, left behind by its compare-and-set, is for the next pass). A value that no
    /// key opens stops the pass with an error naming its row (a key is missing from the ring).
    pub async fn reseal_batch(
        &self,
        key: &MasterKey,
        limit: i64,
        after: &Cursor,
    ) -> Result<Resealed> {
        let current = starts_with(&key.sealed_prefix());
        let mut conn = self.conn().await?;
        let mut query = databases::table
            .filter(databases::password_sealed.not_like(current.clone()))
            .select((databases::id, databases::password_sealed))
            .order(databases::id)
            .limit(limit)
            .into_boxed();
        if let Some(last) = &after.database {
            query = query.filter(databases::id.gt(last.clone()));
        }
        let rows: Vec<(String, Vec<u8>)> = query.load(&mut conn).await?;
        let room = limit - i64::try_from(rows.len()).unwrap_or(limit);
        let job_rows: Vec<(String, Option<String>, Option<Vec<u8>>)> = if room > 0 {
            let mut query = jobs::table
                .filter(jobs::password_sealed.is_not_null())
                .filter(jobs::password_sealed.not_like(current.clone()))
                .select((jobs::id, jobs::database_id, jobs::password_sealed))
                .order(jobs::id)
                .limit(room)
                .into_boxed();
            if let Some(last) = &after.job {
                query = query.filter(jobs::id.gt(last.clone()));
            }
            query.load(&mut conn).await?
        } else {
            Vec::new()
        };
        let next = Cursor {
            database: rows
                .last()
                .map(|(id, _)| id.clone())
                .or(after.database.clone()),
            job: job_rows
                .last()
                .map(|(id, ..)| id.clone())
                .or(after.job.clone()),
        };
        let resealed_db = rows
            .into_iter()
            .map(|(id, old)| Ok((id.clone(), reseal(key, Some(&id), &old, "database")?, old)))
            .collect::<Result<Vec<_>>>()?;
        let resealed_jobs = job_rows
            .into_iter()
            .map(|(id, database, old)| {
                let old = old.unwrap_or_default();
                // A job whose database is gone (deleted before deletions kept job rows' ids)
                // has no use for its password: it is dropped, not re-sealed.
                let new = match database {
                    Some(database) => Some(reseal(key, Some(&database), &old, "job")?),
                    None => None,
                };
                Ok((id, new, old))
            })
            .collect::<Result<Vec<_>>>()?;
        let seen = resealed_db.len() + resealed_jobs.len();
        conn.transaction(async |conn| {
            let mut done = Resealed {
                seen,
                next,
                ..Resealed::default()
            };
            for (id, new, old) in &resealed_db {
                done.databases += diesel::update(
                    databases::table
                        .filter(databases::id.eq(id))
                        .filter(databases::password_sealed.eq(old)),
                )
                .set(databases::password_sealed.eq(new))
                .execute(conn)
                .await?;
            }
            for (id, new, old) in &resealed_jobs {
                done.jobs += diesel::update(
                    jobs::table
                        .filter(jobs::id.eq(id))
                        .filter(jobs::password_sealed.eq(old)),
                )
                .set(jobs::password_sealed.eq(new.as_deref()))
                .execute(conn)
                .await?;
            }
            Ok::<_, diesel::result::Error>(done)
        })
        .await
        .map_err(Into::into)
    }
}

/// The value `old`, sealed for `database`, opened with the ring and sealed again under the
/// current key.
fn reseal(key: &MasterKey, database: Option<&str>, old: &[u8], what: &str) -> Result<Vec<u8>> {
    let database: DatabaseId = database.and_then(|d| d.parse().ok()).ok_or_else(|| {
        StoreError::Unsealable(format!(
            "a {what} row has a sealed password but no database"
        ))
    })?;
    let password = key.open(database, old).map_err(|_| {
        StoreError::Unsealable(format!(
            "{what} {database}'s sealed password does not open with the configured keys: add the \
             key it was sealed with to crypto.previous_master_keys"
        ))
    })?;
    Ok(key.seal(database, &password))
}
