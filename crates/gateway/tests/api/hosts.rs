//! A pool of engine hosts: placement by free capacity, capacity exhaustion, draining, and one
//! host stopped while the other keeps serving. The second MariaDB server is this test's own
//! `mariadbd` (its own port and data directory), which it stops and starts by pid.

use hepdb_core::settings::{HostSettings, Secret};
use hepdb_worker::engines::MariaDb;
use serde_json::{Value, json};

use hepdb_testkit::{servers::PrivateMariadb, *};

fn host(url: &str, port: u16, capacity: u32) -> HostSettings {
    HostSettings {
        admin_url: Some(Secret::new(url)),
        public_host: "127.0.0.1".into(),
        public_port: port,
        capacity,
        tenant_connection_limit: hepdb_core::settings::DEFAULT_TENANT_CONNECTION_LIMIT,
    }
}

/// Two MariaDB hosts: `maria-a` (the machine's, 3306) and `maria-b` (the second server).
async fn two_host_app(b: &PrivateMariadb, cap_a: u32, cap_b: u32) -> TestApp {
    let provisioner =
        |port: u16| format!("mysql://hepdb_provisioner:hepdb-dev-provisioner@127.0.0.1:{port}");
    let (a_url, b_url) = (provisioner(3306), provisioner(b.port));
    MariaDb::bootstrap(&b.root_url(), &b_url).await.unwrap();
    let port_b = b.port;
    spawn_app_with(
        Options {
            slots: Some(20),
            ..Default::default()
        },
        move |s| {
            let hosts = &mut s.engines.mariadb.hosts;
            hosts.insert("maria-a".into(), host(&a_url, 3306, cap_a));
            hosts.insert("maria-b".into(), host(&b_url, port_b, cap_b));
            s.gateway.job_timeout_ms = 8000;
        },
    )
    .await
}

fn port_of(d: &Value) -> u16 {
    let cs = d["connectionString"].as_str().unwrap();
    let after_at = cs.rsplit_once('@').unwrap().1;
    after_at.split(['/', ':']).nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_drain_and_a_host_outage() {
    let mut b = PrivateMariadb::start(false);

    // Placement goes to the host with the most free room (ties by name), until all are full.
    let app = two_host_app(&b, 1, 2).await;
    let mut ports = vec![];
    for i in 0..3 {
        let (s, body) = app.create(json!({"name": format!("p{i}")})).await;
        assert_eq!(s, 201, "{body}");
        let d = data(&body);
        use_database(d["connectionString"].as_str().unwrap())
            .await
            .unwrap();
        ports.push(port_of(d));
    }
    assert_eq!(ports, [b.port, 3306, b.port]);
    let (s, body) = app.create(json!({"name": "full"})).await;
    assert_error(s, &body, 503, Some("NO_CAPACITY"));
    let summary: Vec<_> = app
        .store
        .host_summaries()
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.host.engine == "mariadb")
        .map(|h| (h.host.name, h.databases, h.host.capacity))
        .collect();
    assert_eq!(
        summary,
        [("maria-a".into(), 1, 1), ("maria-b".into(), 2, 2)]
    );
    assert_eq!(app.placement_counts_disagree().await, 0);

    // Draining: no new placements on maria-b even though it has more room.
    let app = two_host_app(&b, 10, 10).await;
    let on_a = data(&app.create(json!({"name": "a1"})).await.1).clone();
    let on_b = data(&app.create(json!({"name": "b1"})).await.1).clone();
    assert_eq!((port_of(&on_a), port_of(&on_b)), (3306, b.port));
    // Four more on maria-b: two to fail during its outage, one to be deleted, and one whose
    // engine access drifts.
    assert!(app.store.set_drained("maria-a", true).await.unwrap());
    let mut on_b_too = Vec::new();
    for name in ["b2", "b3", "b4", "b5"] {
        let (s, body) = app.create(json!({"name": name})).await;
        assert_eq!((s.as_u16(), port_of(data(&body))), (201, b.port), "{body}");
        on_b_too.push(data(&body).clone());
    }
    let (doomed, rest) = on_b_too.split_at(2);
    let (deleted, drifted) = (&rest[0], &rest[1]);
    assert!(app.store.set_drained("maria-a", false).await.unwrap());
    assert!(app.store.set_drained("maria-b", true).await.unwrap());
    for name in ["a2", "a3"] {
        let (s, body) = app.create(json!({"name": name})).await;
        assert_eq!((s.as_u16(), port_of(data(&body))), (201, 3306), "{body}");
    }

    // maria-b goes down: only operations on its databases fail, with a code; nothing changes.
    b.stop();
    let b_id = on_b["id"].as_str().unwrap();
    let (s, body) = app.rotate(b_id).await;
    assert_error(s, &body, 503, Some("ENGINE_UNAVAILABLE"));
    let (s, body) = app.reveal(b_id).await;
    assert_eq!(s, 200, "reveal needs only metadata: {body}");
    assert_eq!(data(&body)["password"], on_b["password"]);
    let (s, body) = app.rotate(on_a["id"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{body}");
    use_database(data(&body)["connectionString"].as_str().unwrap())
        .await
        .unwrap();
    let (s, body) = app.create(json!({"name": "a4"})).await;
    assert_eq!((s.as_u16(), port_of(data(&body))), (201, 3306), "{body}");

    // On maria-b, an interrupted deletion, creates left failed with their cleanup undone, and
    // engine access that drifted from metadata: a reconciler pass tries the host once, finds
    // it down, and leaves its other rows for the next pass instead of waiting out the engine
    // timeout for each.
    let set = async |d: &Value, what: &str| {
        let id = d["id"].as_str().unwrap();
        let sql = format!("UPDATE databases SET {what} WHERE id = '{id}'");
        assert_eq!(app.metadata_sql(&sql).await, 1);
    };
    for d in doomed {
        set(d, "state = 'failed'").await;
    }
    set(deleted, "state = 'deleting', engine_access = 'locked'").await;
    set(drifted, "engine_access = 'locked'").await;
    let worker = app.worker.as_ref().unwrap();
    // What a reconciler pass did with the deletion, each failed create and the drift.
    let pass = async || -> [Vec<String>; 3] {
        let report = worker.reconcile(false).await.unwrap();
        [report.deletions, report.failed_creates, report.access]
            .map(|actions| actions.into_iter().map(|a| a.outcome).collect())
    };
    let skipped = "error: host maria-b unavailable earlier in this pass; next pass";
    let [deletions, failed, access] = pass().await;
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert!(
        deletions[0].starts_with("error") && deletions[0] != skipped,
        "{deletions:?}"
    );
    assert_eq!(failed, [skipped, skipped]);
    assert_eq!(access, [skipped]);

    // Back up: the next pass cleans up the failed creates and brings the access back; the
    // deletion's job, left open by the outage, goes through the broker once it is stale.
    b.run();
    let [deletions, failed, access] = pass().await;
    assert!(deletions.is_empty(), "{deletions:?}");
    assert_eq!(failed, ["done", "done"]);
    assert_eq!(access, ["done"]);
    for d in doomed {
        assert!(!can_login(d["connectionString"].as_str().unwrap()).await);
    }
    use_database(drifted["connectionString"].as_str().unwrap())
        .await
        .unwrap();
    let sql = "UPDATE jobs SET updated_at = now() - interval '1 day' WHERE state IN ('pending', 'running')";
    assert_eq!(app.metadata_sql(sql).await, 1);
    let [deletions, ..] = pass().await;
    assert!(deletions.is_empty(), "{deletions:?}");
    let gone = format!(
        "SELECT 1 FROM databases WHERE id = '{}'",
        deleted["id"].as_str().unwrap()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.metadata_sql(&gone).await == 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!can_login(deleted["connectionString"].as_str().unwrap()).await);

    assert_eq!(app.placement_counts_disagree().await, 0);
    assert!(can_login(on_b["connectionString"].as_str().unwrap()).await);
    let (s, body) = app.rotate(b_id).await;
    assert_eq!(s, 200, "{body}");
    assert!(!can_login(on_b["connectionString"].as_str().unwrap()).await);
    use_database(data(&body)["connectionString"].as_str().unwrap())
        .await
        .unwrap();

    // maria-b down again, and the account over its quota: a quota pass measures the other
    // hosts, and applies the access change there; the changes on maria-b, which it could not
    // measure, wait for the reconciler instead of each waiting out the engine timeout.
    b.stop();
    set(&on_b, "size_bytes = 1000000000000000").await;
    let report = worker.quota_pass(None).await.unwrap();
    assert_eq!(report.unreachable_hosts, ["maria-b"]);
    let on_maria_b = [&on_b, drifted].map(|d| d["id"].as_str().unwrap().to_owned());
    let applied: Vec<(bool, bool)> = report
        .changes
        .iter()
        .map(|c| (on_maria_b.contains(&c.database), c.applied))
        .collect();
    assert_eq!(applied.len(), 6, "{:?}", report.changes);
    assert!(
        applied.iter().all(|(b, applied)| b != applied),
        "{applied:?}"
    );
    // Never tried: their jobs wait, attempt-free, for a delivery once the host is back.
    let untried = format!(
        "SELECT 1 FROM jobs WHERE kind = 'access' AND state = 'pending' AND attempts = 0 \
         AND database_id IN ('{}', '{}')",
        on_maria_b[0], on_maria_b[1]
    );
    assert_eq!(app.metadata_sql(&untried).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_creates_of_many_accounts_never_overfill_a_host() {
    let app = spawn_app_with(Options::default(), |s| {
        s.engines.mariadb.single.capacity = 3;
    })
    .await;
    let mut keys = vec![app.bearer()];
    for _ in 0..2 {
        keys.push(format!("Bearer {}", app.other_tenant().await.1));
    }
    let requests = keys.iter().flat_map(|key| {
        (0..3).map(|i| {
            app.send(
                reqwest::Method::POST,
                "/api/v1/db/databases",
                Some(key),
                Some(json!({"name": format!("race-{i}")})),
            )
        })
    });
    let answers = futures_util::future::join_all(requests).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    for (s, b) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_error(*s, b, 503, Some("NO_CAPACITY"));
    }
    assert_eq!(created, 3, "capacity 3 holds exactly 3: {answers:?}");
    let host = app.store.host_summaries().await.unwrap();
    let mariadb = host.iter().find(|h| h.host.name == "mariadb").unwrap();
    assert_eq!((mariadb.databases, mariadb.placement_count), (3, 3));
    assert_eq!(app.placement_counts_disagree().await, 0);
}

/// Placement reads each host's count from its row, kept by triggers: it follows every write
/// of a database row, whoever makes it (here, an operator's SQL), and placement obeys it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hosts_placement_count_follows_every_change_of_its_databases() {
    let app = spawn_app_with(
        Options {
            slots: Some(20),
            ..Default::default()
        },
        |s| s.engines.mariadb.single.capacity = 3,
    )
    .await;
    let mut ids = vec![];
    for name in ["a", "b", "c"] {
        let (s, body) = app.create(json!({"name": name})).await;
        assert_eq!(s, 201, "{body}");
        ids.push(data(&body)["id"].as_str().unwrap().to_owned());
    }
    let count = async || {
        let hosts = app.store.host_summaries().await.unwrap();
        let h = hosts.iter().find(|h| h.host.name == "mariadb").unwrap();
        assert_eq!(app.placement_counts_disagree().await, 0);
        h.placement_count
    };
    assert_eq!(count().await, 3);
    let (s, body) = app.create(json!({"name": "full"})).await;
    assert_error(s, &body, 503, Some("NO_CAPACITY"));
    let a = &ids[0];
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'over_quota' WHERE id = '{a}'"
    ))
    .await;
    assert_eq!(count().await, 3, "a state that holds a slot still counts");
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'failed' WHERE id = '{a}'"
    ))
    .await;
    assert_eq!(count().await, 2, "a failed create holds no slot");
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'active' WHERE id = '{a}'"
    ))
    .await;
    assert_eq!(count().await, 3);
    app.metadata_sql(
        "INSERT INTO engine_hosts (name, engine, public_host, public_port, capacity) \
         VALUES ('spare', 'mariadb', '127.0.0.1', 3306, 5)",
    )
    .await;
    app.metadata_sql(&format!(
        "UPDATE databases SET host = 'spare' WHERE id = '{a}'"
    ))
    .await;
    assert_eq!(count().await, 2, "a database moved away frees its place");
    app.metadata_sql(&format!("DELETE FROM databases WHERE id = '{}'", ids[1]))
        .await;
    assert_eq!(count().await, 1, "a deleted row frees its place");
    for name in ["d", "e"] {
        let (s, body) = app.create(json!({"name": name})).await;
        assert_eq!(s, 201, "{body}");
    }
    assert_eq!(count().await, 3);
    let (s, body) = app.create(json!({"name": "full-again"})).await;
    assert_error(s, &body, 503, Some("NO_CAPACITY"));

    // The migration counts what is there when it runs: undone and run again, it agrees.
    let url = app.settings.metadata.url.expose();
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for sql in [
        include_str!("../../../../migrations/2026-11-29-000006_host_database_counts/down.sql"),
        include_str!("../../../../migrations/2026-11-29-000006_host_database_counts/up.sql"),
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    assert_eq!(count().await, 3);
}

/// An app whose only MariaDB host is `b`, each tenant user allowed `limit` sessions.
async fn b_only_app(b: &PrivateMariadb, limit: u32) -> TestApp {
    let url = format!(
        "mysql://hepdb_provisioner:hepdb-dev-provisioner@127.0.0.1:{}",
        b.port
    );
    MariaDb::bootstrap(&b.root_url(), &url).await.unwrap();
    let port = b.port;
    spawn_app_with(Options::default(), move |s| {
        let mut only = host(&url, port, 10);
        only.tenant_connection_limit = limit;
        s.engines.mariadb.hosts.insert("maria-b".into(), only);
        s.gateway.job_timeout_ms = 8000;
    })
    .await
}

/// A rotate whose engine step fails after the new password reached the engine, and whose
/// rollback fails too, leaves the engine holding the new password: the job stays open, and a
/// later delivery finishes it. It is never marked failed in that state. Here the login check
/// fails because the tenant is at its connection limit, and the rollback because metadata's
/// sealed password cannot be opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotate_that_cannot_be_rolled_back_stays_open_and_finishes_later() {
    use hepdb_core::job::JobOutcome;
    use hepdb_worker::jobs::{Disposition, handle};
    let b = PrivateMariadb::start(false);
    let app = b_only_app(&b, 2).await;
    let (s, body) = app.create(json!({"name": "rotating"})).await;
    assert_eq!(s, 201, "{body}");
    let d = data(&body).clone();
    let (cs, old) = (
        d["connectionString"].as_str().unwrap().to_owned(),
        d["password"].as_str().unwrap().to_owned(),
    );
    let id: hepdb_core::DatabaseId = d["id"].as_str().unwrap().parse().unwrap();
    let (msg, new) = app.rotate_intent(id).await;
    let job = msg.job_id;
    let session = |cs: String| async move {
        let opts = mysql_async::Opts::from_url(&cs).unwrap();
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false)).await
    };
    let mut held = vec![
        session(cs.clone()).await.unwrap(),
        session(cs.clone()).await.unwrap(),
    ];
    let original: Vec<u8> = app
        .store
        .database(id)
        .await
        .unwrap()
        .unwrap()
        .password_sealed;
    let hex: String = original.iter().map(|b| format!("{b:02x}")).collect();
    let sealed_sql = |bytes: &str| {
        format!("UPDATE databases SET password_sealed = decode('{bytes}', 'hex') WHERE id = '{id}'")
    };
    assert_eq!(app.metadata_sql(&sealed_sql("00")).await, 1);

    let ctx = app.worker.as_ref().unwrap().context();
    assert_eq!(handle(ctx, &msg).await, Disposition::Retry);
    let state = app.store.job(job).await.unwrap().unwrap().state;
    assert_eq!(state, "running", "left open, not failed");
    // Freed for the check below; the server counts a session until it has closed it, so the
    // check tries for a moment.
    held.pop().unwrap().disconnect().await.unwrap();
    let new_cs = cs.replace(&old, new.expose());
    let mut logged_in = false;
    for _ in 0..20 {
        if session(new_cs.clone()).await.is_ok() {
            logged_in = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged_in, "the engine holds the new password");

    assert_eq!(app.metadata_sql(&sealed_sql(&hex)).await, 1);
    drop(held);
    assert_eq!(
        handle(ctx, &msg).await,
        Disposition::Finished {
            outcome: JobOutcome::Done,
            dead_letter: None
        }
    );
    assert!(use_database(&new_cs).await.is_ok());
    assert!(
        use_database(&cs).await.is_err(),
        "the old password is refused"
    );
    let (_, revealed) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/db/databases/{id}"),
            Some(&app.key),
            None,
        )
        .await;
    assert_eq!(data(&revealed)["password"], new.expose());
}

/// A tenant at its connection limit leaves room for everyone else, and a server that refuses
/// connections altogether is `503 ENGINE_UNAVAILABLE`, never 500.
#[tokio::test(flavor = "multi_thread")]
async fn connection_limits_and_a_full_server() {
    let b = PrivateMariadb::start(false);
    let port = b.port;
    let app = b_only_app(&b, 2).await;
    let (s, body) = app.create(json!({"name": "busy"})).await;
    assert_eq!(s, 201, "{body}");
    let cs = data(&body)["connectionString"].as_str().unwrap().to_owned();
    let session = || async {
        let opts = mysql_async::Opts::from_url(&cs).unwrap();
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false)).await
    };
    let held = [session().await.unwrap(), session().await.unwrap()];
    assert!(session().await.is_err(), "a third session");
    let (s, body) = app.create(json!({"name": "neighbour"})).await;
    assert_eq!(
        s, 201,
        "hepdb keeps working beside a tenant at its limit: {body}"
    );

    let opts = mysql_async::Opts::from_url(&b.root_url()).unwrap();
    let mut root =
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
            .await
            .unwrap();
    use mysql_async::prelude::Queryable;
    // The whole server is full: its smallest max_connections, taken by another client.
    root.query_drop("CREATE USER filler@'%' IDENTIFIED BY 'filler'")
        .await
        .unwrap();
    root.query_drop("SET GLOBAL max_connections = 10")
        .await
        .unwrap();
    let filler = format!("mysql://filler:filler@127.0.0.1:{port}");
    let mut fillers = vec![];
    for _ in 0..20 {
        let opts = mysql_async::Opts::from_url(&filler).unwrap();
        let opts = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false);
        match mysql_async::Conn::new(opts).await {
            Ok(c) => fillers.push(c),
            Err(_) => break,
        }
    }
    assert!(fillers.len() < 20, "the server never filled up");
    let (s, body) = app.create(json!({"name": "refused"})).await;
    assert_error(s, &body, 503, Some("ENGINE_UNAVAILABLE"));
    drop(fillers);
    root.query_drop("SET GLOBAL max_connections = 151")
        .await
        .unwrap();
    drop(held);
    let (s, body) = app.create(json!({"name": "again"})).await;
    assert_eq!(s, 201, "{body}");
}
