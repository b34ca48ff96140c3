//! Benchmark (`cargo xtask bench`): one quota watcher pass over 10,000 databases on one
//! MariaDB host, against a baseline measured in the same run: the bare `information_schema`
//! size query the pass is built on. Prints the times, their ratio, and the pass as a share of
//! the default interval. Not a pass/fail timing test; it is `#[ignore]`d and run on demand.

use std::time::{Duration, Instant};

use hepdb_core::settings::Settings;
use hepdb_store::{Store, migrate};
use hepdb_worker::jobs::JobContext;
use mysql_async::prelude::Queryable;

fn databases() -> usize {
    std::env::var("HEPDB_BENCH_DATABASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with `cargo xtask bench`"]
async fn quota_pass_over_ten_thousand_databases() {
    let n = databases();
    let mut settings = Settings::load().unwrap();
    hepdb_testkit::metadata::own_metadata(&mut settings, "bench");
    migrate::migrate(settings.metadata.url.expose())
        .await
        .unwrap();
    hepdb_testkit::bootstrap_provisioners().await;
    let store = Store::connect(settings.metadata.url.expose(), 4).unwrap();
    store
        .register_configured_hosts(&settings.engines)
        .await
        .unwrap();
    let account = store
        .create_account("bench", n as i32, 1_000_000)
        .await
        .unwrap();

    // n real, empty schemas on the engine and their rows in metadata.
    let started = Instant::now();
    let mut c = hepdb_testkit::root().await;
    for i in 1..=n {
        c.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `um_{}_{i}`",
            account.db_tag
        ))
        .await
        .unwrap();
    }
    // Claimed as hepdb's, the way the provisioner claims what it creates.
    let mark = format!("hepdb:{}", hepdb_core::DatabaseId::new());
    for chunk in (1..=n).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('um_{}_{i}', '{mark}')", account.db_tag))
            .collect();
        c.query_drop(format!(
            "INSERT IGNORE INTO hepdb.owners (db_name, mark) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }
    let rows = insert_rows(&settings, &account.id, &account.db_tag, n).await;
    assert_eq!(rows, n);
    eprintln!("bench: setup of {n} databases took {:?}", started.elapsed());

    let ctx = JobContext {
        store: store.clone(),
        engines: hepdb_worker::engines::Engines::from_settings(&settings.engines).unwrap(),
        key: settings.crypto.master_key().unwrap(),
        max_attempts: 5,
        max_unmeasured_passes: 3,
        job_retention_days: 30,
        audit_retention_days: 400,
        engine_timeout: std::time::Duration::from_secs(45),
        heartbeat: std::time::Duration::from_secs(20),
        waiters: Default::default(),
    };
    let driver = ctx.engines.get("mariadb").unwrap().clone();
    let mut baseline = vec![];
    let mut passes = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let sizes = driver.sizes().await.unwrap();
        baseline.push(t.elapsed());
        assert!(sizes.len() >= n);
        let t = Instant::now();
        let report = hepdb_worker::quota::pass(&ctx, None).await.unwrap();
        passes.push(t.elapsed());
        assert_eq!(report.measured[0].databases, n);
    }
    let (baseline, pass) = (median(baseline), median(passes));
    let interval = Duration::from_secs(settings.quota.interval_secs);
    eprintln!(
        "bench: quota pass over {n} databases: {pass:?} (median of 5); baseline (the bare size \
         query): {baseline:?}; ratio pass/baseline = {:.2}; pass = {:.3}% of the {interval:?} \
         interval",
        pass.as_secs_f64() / baseline.as_secs_f64(),
        100.0 * pass.as_secs_f64() / interval.as_secs_f64()
    );

    for i in 1..=n {
        c.query_drop(format!(
            "DROP DATABASE IF EXISTS `um_{}_{i}`",
            account.db_tag
        ))
        .await
        .unwrap();
    }
    c.query_drop(format!(
        "DELETE FROM hepdb.owners WHERE db_name LIKE 'um\\_{}\\_%'",
        account.db_tag
    ))
    .await
    .unwrap();
    migrate::drop_database(settings.metadata.url.expose())
        .await
        .unwrap();
}

/// Inserts n `active` rows in one statement (the benchmark measures the pass, not setup).
async fn insert_rows(settings: &Settings, account: &str, tag: &str, n: usize) -> usize {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let mut conn = diesel_async::AsyncPgConnection::establish(settings.metadata.url.expose())
        .await
        .unwrap();
    let sql = format!(
        "INSERT INTO databases (id, account_id, name, engine, seq, db_name, db_user, \
         password_sealed, state, host) \
         SELECT lpad(to_hex(i), 26, '0'), '{account}', 'db-' || i, 'mariadb', i, \
         'um_{tag}_' || i, 'dum_{tag}_' || i, '\\x00', 'active', 'mariadb' \
         FROM generate_series(1, {n}) AS i"
    );
    diesel::sql_query(sql).execute(&mut conn).await.unwrap()
}
