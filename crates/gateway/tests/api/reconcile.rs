//! The reconciler: jobs committed but never published (a gateway killed right after its
//! commit) are delivered, interrupted deletions and failed creates are finished, and marked
//! engine objects without a row are reported and left alone.

use std::time::{Duration, Instant};

use hepdb_core::{DatabaseId, secret::Password};
use mysql_async::prelude::Queryable;
use serde_json::json;

use hepdb_testkit::*;

/// A worker whose reconciler considers jobs stale after one second.
async fn app() -> TestApp {
    spawn_app_with(
        Options {
            slots: Some(10),
            ..Default::default()
        },
        |s| {
            s.gateway.job_timeout_ms = 500;
            s.worker.stale_job_secs = 1;
        },
    )
    .await
}

async fn wait_active(app: &TestApp, id: DatabaseId) {
    let started = Instant::now();
    loop {
        let db = app.store.database(id).await.unwrap().unwrap();
        if db.state == "active" {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still {}",
            db.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_committed_but_never_published_is_delivered() {
    let app = app().await;
    let worker = app.worker.as_ref().unwrap();
    let key = app.settings.crypto.master_key().unwrap();

    // The gateway committed a create and died before publishing.
    let (reserved, password) = app.reserve_intent("orphaned-intent").await;
    let id = reserved.database.database_id();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A dry run only reports.
    let plan = worker.reconcile(true).await.unwrap();
    assert_eq!(plan.stale_jobs.len(), 1, "{:?}", plan.stale_jobs);
    assert_eq!(plan.stale_jobs[0].id, reserved.job.to_text());
    assert_eq!(plan.stale_jobs[0].outcome, "planned");
    assert_eq!(
        app.store.job(reserved.job).await.unwrap().unwrap().state,
        "pending"
    );

    let done = worker.reconcile(false).await.unwrap();
    assert_eq!(done.stale_jobs[0].outcome, "done", "{:?}", done.stale_jobs);
    wait_active(&app, id).await;
    let (_, revealed) = app.reveal(&id.to_text()).await;
    let d = data(&revealed);
    assert_eq!(d["password"], password.expose());
    use_database(d["connectionString"].as_str().unwrap())
        .await
        .unwrap();

    // The same for a rotate: the new password, already sealed in the job, is applied.
    let new_password = Password::generate();
    app.store
        .insert_rotate_job(app.account, id, key.seal(id, &new_password), None, None)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(worker.reconcile(false).await.unwrap().stale_jobs.len(), 1);
    let started = Instant::now();
    loop {
        let (_, revealed) = app.reveal(&id.to_text()).await;
        if data(&revealed)["password"] == new_password.expose() {
            assert!(can_login(data(&revealed)["connectionString"].as_str().unwrap()).await);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing is left to do.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(worker.reconcile(false).await.unwrap().stale_jobs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_deletions_and_failed_creates_are_finished() {
    let app = app().await;
    let tag = app.tag().await;
    let (_, a) = app.create(json!({"name": "being-deleted"})).await;
    let (_, b) = app.create(json!({"name": "failed-half-way"})).await;
    let (a, b) = (data(&a).clone(), data(&b).clone());
    assert_eq!(engine_databases(&tag).await.len(), 2);
    // A deletion whose job gave up (past its attempts) after the mark, and a create that
    // failed without finishing its cleanup.
    let a_id: DatabaseId = a["id"].as_str().unwrap().parse().unwrap();
    app.store.insert_delete_job(a_id, None).await.unwrap();
    app.metadata_sql("UPDATE jobs SET state = 'failed' WHERE kind = 'delete'")
        .await;
    let n = app
        .metadata_sql(&format!(
            "UPDATE databases SET state = 'failed' WHERE id = '{}'",
            b["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(n, 1);

    let report = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    assert_eq!(
        (report.deletions.len(), report.failed_creates.len()),
        (1, 1),
        "{:?} {:?}",
        report.deletions,
        report.failed_creates
    );
    assert_eq!(report.deletions[0].outcome, "done");
    assert_eq!(report.failed_creates[0].outcome, "done");
    assert!(engine_databases(&tag).await.is_empty());
    assert!(engine_users(&tag).await.is_empty());
    assert!(app.store.database(a_id).await.unwrap().is_none());
    // Both slots are free again.
    for name in ["again-1", "again-2"] {
        assert_eq!(app.create(json!({"name": name})).await.0, 201);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn marked_objects_without_a_row_are_reported_and_left_alone() {
    let app = app().await;
    let tag = app.tag().await;
    let stray = DatabaseId::new();
    let name = format!("um_{tag}_99");
    let mut root = root().await;
    for sql in [
        format!("INSERT INTO hepdb.owners (db_name, mark) VALUES ('{name}', 'hepdb:{stray}')"),
        format!("CREATE DATABASE `{name}`"),
    ] {
        root.query_drop(sql).await.unwrap();
    }

    let report = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    let found = report
        .orphans
        .iter()
        .find(|o| o.id == stray.to_text())
        .expect("the stray database is reported");
    assert_eq!(
        (found.host.as_str(), found.object.as_str()),
        ("mariadb", name.as_str())
    );
    assert_eq!(
        engine_databases(&tag).await,
        [name.as_str()],
        "left in place"
    );
    for sql in [
        format!("DROP DATABASE `{name}`"),
        format!("DELETE FROM hepdb.owners WHERE db_name = '{name}'"),
    ] {
        root.query_drop(sql).await.unwrap();
    }
}

/// Users and roles are orphans too: a create undone between its user and its database (or a
/// drop interrupted after the database) leaves a marked user with no database. The reconciler
/// reports it, on MariaDB and on PostgreSQL, and leaves it alone.
#[tokio::test(flavor = "multi_thread")]
async fn orphan_users_and_roles_are_reported_and_left_alone() {
    let app = app().await;
    let tag = app.tag().await;
    let (maria_id, pg_id) = (DatabaseId::new(), DatabaseId::new());
    let (maria_db, pg_db) = (format!("um_{tag}_98"), format!("um_{tag}_97"));
    let mut root = root().await;
    for sql in [
        format!(
            "INSERT INTO hepdb.owners (db_name, mark) VALUES ('{maria_db}', 'hepdb:{maria_id}')"
        ),
        format!("CREATE USER 'd{maria_db}'@'%' IDENTIFIED BY 'x-Orphan-1'"),
    ] {
        root.query_drop(sql).await.unwrap();
    }
    let (pg, conn) = tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pg.batch_execute(&format!(
        "CREATE ROLE d{pg_db} NOLOGIN; COMMENT ON ROLE d{pg_db} IS 'hepdb:{pg_id}'"
    ))
    .await
    .unwrap();

    let report = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    for (host, id) in [("mariadb", maria_id), ("postgres", pg_id)] {
        let found = report.orphans.iter().find(|o| o.id == id.to_text());
        assert_eq!(
            found.map(|o| o.host.as_str()),
            Some(host),
            "the orphan user on {host} is reported: {:?}",
            report.orphans
        );
    }
    assert_eq!(
        engine_users(&tag).await,
        [format!("d{maria_db}")],
        "left in place"
    );
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&format!("d{pg_db}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "left in place");
    root.query_drop(format!("DROP USER 'd{maria_db}'@'%'"))
        .await
        .unwrap();
    root.query_drop(format!(
        "DELETE FROM hepdb.owners WHERE db_name = '{maria_db}'"
    ))
    .await
    .unwrap();
    pg.batch_execute(&format!("DROP ROLE d{pg_db}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_access_that_drifted_from_metadata_is_brought_back() {
    let app = app().await;
    let (_, created) = app.create(json!({"name": "drifting"})).await;
    let cs = data(&created)["connectionString"]
        .as_str()
        .unwrap()
        .to_owned();
    // Metadata says suspended (say, an operator's suspension whose jobs were never run), while
    // the engine still lets the user in.
    app.metadata_sql(&format!(
        "UPDATE accounts SET suspended = true WHERE id = '{}'",
        app.account
    ))
    .await;
    assert!(can_login(&cs).await);
    let report = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    assert_eq!(report.access.len(), 1, "{:?}", report.access);
    assert_eq!(report.access[0].outcome, "done");
    assert!(!can_login(&cs).await, "locked to match metadata");
    // Nothing left to bring in line.
    let again = app.worker.as_ref().unwrap().reconcile(true).await.unwrap();
    assert!(again.access.is_empty());
}

/// A create that was undone can still leave a marked database behind, when a statement of the
/// abandoned attempt completes on the server afterwards (an engine session killed or timed out
/// mid-statement). Its id is a failed create's, so the reconciler drops it instead of reporting
/// it forever.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_failed_create_leaves_behind_is_dropped_not_reported() {
    use hepdb_core::job::{JobFailure, JobKindWire, JobMessage, MESSAGE_VERSION};
    let app = app().await;
    let tag = app.tag().await;
    let ctx = app.worker.as_ref().unwrap().context();
    let (reserved, _) = app.reserve_intent("abandoned").await;
    let msg = JobMessage {
        v: MESSAGE_VERSION,
        job_id: reserved.job,
        database_id: reserved.database.database_id(),
        kind: JobKindWire::Create,
    };
    app.claimed_by_a_dead_delivery(&msg).await;
    hepdb_worker::jobs::give_up_create(ctx, &msg, JobFailure::EngineUnavailable, None).await;
    assert!(app.store.database(msg.database_id).await.unwrap().is_none());
    // The abandoned attempt's statements land after all.
    let name = reserved.database.db_name.clone();
    let mut root = root().await;
    for sql in [
        format!(
            "INSERT INTO hepdb.owners (db_name, mark) VALUES ('{name}', 'hepdb:{}')",
            msg.database_id
        ),
        format!("CREATE DATABASE `{name}`"),
    ] {
        root.query_drop(sql).await.unwrap();
    }

    let dry = app.worker.as_ref().unwrap().reconcile(true).await.unwrap();
    assert_eq!(
        dry.failed_create_leftovers.len(),
        1,
        "{:?}",
        dry.failed_create_leftovers
    );
    assert_eq!(dry.failed_create_leftovers[0].outcome, "planned");
    let report = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    assert!(
        !report
            .orphans
            .iter()
            .any(|o| o.id == msg.database_id.to_text()),
        "not reported as an orphan"
    );
    assert_eq!(report.failed_create_leftovers.len(), 1);
    assert_eq!(report.failed_create_leftovers[0].outcome, "done");
    assert!(engine_databases(&tag).await.is_empty());
    let claims: Vec<String> = root
        .exec(
            "SELECT db_name FROM hepdb.owners WHERE db_name = ?",
            (&name,),
        )
        .await
        .unwrap();
    assert!(claims.is_empty(), "the claim went with it");
}

/// Retention: a finished job keeps its sealed password only while an idempotent replay may
/// need it, and is deleted after `worker.job_retention_days`; unfinished jobs are never
/// touched, and the database keeps working throughout.
#[tokio::test(flavor = "multi_thread")]
async fn finished_jobs_lose_their_password_then_go() {
    let app = app().await;
    let (s, body) = app.create_keyed(json!({"name": "kept"}), "k-1").await;
    assert_eq!(s, 201, "{body}");
    let id = data(&body)["id"].as_str().unwrap().to_owned();
    let (s, body) = app.rotate(&id).await;
    assert_eq!(s, 200, "{body}");
    let password = data(&body)["password"].as_str().unwrap().to_owned();
    let sealed_jobs = async || {
        app.metadata_sql("SELECT 1 FROM jobs WHERE password_sealed IS NOT NULL")
            .await
    };
    let jobs = async || app.metadata_sql("SELECT 1 FROM jobs").await;
    assert_eq!((sealed_jobs().await, jobs().await), (2, 2));
    let age = |days: u32| {
        format!(
            "UPDATE jobs SET updated_at = now() - interval '{days} days', \
             created_at = now() - interval '{days} days'"
        )
    };
    let reconcile = async || app.worker.as_ref().unwrap().reconcile(false).await.unwrap();

    // Within the idempotency window: nothing goes, and a replay still answers.
    let report = reconcile().await;
    let r = report.job_retention;
    assert_eq!((r.scrubbed, r.deleted), (0, 0));
    let (s, replay) = app.create_keyed(json!({"name": "kept"}), "k-1").await;
    assert_eq!(s, 201, "{replay}");

    // Two days on: the finished jobs lose their sealed password, and stay.
    app.metadata_sql(&age(2)).await;
    let r = reconcile().await.job_retention;
    assert_eq!((r.scrubbed, r.deleted), (2, 0));
    assert_eq!((sealed_jobs().await, jobs().await), (0, 2));
    let (s, body) = app.reveal(&id).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(data(&body)["password"], password.as_str());
    assert!(can_login(data(&body)["connectionString"].as_str().unwrap()).await);

    // Past the retention the finished jobs go, and a job not finished stays whatever its age
    // (called directly: the reconciler would send an old pending job again first).
    let db: DatabaseId = id.parse().unwrap();
    let (pending, _) = app.rotate_intent(db).await;
    app.metadata_sql(&age(31)).await;
    let kept_forever = app.store.apply_job_retention(0).await.unwrap();
    assert_eq!((kept_forever.scrubbed, kept_forever.deleted), (0, 0));
    let r = app.store.apply_job_retention(30).await.unwrap();
    assert_eq!((r.scrubbed, r.deleted), (0, 2));
    assert_eq!((sealed_jobs().await, jobs().await), (1, 1));
    let left = app.store.job(pending.job_id).await.unwrap().unwrap();
    assert_eq!(left.state, "pending");
    let (s, body) = app.reveal(&id).await;
    assert_eq!(s, 200, "{body}");
}

/// The audit log is partitioned by month: the reconciler keeps three months of partitions
/// ahead, and drops whole months once they ended more than `worker.audit_retention_days` ago,
/// finishing a drop an interrupted pass left half-done. Recent entries stay and are listed.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_drops_whole_months_past_retention() {
    let app = spawn_app_with(Options::default(), |s| {
        s.worker.audit_retention_days = 100;
    })
    .await;
    let (s, body) = app.create(json!({"name": "audited"})).await;
    assert_eq!(s, 201, "{body}");
    let (s, _) = app.reveal(data(&body)["id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    let month = |offset: i32| {
        format!(
            "(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '{offset} months')::date"
        )
    };
    // Six and seven months ago, as an older installation holds them; the seventh was detached
    // by a pass that stopped before dropping it.
    for offset in [-6, -7] {
        app.metadata_sql(&format!(
            "SELECT hepdb_ensure_audit_partition({})",
            month(offset)
        ))
        .await;
        app.metadata_sql(&format!(
            "INSERT INTO audit_log (at, actor, action, account_id) \
             VALUES ({}::timestamp AT TIME ZONE 'UTC' + interval '1 day', 'old', 'reveal', 'x')",
            month(offset)
        ))
        .await;
    }
    app.metadata_sql(&format!(
        "ALTER TABLE audit_log DETACH PARTITION audit_log_{}",
        chrono::Utc::now()
            .checked_sub_months(chrono::Months::new(7))
            .unwrap()
            .format("%Y%m")
    ))
    .await;
    let recent = app.store.audit_log(app.account).await.unwrap().len();
    assert!(recent >= 2, "a create and a reveal: {recent}");

    let report = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    assert_eq!(report.audit_retention.dropped.len(), 2, "{report:?}");
    assert_eq!(
        app.metadata_sql("SELECT 1 FROM audit_log WHERE actor = 'old'")
            .await,
        0
    );
    let old_tables = app
        .metadata_sql("SELECT 1 FROM pg_class WHERE relname ~ '^audit_log_[0-9]{6}$' AND relname < 'audit_log_' || to_char(now() - interval '5 months', 'YYYYMM')")
        .await;
    assert_eq!(old_tables, 0, "detached or not, both old months are gone");
    assert_eq!(
        app.store.audit_log(app.account).await.unwrap().len(),
        recent
    );
    let ahead = app
        .metadata_sql(&format!(
            "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_log'::regclass \
             AND c.relname = 'audit_log_' || to_char({}, 'YYYYMM')",
            month(3)
        ))
        .await;
    assert_eq!(ahead, 1, "three months ahead are ready");
    // Nothing more to drop on the next pass; entries still go in.
    let again = app.worker.as_ref().unwrap().reconcile(false).await.unwrap();
    assert!(again.audit_retention.dropped.is_empty());
    let (s, _) = app.reveal(data(&body)["id"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(
        app.store.audit_log(app.account).await.unwrap().len(),
        recent + 1
    );
}
