//! The pipeline's failure paths: broker, worker and engine down; redelivery; name collisions.

use std::time::{Duration, Instant};

use hepdb_core::{
    job::{JobFailure, JobKindWire, JobMessage, JobOutcome, MESSAGE_VERSION},
    secret::Password,
    settings::Secret,
};
use hepdb_worker::jobs::{Disposition, give_up_create, handle};
use mysql_async::prelude::Queryable;
use reqwest::Method;
use serde_json::json;

use hepdb_testkit::*;

fn dead(url: &str) -> Secret {
    Secret::new(url)
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_is_503_fast_and_leaves_nothing() {
    let app = spawn_app_with(
        Options {
            no_worker: true,
            no_broker_wait: true,
            slots: Some(1),
        },
        |s| {
            s.amqp.url = dead("amqp://guest:guest@127.0.0.1:1/%2f");
            s.gateway.job_timeout_ms = 3000;
        },
    )
    .await;
    for _ in 0..2 {
        let started = Instant::now();
        let resp = app
            .client
            .post(format!("{}/api/v1/db/databases", app.address))
            .header("Authorization", app.bearer())
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["retry-after"], "5");
        let (s, b) = (resp.status(), resp.json().await.unwrap());
        // The slot was released: the second attempt is refused for the broker again, not 402.
        assert_error(s, &b, 503, Some("BROKER_UNAVAILABLE"));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert!(
        data(&app.list().await.1)["databases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(engine_databases(&app.tag().await).await.is_empty());
    // Still ready: it answers list and reveal, and refuses changes in the envelope.
    let (s, b) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        data(&b)["checks"],
        json!({"metadata": "up", "broker": "down"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_worker_is_503_within_the_timeout_and_a_late_worker_does_nothing() {
    let mut app = spawn_app_with(
        Options {
            no_worker: true,
            ..Default::default()
        },
        |s| {
            s.gateway.job_timeout_ms = 1500;
        },
    )
    .await;
    let started = Instant::now();
    let (s, b) = app.create(json!({"name": "x"})).await;
    assert_error(s, &b, 503, Some("WORKER_UNAVAILABLE"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        data(&app.list().await.1)["databases"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The queued job is consumed by a worker that starts later, and does nothing.
    app.start_worker().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tag = app.tag().await;
    assert!(engine_databases(&tag).await.is_empty());
    assert!(engine_users(&tag).await.is_empty());

    // The name is free again; the sequence number was consumed and is not reused.
    let (s, b) = app.create(json!({"name": "x"})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(data(&b)["dbName"], format!("um_{tag}_2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_without_worker_changes_nothing() {
    let mut app = spawn_app_with(Options::default(), |s| s.gateway.job_timeout_ms = 1500).await;
    let (_, created) = app.create(json!({"name": "x"})).await;
    let created = data(&created).clone();
    app.worker.take().unwrap().shutdown().await;
    let (s, b) = app.rotate(created["id"].as_str().unwrap()).await;
    assert_error(s, &b, 503, Some("WORKER_UNAVAILABLE"));
    let (_, revealed) = app.reveal(created["id"].as_str().unwrap()).await;
    assert_eq!(data(&revealed)["password"], created["password"]);
    assert!(can_login(created["connectionString"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_down_is_503_and_releases_the_slot() {
    let app = spawn_app_with(
        Options {
            slots: Some(1),
            ..Default::default()
        },
        |s| {
            s.engines.mariadb.single.admin_url =
                Some(dead("mysql://hepdb_provisioner:x@127.0.0.1:1"));
        },
    )
    .await;
    for _ in 0..2 {
        let (s, b) = app.create(json!({"name": "x"})).await;
        assert_error(s, &b, 503, Some("ENGINE_UNAVAILABLE"));
    }
    assert!(
        data(&app.list().await.1)["databases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Records a create intent the way the gateway does, and returns its job message.
async fn intent(app: &TestApp, name: &str) -> (JobMessage, Password, String, String) {
    let (reserved, password) = app.reserve_intent(name).await;
    let db = reserved.database;
    let msg = JobMessage {
        v: MESSAGE_VERSION,
        job_id: reserved.job,
        database_id: db.database_id(),
        kind: JobKindWire::Create,
    };
    (msg, password, db.db_name, db.db_user)
}

/// What the MariaDB driver's first steps leave: our claim in the registry, then the database.
async fn claim_and_create(root: &mut mysql_async::Conn, db: &str, id: impl std::fmt::Display) {
    root.query_drop(format!(
        "INSERT INTO hepdb.owners (db_name, mark) VALUES ('{db}', 'hepdb:{id}')"
    ))
    .await
    .unwrap();
    root.query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
}

fn url(user: &str, pw: &Password, db: &str) -> String {
    format!("mysql://{user}:{}@127.0.0.1:3306/{db}", pw.expose())
}

const DONE: Disposition = Disposition::Finished {
    outcome: JobOutcome::Done,
    dead_letter: None,
};

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_create_converges_from_every_partial_state() {
    let app = spawn_app_with(
        Options {
            slots: Some(10),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let ctx = app.worker.as_ref().unwrap().context();
    let tag = app.tag().await;
    let mut root = root().await;

    // Delivered twice in a row: one database, one user, one password.
    let (msg, pw, db, user) = intent(&app, "twice").await;
    assert_eq!(handle(ctx, &msg).await, DONE);
    assert_eq!(handle(ctx, &msg).await, DONE);
    use_database(&url(&user, &pw, &db)).await.unwrap();

    // Crashed after claiming the name and CREATE DATABASE.
    let (msg, pw, db, user) = intent(&app, "after-db").await;
    claim_and_create(&mut root, &db, msg.database_id).await;
    assert_eq!(handle(ctx, &msg).await, DONE);
    use_database(&url(&user, &pw, &db)).await.unwrap();

    // Crashed after CREATE USER, with the user's password drifted: converges to metadata's.
    let (msg, pw, db, user) = intent(&app, "after-user").await;
    claim_and_create(&mut root, &db, msg.database_id).await;
    root.query_drop(format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'drifted'"))
        .await
        .unwrap();
    assert_eq!(handle(ctx, &msg).await, DONE);
    use_database(&url(&user, &pw, &db)).await.unwrap();

    assert_eq!(engine_databases(&tag).await.len(), 3);
    assert_eq!(engine_users(&tag).await.len(), 3);
    let (_, listed) = app.list().await;
    assert_eq!(data(&listed)["databases"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_colliding_database_is_left_untouched() {
    let app = spawn_app().await;
    let tag = app.tag().await;
    let mut root = root().await;
    let taken = format!("um_{tag}_1");
    root.query_drop(format!("CREATE DATABASE `{taken}`"))
        .await
        .unwrap();
    root.query_drop(format!("CREATE TABLE `{taken}`.keep (id INT)"))
        .await
        .unwrap();

    let (s, b) = app.create(json!({"name": "x"})).await;
    assert_error(s, &b, 500, Some("ENGINE_CONFLICT"));
    let tables: Vec<String> = root
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (&taken,),
        )
        .await
        .unwrap();
    assert_eq!(tables, ["keep"], "the foreign database is intact");
    assert!(engine_users(&tag).await.is_empty());

    // The slot and the name are free again; the next database gets the next number.
    let (s, b) = app.create(json!({"name": "x"})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(data(&b)["dbName"], format!("um_{tag}_2"));
    root.query_drop(format!("DROP DATABASE `{taken}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_colliding_user_is_left_untouched() {
    let app = spawn_app().await;
    let tag = app.tag().await;
    let mut root = root().await;
    let taken = format!("dum_{tag}_1");
    root.query_drop(format!("CREATE USER '{taken}'@'%' IDENTIFIED BY 'theirs'"))
        .await
        .unwrap();

    let (s, b) = app.create(json!({"name": "x"})).await;
    assert_error(s, &b, 500, Some("ENGINE_CONFLICT"));
    assert!(
        engine_databases(&tag).await.is_empty(),
        "our half-made database was undone"
    );
    assert!(
        can_login(&format!("mysql://{taken}:theirs@127.0.0.1:3306")).await,
        "their user still works"
    );
    root.query_drop(format!("DROP USER '{taken}'@'%'"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_failing_is_dead_lettered_and_cleaned_up() {
    let app = spawn_app_with(
        Options {
            slots: Some(1),
            ..Default::default()
        },
        |s| s.worker.max_attempts = 2,
    )
    .await;
    let ctx = app.worker.as_ref().unwrap().context();
    let (msg, _, _, _) = intent(&app, "poison").await;
    // Two earlier deliveries that died mid-job.
    for _ in 0..2 {
        app.claimed_by_a_dead_delivery(&msg).await;
    }
    assert_eq!(
        handle(ctx, &msg).await,
        Disposition::Finished {
            outcome: JobOutcome::Failed(JobFailure::Poisoned),
            dead_letter: Some("too many attempts")
        }
    );
    assert!(engine_databases(&app.tag().await).await.is_empty());
    // The slot is free again.
    assert_eq!(app.create(json!({"name": "poison"})).await.0, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_provisioner_is_not_root() {
    let app = spawn_app().await;
    let url = app
        .settings
        .engines
        .mariadb
        .single
        .admin_url
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
        .prefer_socket(false);
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    for sql in [
        "CREATE DATABASE not_a_tenant_db",
        "SELECT * FROM mysql.user",
        "DROP DATABASE mysql",
        "GRANT ALL PRIVILEGES ON *.* TO 'x'@'%'",
    ] {
        assert!(
            c.query_drop(sql).await.is_err(),
            "provisioner must not be able to: {sql}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_admin_port_reports_each_dependency() {
    let app = spawn_app().await;
    let port = app.worker.as_ref().unwrap().admin_port();
    let get = |path: &str| {
        app.client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
    };
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let resp = get("/readyz").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let checks = &body["data"]["checks"];
    assert_eq!(
        (&checks["metadata"], &checks["broker"]),
        (&json!("up"), &json!("up"))
    );
    assert_eq!(
        checks["engines"],
        json!({"mariadb": "up", "postgres": "up", "mongo": "up"})
    );

    // An engine host that does not answer leaves the worker ready (its other hosts' jobs run),
    // and is reported by name, in /readyz and in the metrics.
    let down = spawn_app_with(Options::default(), |s| {
        s.engines.mariadb.single.admin_url = Some(dead("mysql://hepdb_provisioner:x@127.0.0.1:1"));
    })
    .await;
    let port = down.worker.as_ref().unwrap().admin_port();
    let resp = down
        .client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let checks = &data(&body)["checks"];
    assert_eq!(checks["engines"]["mariadb"], "down");
    assert_eq!(checks["engines"]["postgres"], "up");
    let metrics = down
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hepdb_engine_host_up{host=\"mariadb\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_flow_through_quorum_queues_too() {
    let app = spawn_app_with(Options::default(), |s| s.amqp.quorum_queues = true).await;
    let (s, b) = app.create(json!({"name": "replicated"})).await;
    assert_eq!(s, 201, "{b}");
    let id = data(&b)["id"].as_str().unwrap().to_owned();
    let (s, b) = app.rotate(&id).await;
    assert_eq!(s, 200, "{b}");
    assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);
    // A rotate that finds its database held waits in the (quorum) wait queue and comes back.
    let holder = hold_lock(&app, id.parse().unwrap()).await;
    let rotate = app.rotate(&id);
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        holder.batch_execute("ROLLBACK").await.unwrap();
    };
    let ((s, b), ()) = tokio::join!(rotate, release);
    assert_eq!(s, 200, "{b}");
    assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_worker_finishes_its_running_job_and_takes_no_new_one() {
    let mut app = spawn_app_with(Options::default(), |s| s.gateway.job_timeout_ms = 2000).await;
    let worker = app.worker.take().unwrap();
    let request = app.create(json!({"name": "in-flight", "engine": "postgres"}));
    let stop = async {
        // Once the job is running (a PostgreSQL create takes a while), stop the worker.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let open = app.store.stale_jobs(0).await.unwrap();
            if open.iter().any(|j| j.state == "running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        worker.shutdown_within(Duration::from_secs(10)).await
    };
    let ((s, b), handed_back) = tokio::join!(request, stop);
    assert_eq!(
        handed_back, 0,
        "the running job finished before the worker stopped"
    );
    assert_eq!(s, 201, "{b}");
    assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);
    // A stopped worker takes nothing new.
    let (s, b) = app.create(json!({"name": "after-stop"})).await;
    assert_error(s, &b, 503, Some("WORKER_UNAVAILABLE"));
}

/// Race: delivery D1 runs a create's engine step; the broker redelivers the message as D2,
/// which waits on the lock; D1's step fails; D2 converges and commits `active` (the client gets
/// 201); only then does D1's cleanup run. It must find the job finished and undo nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_delivery_never_undoes_a_create_another_delivery_finished() {
    let app = spawn_app().await;
    let ctx = app.worker.as_ref().unwrap().context();
    let tag = app.tag().await;
    let (msg, pw, db, user) = intent(&app, "raced").await;
    assert_eq!(handle(ctx, &msg).await, DONE, "D2 converges");
    assert_eq!(
        give_up_create(ctx, &msg, JobFailure::EngineUnavailable, None).await,
        DONE,
        "D1's cleanup answers what metadata holds"
    );
    use_database(&url(&user, &pw, &db)).await.unwrap();
    let row = app.store.database(msg.database_id).await.unwrap().unwrap();
    assert_eq!(row.state, "active");

    // A create that is still live is undone, under the lock: nothing of it is left on the
    // engine, and its slot is free again.
    let (msg, _, db, _) = intent(&app, "undone").await;
    app.claimed_by_a_dead_delivery(&msg).await;
    let mut root = root().await;
    claim_and_create(&mut root, &db, msg.database_id).await;
    assert_eq!(
        give_up_create(ctx, &msg, JobFailure::EngineUnavailable, None).await,
        Disposition::Finished {
            outcome: JobOutcome::Failed(JobFailure::EngineUnavailable),
            dead_letter: None,
        }
    );
    assert!(!engine_databases(&tag).await.contains(&db));
    assert!(app.store.database(msg.database_id).await.unwrap().is_none());
}

/// A delivery whose database another holder has (a duplicate of the same job, or another job
/// of the same database) counts no attempt. One delivery per database may wait for the lock
/// (it takes it the moment it is free); every other one is answered `Busy` at once, with the
/// job as it was. Once the lock is free the job runs once, counting one attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_finds_its_database_held_counts_nothing_and_only_one_waits() {
    let app = spawn_app().await;
    let ctx = app.worker.as_ref().unwrap().context().clone();
    let (msg, pw, db, user) = intent(&app, "waiting").await;
    let holder = hold_lock(&app, msg.database_id).await;
    let waiter = {
        let (ctx, msg) = (ctx.clone(), msg.clone());
        tokio::spawn(async move { handle(&ctx, &msg).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert_eq!(handle(&ctx, &msg).await, Disposition::Busy);
    }
    let job = app.store.job(msg.job_id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("pending", 0));
    assert!(!waiter.is_finished(), "the waiter waits for the lock");
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(waiter.await.unwrap(), DONE);
    assert_eq!(
        handle(&ctx, &msg).await,
        DONE,
        "a later copy answers the outcome"
    );
    let job = app.store.job(msg.job_id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("done", 1));
    use_database(&url(&user, &pw, &db)).await.unwrap();
}

/// A job whose engine step outlives `stale_job_secs` (here the engine's network hangs) is kept
/// visibly alive by its delivery's heartbeat: the reconciler leaves it alone instead of sending
/// it again, and the one delivery finishes it with one attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_step_outlives_the_staleness_is_not_sent_again() {
    use hepdb_testkit::proxy::{Hold, Proxy};
    let proxy = Proxy::start("127.0.0.1:3306").await;
    let app = spawn_app_with(Options::default(), |s| {
        s.worker.stale_job_secs = 2;
        s.worker.engine_timeout_secs = 5;
        s.gateway.job_timeout_ms = 1000;
        let url = s
            .engines
            .mariadb
            .single
            .admin_url
            .as_ref()
            .unwrap()
            .expose();
        let proxied = url.replace("127.0.0.1:3306", &format!("127.0.0.1:{}", proxy.port));
        s.engines.mariadb.single.admin_url = Some(hepdb_core::settings::Secret::new(proxied));
    })
    .await;
    let worker = app.worker.as_ref().unwrap();
    let (s, created) = app.create(json!({"name": "slow"})).await;
    assert_eq!(s, 201, "{created}");
    let id: hepdb_core::DatabaseId = data(&created)["id"].as_str().unwrap().parse().unwrap();
    let (msg, new) = app.rotate_intent(id).await;
    proxy.hold(Hold::Requests);
    let running = {
        let (ctx, msg) = (worker.context().clone(), msg.clone());
        tokio::spawn(async move { handle(&ctx, &msg).await })
    };
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let job = app.store.job(msg.job_id).await.unwrap().unwrap();
    assert_eq!(job.state, "running", "the step is still hanging");
    // Let the engine go while the reconciler pass (which also talks to it) runs.
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.hold(Hold::None);
    };
    let (report, ()) = tokio::join!(worker.reconcile(true), release);
    assert!(
        !report
            .unwrap()
            .stale_jobs
            .iter()
            .any(|a| a.id == msg.job_id.to_text()),
        "a job still being worked on was taken for stale"
    );
    assert_eq!(running.await.unwrap(), DONE);
    let job = app.store.job(msg.job_id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("done", 1));
    let (_, revealed) = app.reveal(&id.to_text()).await;
    assert_eq!(data(&revealed)["password"], new.expose());
}

/// A flood of rotates on one database whose lock is held must not take the worker's slots
/// from other tenants' jobs: with a single slot, another database's create is answered while
/// the rotates wait (parked on the broker, not in the worker), and every rotate is answered
/// once the lock is free, none of them counted as an attempt while it waited.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_on_one_held_database_does_not_starve_other_jobs() {
    let app = std::sync::Arc::new(
        spawn_app_with(
            Options {
                slots: Some(5),
                ..Default::default()
            },
            |s| s.worker.prefetch = 1,
        )
        .await,
    );
    let (s, created) = app.create(json!({"name": "flooded"})).await;
    assert_eq!(s, 201, "{created}");
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    let holder = hold_lock(&app, id.parse().unwrap()).await;
    let rotates: Vec<_> = (0..6)
        .map(|_| {
            let (app, id) = (app.clone(), id.clone());
            tokio::spawn(async move { app.rotate(&id).await })
        })
        .collect();
    let recorded = "SELECT 1 FROM jobs WHERE kind = 'rotate'";
    let started = Instant::now();
    while app.metadata_sql(recorded).await < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rotates not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, other) = app.create(json!({"name": "bystander"})).await;
    assert_eq!(s, 201, "another database's create starved: {other}");
    let waiting = app
        .metadata_sql("SELECT 1 FROM jobs WHERE kind = 'rotate' AND attempts = 0")
        .await;
    assert_eq!(waiting, 6, "a waiting rotate was counted as an attempt");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let mut last = None;
    for rotate in rotates {
        let (s, body) = rotate.await.unwrap();
        assert_eq!(s, 200, "{body}");
        last = Some(body);
    }
    let (_, revealed) = app.reveal(&id).await;
    assert!(last.is_some());
    use_database(data(&revealed)["connectionString"].as_str().unwrap())
        .await
        .unwrap();
}

/// Holds database `id`'s lock from another metadata session, as another job's step would,
/// until the returned client rolls back.
async fn hold_lock(app: &TestApp, id: hepdb_core::DatabaseId) -> tokio_postgres::Client {
    let (holder, conn) =
        tokio_postgres::connect(app.settings.metadata.url.expose(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('{id}', 0))"
        ))
        .await
        .unwrap();
    holder
}

/// The rotate twin of the race above: delivery A's rotate failed while duplicate B holds the
/// database's lock and runs the same job to the end. A's failure is recorded only under the
/// lock, so it waits for B, finds the job done, and answers what B did.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rotate_delivery_waits_for_and_keeps_the_answer_of_one_that_finished() {
    use hepdb_core::state::JobKind;
    let app = spawn_app().await;
    let ctx = app.worker.as_ref().unwrap().context().clone();
    let (s, created) = app.create(json!({"name": "rotated"})).await;
    assert_eq!(s, 201);
    let id: hepdb_core::DatabaseId = data(&created)["id"].as_str().unwrap().parse().unwrap();
    let (msg, _) = app.rotate_intent(id).await;
    let job = msg.job_id;
    app.claimed_by_a_dead_delivery(&msg).await;
    // B holds the database's lock, in its step.
    let b = hold_lock(&app, id).await;
    let a = tokio::spawn(async move {
        hepdb_worker::jobs::give_up(
            &ctx,
            &msg,
            JobKind::Rotate,
            JobFailure::EngineUnavailable,
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = app.store.job(job).await.unwrap().unwrap().state;
    assert_eq!(
        state, "running",
        "A recorded its failure while B was still running the job"
    );
    // B finishes the job and commits.
    b.batch_execute(&format!(
        "UPDATE jobs SET state = 'done' WHERE id = '{job}'; COMMIT"
    ))
    .await
    .unwrap();
    assert_eq!(a.await.unwrap(), DONE);
    assert_eq!(app.store.job(job).await.unwrap().unwrap().state, "done");
}
