//! A platform's scale, side by side: the scenario runs on the metadata as it is, then the
//! metadata gets `N` more databases over `N / 10` accounts (each with a key), written straight
//! into the schema in one statement each, and the scenario runs again. Also the plans of the
//! hot queries at that scale, run with `EXPLAIN ANALYZE` on a seeded account.

use std::time::{Duration, Instant};

/// Seeded ids: valid ULIDs of digits after a letter that random ULIDs of today never have
/// in second place (`0A…` accounts, `0D…` databases), so they cannot collide with real rows.
const SEED: &str = "
INSERT INTO accounts (id, name, db_tag, slots, storage_mb, next_db_seq)
SELECT '0A' || lpad(a::text, 24, '0'), 'scale-' || a, 'f' || lpad(to_hex(a), 9, '0'), 20, 10240, 11
FROM generate_series(1, $1::bigint) a;
INSERT INTO api_keys (id, account_id, key_hash, enabled)
SELECT '0K' || lpad(a::text, 24, '0'), '0A' || lpad(a::text, 24, '0'),
       sha256(('scale-key-' || a)::bytea), true
FROM generate_series(1, $1::bigint) a;
INSERT INTO databases (id, account_id, name, engine, seq, db_name, db_user, password_sealed,
                       state, host, size_bytes)
SELECT '0D' || lpad((a * 10 + s)::text, 24, '0'), '0A' || lpad(a::text, 24, '0'), 'db-' || s,
       'mariadb', s, 'um_f' || lpad(to_hex(a), 9, '0') || '_' || s,
       'dum_f' || lpad(to_hex(a), 9, '0') || '_' || s, '\\x00'::bytea, 'active', $2,
       1048576
FROM generate_series(1, $1::bigint) a, generate_series(1, 10) s;
";

/// `$1` finished rotate jobs over the seeded databases (`$2` of them), spread over the last 30
/// days, their passwords scrubbed as retention does past the idempotency window; and `$1`
/// audit entries of this month (the partition the gateway writes to), reveals by the seeded
/// accounts.
const HISTORY: &str = "
INSERT INTO jobs (id, database_id, kind, state, attempts, created_at, updated_at)
SELECT '0J' || lpad(i::text, 24, '0'), '0D' || lpad((i % $2::bigint + 11)::text, 24, '0'),
       'rotate', 'done', 1, now() - (i % 2592000) * interval '1 second',
       now() - (i % 2592000) * interval '1 second'
FROM generate_series(1, $1::bigint) i;
INSERT INTO audit_log (at, actor, action, account_id, database_id)
SELECT date_trunc('month', now()) + (now() - date_trunc('month', now())) * (i::float8 / $1::bigint),
       'key', 'reveal', '0A' || lpad((i % ($2::bigint / 10) + 1)::text, 24, '0'),
       '0D' || lpad((i % $2::bigint + 11)::text, 24, '0')
FROM generate_series(1, $1::bigint) i;
";

/// Writes `history` finished jobs and `history` audit entries over the `databases` seeded
/// ones, then analyzes. Answers how long it took.
pub async fn seed_history(
    metadata_url: &str,
    databases: u64,
    history: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (client, conn) = tokio_postgres::connect(metadata_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let (history, databases) = (history as i64, databases.max(10) as i64);
    for sql in HISTORY
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        client.execute(sql, &[&history, &databases]).await?;
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    Ok(started.elapsed())
}

/// Writes `databases` more databases (ten per account) on `host` into the metadata database,
/// then `VACUUM ANALYZE`s it as autovacuum eventually would. Answers how long it took.
pub async fn seed(metadata_url: &str, databases: u64, host: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (client, conn) = tokio_postgres::connect(metadata_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let accounts = (databases / 10).max(1);
    // One statement at a time (parameters cannot be bound in a multi-statement batch).
    for sql in SEED.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        let accounts = accounts as i64;
        if sql.contains("$2") {
            client.execute(sql, &[&accounts, &host]).await?;
        } else {
            client.execute(sql, &[&accounts]).await?;
        }
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    Ok(started.elapsed())
}

/// The hot queries of list, reveal and create, as hepdb's store runs them (`crates/store`:
/// `find_key`, `list_for_key`, `reveal_for_key`, and the reads of `reserve_create`), with a
/// seeded account's values.
const HOT: [(&str, &str); 10] = [
    (
        "key and account (every request)",
        "SELECT k.id, a.id FROM api_keys k JOIN accounts a ON a.id = k.account_id \
         WHERE k.key_hash = sha256('scale-key-{account}'::bytea)",
    ),
    (
        "list: the key's account's visible databases",
        "SELECT d.* FROM databases d JOIN accounts a ON a.id = d.account_id \
         JOIN api_keys k ON k.account_id = a.id \
         WHERE k.key_hash = sha256('scale-key-{account}'::bytea) \
         AND d.state IN ('creating', 'active', 'over_quota', 'disabled') \
         ORDER BY d.created_at, d.id",
    ),
    (
        "reveal: one database of the key's account, with its host",
        "SELECT d.*, h.* FROM databases d JOIN engine_hosts h ON h.name = d.host \
         JOIN accounts a ON a.id = d.account_id JOIN api_keys k ON k.account_id = a.id \
         WHERE k.key_hash = sha256('scale-key-{account}'::bytea) \
         AND d.id = '0D' || lpad('{database}', 24, '0') \
         AND d.state IN ('creating', 'active', 'over_quota', 'disabled')",
    ),
    (
        "create: slots the account holds",
        "SELECT count(*) FROM databases WHERE account_id = '0A' || lpad('{account}', 24, '0') \
         AND state IN ('creating', 'active', 'over_quota', 'disabled', 'deleting')",
    ),
    (
        "create: the account's stored bytes",
        "SELECT coalesce(sum(size_bytes), 0) FROM databases \
         WHERE account_id = '0A' || lpad('{account}', 24, '0')",
    ),
    (
        "create: the name is free",
        "SELECT count(*) FROM databases WHERE account_id = '0A' || lpad('{account}', 24, '0') \
         AND name = 'db-5' AND state <> 'failed'",
    ),
    (
        "create: placement (host rows and their counts)",
        "SELECT name, capacity, databases FROM engine_hosts \
         WHERE engine = 'mariadb' AND NOT drained ORDER BY name",
    ),
    (
        "platform API: an account's newest audit entries",
        "SELECT * FROM audit_log WHERE account_id = '0A' || lpad('{account}', 24, '0') \
         ORDER BY id DESC LIMIT 100",
    ),
    (
        "a database's jobs (rotate's open-job check, replay)",
        "SELECT id, state FROM jobs WHERE database_id = '0D' || lpad('{database}', 24, '0')",
    ),
    (
        "retention: a batch of finished jobs past the window with a password",
        "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') \
         AND updated_at < now() - interval '1 day' AND password_sealed IS NOT NULL LIMIT 1000",
    ),
];

/// `EXPLAIN (ANALYZE, BUFFERS)` of each hot query on the middle one of `databases` seeded
/// databases' accounts: its name and plan lines.
pub async fn explain(
    metadata_url: &str,
    databases: u64,
) -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    let account = (databases / 10 / 2).max(1);
    let database = account * 10 + 5;
    let (client, conn) = tokio_postgres::connect(metadata_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let mut plans = vec![];
    for (name, sql) in HOT {
        let sql = sql
            .replace("{account}", &account.to_string())
            .replace("{database}", &database.to_string());
        let rows = client
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[])
            .await?;
        plans.push((name, rows.iter().map(|r| r.get::<_, String>(0)).collect()));
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed fits today's schema (a migration that breaks it fails here, not in a load
    /// run), writes what it says, and every hot query has a plan on it.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_seed_fits_the_schema_and_every_hot_query_plans() {
        let db = format!("hepdb_test_loadgen_{}", crate::run_tag());
        let server = "postgres://postgres@127.0.0.1:5432";
        let (admin, conn) =
            tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        let url = format!("{server}/{db}");
        hepdb_store::migrate::migrate(&url).await.unwrap();
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(
                "INSERT INTO engine_hosts (name, engine, public_host, public_port, capacity) \
                 VALUES ('mariadb', 'mariadb', '127.0.0.1', 3306, 1000)",
            )
            .await
            .unwrap();

        seed(&url, 100, "mariadb").await.unwrap();
        seed_history(&url, 100, 50).await.unwrap();
        let count = async |table: &str| -> i64 {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get(0)
        };
        assert_eq!(count("accounts").await, 10);
        assert_eq!(count("api_keys").await, 10);
        assert_eq!(count("databases").await, 100);
        assert_eq!(count("jobs").await, 50);
        assert_eq!(count("audit_log").await, 50);
        // The host's count follows the seeded rows (its triggers ran).
        let placed: i64 = client
            .query_one(
                "SELECT databases FROM engine_hosts WHERE name = 'mariadb'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(placed, 100);
        let plans = explain(&url, 100).await.unwrap();
        assert_eq!(plans.len(), HOT.len());
        // Each probe finds the seeded account's rows (`rows=0` would mean a probe of nothing),
        // but retention's: the seeded jobs' passwords are already scrubbed.
        for (name, plan) in plans.iter().filter(|(n, _)| !n.starts_with("retention")) {
            assert!(!plan[0].contains("rows=0 loops"), "{name}: {plan:?}");
        }

        drop(client);
        admin
            .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await
            .unwrap();
    }
}
