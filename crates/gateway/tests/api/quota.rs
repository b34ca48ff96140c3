//! The quota watcher, over_quota enforcement, the suspension cascade and the audit log, against
//! the real engines.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use hepdb_testkit::*;

/// Runs `sql` as the tenant, through its connection string, on a fresh connection.
async fn tenant_sql(cs: &str, sql: &str) -> Result<(), String> {
    if cs.starts_with("mysql://") {
        use mysql_async::prelude::Queryable;
        let opts = mysql_async::Opts::from_url(cs).unwrap();
        let mut c =
            mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
                .await
                .map_err(|e| e.to_string())?;
        let r = c.query_drop(sql).await.map_err(|e| e.to_string());
        let _ = c.disconnect().await;
        r
    } else {
        let (client, conn) = tokio_postgres::connect(cs, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| e.to_string())
    }
}

async fn call(
    app: &TestApp,
    auth: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (s, b) = app.send(method, path, Some(auth), body).await;
    (s.as_u16(), b)
}

async fn status_of(app: &TestApp, auth: &str, id: &str) -> String {
    let (_, b) = call(
        app,
        auth,
        Method::GET,
        &format!("/api/v1/db/databases/{id}"),
        None,
    )
    .await;
    data(&b)["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn over_quota_keeps_read_and_delete_and_freeing_space_restores_writes() {
    let app = spawn_app().await;
    let worker = app.worker.as_ref().unwrap();
    // Quotas sized to each engine: an empty PostgreSQL database already takes ~8 MB.
    for (engine, quota_mb, fill) in [
        (
            "mariadb",
            1,
            "CREATE TABLE t (v LONGBLOB); \
             INSERT INTO t VALUES (REPEAT('x', 1048576)), (REPEAT('y', 1048576)); \
             ANALYZE TABLE t",
        ),
        (
            "postgres",
            12,
            "CREATE TABLE t (v TEXT); ALTER TABLE t ALTER COLUMN v SET STORAGE PLAIN; \
             INSERT INTO t SELECT repeat(md5(i::text), 60) FROM generate_series(1, 60000) i",
        ),
    ] {
        let (account, auth) = app.tenant_with_quota(quota_mb).await;
        let (s, created) = call(
            &app,
            &auth,
            Method::POST,
            "/api/v1/db/databases",
            Some(json!({"name": "big", "engine": engine})),
        )
        .await;
        assert_eq!(s, 201, "{created}");
        let d = data(&created).clone();
        let (id, cs) = (
            d["id"].as_str().unwrap(),
            d["connectionString"].as_str().unwrap(),
        );
        assert_eq!(status_of(&app, &auth, id).await, "active");
        tenant_sql(cs, fill)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));

        let report = worker.quota_pass(Some(account)).await.unwrap();
        assert_eq!(report.changes.len(), 1, "{engine}: {:?}", report.changes);
        assert!(report.changes[0].applied);
        assert_eq!(status_of(&app, &auth, id).await, "over_quota", "{engine}");
        let (_, listed) = call(&app, &auth, Method::GET, "/api/v1/db/databases", None).await;
        let listed = &data(&listed)["databases"][0];
        assert!(
            listed["sizeBytes"].as_i64().unwrap() > quota_mb * 1024 * 1024,
            "{listed}"
        );
        assert!(listed["sizeRefreshedAt"].is_string());
        // Reads work, new data does not, and no new database while over.
        tenant_sql(cs, "SELECT COUNT(*) FROM t").await.unwrap();
        let refused = tenant_sql(cs, "INSERT INTO t VALUES ('more')").await;
        assert!(refused.is_err(), "{engine}: insert while over quota");
        let (s, b) = call(
            &app,
            &auth,
            Method::POST,
            "/api/v1/db/databases",
            Some(json!({"name": "another", "engine": engine})),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (402, Some("OVER_STORAGE_QUOTA")),
            "{b}"
        );
        // Rotating still works on an over-quota database.
        let (s, _) = call(
            &app,
            &auth,
            Method::POST,
            &format!("/api/v1/db/databases/{id}/rotate"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        let (_, revealed) = call(
            &app,
            &auth,
            Method::GET,
            &format!("/api/v1/db/databases/{id}"),
            None,
        )
        .await;
        let cs = data(&revealed)["connectionString"]
            .as_str()
            .unwrap()
            .to_owned();

        // The owner frees space; the next pass gives writes back.
        tenant_sql(&cs, "TRUNCATE TABLE t")
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        let report = worker.quota_pass(Some(account)).await.unwrap();
        assert_eq!(report.changes.len(), 1, "{engine}: {:?}", report.changes);
        assert_eq!(status_of(&app, &auth, id).await, "active");
        tenant_sql(&cs, "INSERT INTO t VALUES ('more')")
            .await
            .unwrap_or_else(|e| panic!("{engine}: writes restored: {e}"));
    }
}

/// Publishes access jobs the way `hepdb-admin account suspend` does, and waits for them.
async fn run_access_jobs(app: &TestApp, jobs: &[(hepdb_core::JobId, hepdb_core::DatabaseId)]) {
    let with_kind: Vec<_> = jobs
        .iter()
        .map(|(j, d)| (*j, *d, hepdb_core::state::JobKind::Access))
        .collect();
    assert_eq!(
        hepdb_worker::oneshot::publish_jobs(&app.settings, &with_kind).await,
        jobs.len()
    );
    let started = Instant::now();
    for (job, _) in jobs {
        loop {
            let state = app.store.job(*job).await.unwrap().unwrap().state;
            if state == "done" {
                break;
            }
            assert_ne!(state, "failed");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "access job stuck: {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn suspension_locks_every_engine_and_unsuspension_restores_it() {
    let app = spawn_app().await;
    let mut strings = vec![];
    for engine in ["mariadb", "postgres", "mongo"] {
        let (s, b) = app.create(json!({"name": engine, "engine": engine})).await;
        assert_eq!(s, 201, "{b}");
        strings.push(data(&b)["connectionString"].as_str().unwrap().to_owned());
    }
    // A key the owner disabled stays disabled through the cycle.
    let (own_id, own_key) = app.store.mint_key(app.account).await.unwrap().unwrap();
    app.store
        .set_key_enabled(own_id, false, None)
        .await
        .unwrap();

    let suspended = app
        .store
        .suspend_account(app.account, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(suspended.jobs.len(), 3);
    run_access_jobs(&app, &suspended.jobs).await;
    let (s, b) = app.list().await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));
    for cs in &strings {
        assert!(!can_login(cs).await, "locked: {cs}");
    }

    let back = app
        .store
        .unsuspend_account(app.account, None)
        .await
        .unwrap()
        .unwrap();
    run_access_jobs(&app, &back.jobs).await;
    let (s, b) = app.list().await;
    assert_eq!(s, 200, "{b}");
    assert!(
        data(&b)["databases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "active")
    );
    for cs in &strings {
        use_database(cs)
            .await
            .unwrap_or_else(|e| panic!("same password again: {e}"));
    }
    let (s, b) = app
        .send(
            Method::GET,
            "/api/v1/db/databases",
            Some(&format!("Bearer {}", own_key.expose())),
            None,
        )
        .await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_watchers_measure_each_database_once_per_interval() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "watched"})).await;
    let id: hepdb_core::DatabaseId = data(&created)["id"].as_str().unwrap().parse().unwrap();
    let mut settings = app.settings.clone();
    settings.quota.interval_secs = 2;
    let watchers = [
        hepdb_worker::Worker::start(&settings).unwrap(),
        hepdb_worker::Worker::start(&settings).unwrap(),
    ];
    let mut seen = vec![];
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(5500) {
        let at = app
            .store
            .database(id)
            .await
            .unwrap()
            .unwrap()
            .size_refreshed_at;
        if let Some(at) = at
            && seen.last() != Some(&at)
        {
            seen.push(at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(watchers);
    assert!((2..=3).contains(&seen.len()), "passes: {seen:?}");
    for pair in seen.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 1900, "passes too close: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_records_who_did_what_and_no_secret() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "audited"})).await;
    let d = data(&created).clone();
    let id = d["id"].as_str().unwrap();
    app.reveal(id).await;
    let (_, rotated) = app.rotate(id).await;
    let rows = app.store.audit_log(app.account).await.unwrap();
    let actions: Vec<_> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["database.create", "database.reveal", "database.rotate"]
    );
    for r in &rows {
        assert!(r.actor.starts_with("key:"), "{r:?}");
        assert_eq!(r.database_id.as_deref(), Some(id));
        assert_eq!(r.address.as_deref(), Some("127.0.0.1"));
        let text = format!("{r:?}");
        for secret in [&d["password"], &data(&rotated)["password"]] {
            assert!(
                !text.contains(secret.as_str().unwrap()),
                "secret in the audit log"
            );
        }
        assert!(!text.contains(&app.key), "key in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reveals_are_each_audited_before_they_answer() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "busy"})).await;
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    // Entries of concurrent requests share inserts; none may be lost or answered early.
    let answers = futures_util::future::join_all((0..60).map(|_| app.reveal(&id))).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    let rows = app.store.audit_log(app.account).await.unwrap();
    let reveals = rows
        .iter()
        .filter(|r| r.action == "database.reveal")
        .count();
    assert_eq!(reveals, 60);
}

/// A database its (reachable) host does not report keeps its last size for
/// `quota.max_unmeasured_passes` passes, with the others on the host measured as usual; then
/// its account counts as over quota, until it can be measured again.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_cannot_be_measured_does_not_stop_the_others_and_cannot_hide_its_size() {
    let app = spawn_app().await;
    let worker = app.worker.as_ref().unwrap();
    let max = app.settings.quota.max_unmeasured_passes;
    let (account, auth) = app.tenant_with_quota(1024).await;
    let mut made = vec![];
    for name in ["hidden", "other"] {
        let (s, b) = call(
            &app,
            &auth,
            Method::POST,
            "/api/v1/db/databases",
            Some(json!({"name": name, "engine": "postgres"})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        let d = data(&b);
        made.push((
            d["id"].as_str().unwrap().to_owned(),
            d["dbName"].as_str().unwrap().to_owned(),
        ));
    }
    let report = worker.quota_pass(Some(account)).await.unwrap();
    assert!(report.unmeasured.is_empty(), "{:?}", report.unmeasured);
    let size_of = |id: &str| {
        let store = app.store.clone();
        let id = id.parse().unwrap();
        async move { store.database(id).await.unwrap().unwrap().size_bytes }
    };
    let measured = size_of(&made[0].0).await;
    assert!(measured > 0);

    // The engine no longer reports it under its name (an operator renamed it, a restore went
    // wrong): the host still answers for everything else.
    let (root, conn) = tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (hidden, away) = (&made[0].1, format!("{}_away", made[0].1));
    root.batch_execute(&format!("ALTER DATABASE \"{hidden}\" RENAME TO \"{away}\""))
        .await
        .unwrap();
    for pass in 1..max {
        let report = worker.quota_pass(Some(account)).await.unwrap();
        let unmeasured: Vec<_> = report
            .unmeasured
            .iter()
            .map(|u| (&u.db_name, u.passes))
            .collect();
        assert_eq!(unmeasured, [(hidden, pass as i32)], "pass {pass}");
        assert_eq!(report.unmeasured_total, 1);
        assert!(
            report
                .measured
                .iter()
                .any(|m| m.host == "postgres" && m.databases >= 1)
        );
        assert!(report.changes.is_empty(), "{:?}", report.changes);
        assert_eq!(size_of(&made[0].0).await, measured, "keeps its last size");
        assert_eq!(status_of(&app, &auth, &made[0].0).await, "active");
    }
    let report = worker.quota_pass(Some(account)).await.unwrap();
    assert_eq!(report.changes.len(), 2, "{:?}", report.changes);
    for (id, _) in &made {
        assert_eq!(status_of(&app, &auth, id).await, "over_quota");
    }

    root.batch_execute(&format!("ALTER DATABASE \"{away}\" RENAME TO \"{hidden}\""))
        .await
        .unwrap();
    let report = worker.quota_pass(Some(account)).await.unwrap();
    assert!(report.unmeasured.is_empty());
    for (id, _) in &made {
        assert_eq!(status_of(&app, &auth, id).await, "active");
    }
}

/// A host that lost many databases at once (a restore of an older backup, a wrong server
/// behind its address): every one is counted and moved, but the pass names only a sample, so
/// neither the worker's memory nor one log line grows with them.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_missing_many_databases_is_counted_and_named_by_a_sample() {
    let app = spawn_app_with(
        Options {
            slots: Some(1000),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let (s, b) = app.create(json!({"name": "real"})).await;
    assert_eq!(s, 201, "{b}");
    let real = data(&b)["id"].as_str().unwrap().to_owned();
    let missing = 2 * hepdb_store::quota::UNMEASURED_SAMPLE as usize;
    let rows = app
        .metadata_sql(&format!(
            "INSERT INTO databases (id, account_id, name, engine, seq, db_name, db_user, \
             password_sealed, state, host) \
             SELECT '0D' || lpad(i::text, 24, '0'), '{}', 'gone-' || i, 'mariadb', 1000 + i, \
                    'um_gone_' || i, 'dum_gone_' || i, '\\x00'::bytea, 'active', 'mariadb' \
             FROM generate_series(1, {missing}) i",
            app.account.to_text()
        ))
        .await;
    assert_eq!(rows, missing);
    let worker = app.worker.as_ref().unwrap();
    let max = app.settings.quota.max_unmeasured_passes;
    for pass in 1..max {
        let report = worker.quota_pass(None).await.unwrap();
        assert!(report.changes.is_empty(), "pass {pass}");
        assert_eq!(report.unmeasured_total, missing, "pass {pass}");
        assert_eq!(
            report.unmeasured.len(),
            hepdb_store::quota::UNMEASURED_SAMPLE as usize
        );
        assert!(report.unmeasured.iter().all(|u| u.passes == pass as i32));
    }
    // At the limit the account counts as over quota: all its databases move, the real one
    // included, each with its access job.
    let report = worker.quota_pass(None).await.unwrap();
    assert_eq!(report.unmeasured_total, missing);
    assert_eq!(report.changes.len(), missing + 1);
    assert!(report.changes.iter().any(|c| c.database == real));
    assert_eq!(data(&app.reveal(&real).await.1)["status"], "over_quota");
}

/// Access jobs are recorded a few thousand to a statement, each database's job answered in
/// the order asked (the reconciler and the quota pass pair them up by position).
#[tokio::test(flavor = "multi_thread")]
async fn many_access_jobs_are_recorded_in_order() {
    let app = spawn_app_with(
        Options {
            no_worker: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let ids: Vec<String> = (0..12_001)
        .map(|_| hepdb_core::DatabaseId::new().to_text())
        .collect();
    let jobs = app.store.enqueue_access_jobs(&ids).await.unwrap();
    let answered: Vec<String> = jobs.iter().map(|(_, db)| db.to_text()).collect();
    assert_eq!(answered, ids);
    let recorded = app
        .metadata_sql("SELECT 1 FROM jobs WHERE kind = 'access' AND state = 'pending'")
        .await;
    assert_eq!(recorded, ids.len());
    // Each job is its own, and belongs to the database it was answered for.
    let first = &jobs[0];
    let sql = format!(
        "SELECT 1 FROM jobs WHERE id = '{}' AND database_id = '{}'",
        first.0, first.1
    );
    assert_eq!(app.metadata_sql(&sql).await, 1);
    let last = &jobs[ids.len() - 1];
    let sql = format!(
        "SELECT 1 FROM jobs WHERE id = '{}' AND database_id = '{}'",
        last.0, last.1
    );
    assert_eq!(app.metadata_sql(&sql).await, 1);
}
