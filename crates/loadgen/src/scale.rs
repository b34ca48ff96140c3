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
const HOT: [(&str, &str); 7] = [
    (
        "key and account (every request)",
        "SELECT k.id, a.id FROM api_keys k JOIN accounts a ON a.id = k.account_id \
         WHERE k.key_hash = sha256('scale-key-50000'::bytea)",
    ),
    (
        "list: the key's account's visible databases",
        "SELECT d.* FROM databases d JOIN accounts a ON a.id = d.account_id \
         JOIN api_keys k ON k.account_id = a.id \
         WHERE k.key_hash = sha256('scale-key-50000'::bytea) \
         AND d.state IN ('creating', 'active', 'over_quota', 'disabled') \
         ORDER BY d.created_at, d.id",
    ),
    (
        "reveal: one database of the key's account, with its host",
        "SELECT d.*, h.* FROM databases d JOIN engine_hosts h ON h.name = d.host \
         JOIN accounts a ON a.id = d.account_id JOIN api_keys k ON k.account_id = a.id \
         WHERE k.key_hash = sha256('scale-key-50000'::bytea) \
         AND d.id = '0D' || lpad('500005', 24, '0') \
         AND d.state IN ('creating', 'active', 'over_quota', 'disabled')",
    ),
    (
        "create: slots the account holds",
        "SELECT count(*) FROM databases WHERE account_id = '0A' || lpad('50000', 24, '0') \
         AND state IN ('creating', 'active', 'over_quota', 'disabled', 'deleting')",
    ),
    (
        "create: the account's stored bytes",
        "SELECT coalesce(sum(size_bytes), 0) FROM databases \
         WHERE account_id = '0A' || lpad('50000', 24, '0')",
    ),
    (
        "create: the name is free",
        "SELECT count(*) FROM databases WHERE account_id = '0A' || lpad('50000', 24, '0') \
         AND name = 'db-5' AND state <> 'failed'",
    ),
    (
        "create: placement (host rows and their counts)",
        "SELECT name, capacity, databases FROM engine_hosts \
         WHERE engine = 'mariadb' AND NOT drained ORDER BY name",
    ),
];

/// `EXPLAIN (ANALYZE, BUFFERS)` of each hot query: its name and plan lines.
pub async fn explain(metadata_url: &str) -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    let (client, conn) = tokio_postgres::connect(metadata_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let mut plans = vec![];
    for (name, sql) in HOT {
        let rows = client
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[])
            .await?;
        plans.push((name, rows.iter().map(|r| r.get::<_, String>(0)).collect()));
    }
    Ok(plans)
}
