//! Creating the metadata database and applying the embedded migrations.

use diesel::{OptionalExtension, QueryDsl, prelude::*, sql_types::Text};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// The SQL files of `migrations/` at the workspace root, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("metadata URL must name a database: {0}")]
    BadUrl(&'static str),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("{0}")]
    Sql(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Splits `postgres://.../name?opts` into (server URL with database `postgres`, `name`).
fn split_database(url: &str) -> Result<(String, String), MigrateError> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, name) = base
        .rsplit_once('/')
        .filter(|(s, n)| s.contains("://") && !s.ends_with('/') && !n.is_empty())
        .ok_or(MigrateError::BadUrl("expected postgres://host/dbname"))?;
    let mut admin = format!("{server}/postgres");
    if let Some(q) = query {
        admin = format!("{admin}?{q}");
    }
    Ok((admin, name.to_owned()))
}

diesel::define_sql_function!(fn quote_ident(x: Text) -> Text);

/// A connection to `url`, over TLS when the URL asks for it (as the pool's).
async fn connect(url: &str) -> Result<AsyncPgConnection, MigrateError> {
    let target = crate::tls::parse(url).map_err(MigrateError::Connect)?;
    crate::tls::diesel_connection(&target)
        .await
        .map_err(|e| MigrateError::Connect(e.to_string()))
}

/// Creates the database named in `url` if it does not exist. Returns whether it created it.
pub async fn ensure_database(url: &str) -> Result<bool, MigrateError> {
    let (admin_url, name) = split_database(url)?;
    let mut conn = connect(&admin_url).await?;
    diesel::table! { pg_database (datname) { datname -> Text, } }
    let exists = pg_database::table
        .filter(pg_database::datname.eq(&name))
        .select(pg_database::datname)
        .first::<String>(&mut conn)
        .await
        .optional()?
        .is_some();
    if exists {
        return Ok(false);
    }
    let quoted: String = diesel::select(quote_ident(&name))
        .get_result(&mut conn)
        .await?;
    match diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(true),
        // Another process created it between our check and our CREATE: that is success.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) if e.to_string().contains("already exists") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Applies pending migrations; returns the versions applied. Needs a multi-threaded runtime.
pub async fn run_pending(url: &str) -> Result<Vec<String>, MigrateError> {
    let conn = connect(url).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| MigrateError::Migration(e.to_string()))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// `hepdb-admin migrate`: both steps.
pub async fn migrate(url: &str) -> Result<(bool, Vec<String>), MigrateError> {
    let created = ensure_database(url).await?;
    let applied = run_pending(url).await?;
    Ok((created, applied))
}

/// Drops the database named in `url` (tests clean up their private metadata databases).
pub async fn drop_database(url: &str) -> Result<(), MigrateError> {
    let (admin_url, name) = split_database(url)?;
    let mut conn = connect(&admin_url).await?;
    let quoted: String = diesel::select(quote_ident(&name))
        .get_result(&mut conn)
        .await?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_database_from_url() {
        assert_eq!(
            split_database("postgres://u@h:5432/hepdb").unwrap(),
            ("postgres://u@h:5432/postgres".into(), "hepdb".into())
        );
        assert_eq!(
            split_database("postgres://h/db?sslmode=disable").unwrap(),
            ("postgres://h/postgres?sslmode=disable".into(), "db".into())
        );
        assert!(split_database("postgres://h/").is_err());
        assert!(split_database("postgres://h").is_err());
    }
}
