//! The API end to end on every engine: the returned connection string works with the engine's
//! own client library, rotation takes effect, and tenants cannot reach each other.

use serde_json::{Value, json};

use hepdb_testkit::*;

/// Engine, connection-string scheme and the public port the test settings give it.
const ENGINES: [(&str, &str, u16); 3] = [
    ("mariadb", "mysql", 3306),
    ("postgres", "postgresql", 5433),
    ("mongo", "mongodb", 27017),
];

fn cs(d: &Value) -> &str {
    d["connectionString"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_use_rotate_and_reveal_on_every_engine() {
    let app = spawn_app_with(
        Options {
            slots: Some(3),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    for (engine, scheme, port) in ENGINES {
        let (s, b) = app
            .create(json!({"name": format!("app-{engine}"), "engine": engine}))
            .await;
        assert_eq!(s, 201, "{engine}: {b}");
        let created = data(&b).clone();
        assert_eq!(created["engine"], engine);
        let (user, db, pw) = (
            created["dbUser"].as_str().unwrap(),
            created["dbName"].as_str().unwrap(),
            created["password"].as_str().unwrap(),
        );
        let mut want = format!("{scheme}://{user}:{pw}@127.0.0.1:{port}/{db}");
        if engine == "mongo" {
            want.push_str("?authSource=admin");
        }
        assert_eq!(cs(&created), want);
        use_database(cs(&created))
            .await
            .unwrap_or_else(|e| panic!("{engine}: the returned string works: {e}"));

        let id = created["id"].as_str().unwrap();
        let (s, b) = app.rotate(id).await;
        assert_eq!(s, 200, "{engine}: {b}");
        let rotated = data(&b).clone();
        assert_ne!(rotated["password"], created["password"]);
        assert!(
            !can_login(cs(&created)).await,
            "{engine}: old password refused"
        );
        use_database(cs(&rotated))
            .await
            .unwrap_or_else(|e| panic!("{engine}: new password works: {e}"));
        let (_, b) = app.reveal(id).await;
        assert_eq!(data(&b)["password"], rotated["password"], "{engine}");
        assert_eq!(data(&b)["connectionString"], rotated["connectionString"]);
    }
    let (_, b) = app.list().await;
    let engines: Vec<_> = data(&b)["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["engine"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(engines, ["mariadb", "postgres", "mongo"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_cannot_reach_each_other_on_any_engine() {
    let app = spawn_app().await;
    let (_, other_key) = app.other_tenant().await;
    let other = format!("Bearer {other_key}");
    for (engine, ..) in ENGINES {
        let body = json!({"name": format!("mine-{engine}"), "engine": engine});
        let (s, a) = app.create(body.clone()).await;
        assert_eq!(s, 201, "{a}");
        let (s, b) = app
            .send(
                reqwest::Method::POST,
                "/api/v1/db/databases",
                Some(&other),
                Some(body),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (a, b) = (data(&a), data(&b));
        assert!(can_login(cs(a)).await && can_login(cs(b)).await, "{engine}");

        // A's user and password, pointed at B's database: no login (or, on MongoDB where
        // users live in `admin`, no access to the database).
        let a_into_b = cs(a).replace(
            &format!("/{}", a["dbName"].as_str().unwrap()),
            &format!("/{}", b["dbName"].as_str().unwrap()),
        );
        assert_ne!(a_into_b, cs(a));
        assert!(!can_login(&a_into_b).await, "{engine}: A reached B");
        // B's user with A's password: refused.
        let b_with_a_password = cs(b).replace(
            b["password"].as_str().unwrap(),
            a["password"].as_str().unwrap(),
        );
        assert!(
            !can_login(&b_with_a_password).await,
            "{engine}: wrong password accepted"
        );
    }
}

/// An engine statement that hangs (here: root holds a lock on the tenant's role) is given up
/// after `worker.engine_timeout_secs`: the caller gets an answer in time, the worker serves
/// other databases meanwhile, and once the engine answers again the rotate ends with engine and
/// metadata agreeing on the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_engine_statement_is_bounded_and_settles_when_the_engine_answers() {
    let app = spawn_app_with(Options::default(), |s| {
        s.worker.engine_timeout_secs = 2;
        s.gateway.job_timeout_ms = 8000;
    })
    .await;
    let (s, b) = app
        .create(json!({"name": "hung", "engine": "postgres"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let d = data(&b).clone();
    let (id, cs, old) = (
        d["id"].as_str().unwrap().to_owned(),
        d["connectionString"].as_str().unwrap().to_owned(),
        d["password"].as_str().unwrap().to_owned(),
    );
    let (root, conn) = tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    root.batch_execute(&format!(
        "BEGIN; ALTER ROLE \"{}\" CONNECTION LIMIT 7",
        d["dbUser"].as_str().unwrap()
    ))
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let (s, b) = app.rotate(&id).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(12));
    // The step may have reached the engine and could not be rolled back either: still running.
    assert_error(s, &b, 503, Some("JOB_TIMEOUT"));
    // Meanwhile the worker serves other databases.
    let (s, other) = app.create(json!({"name": "meanwhile"})).await;
    assert_eq!(s, 201, "{other}");

    root.batch_execute("COMMIT").await.unwrap();
    // Once the engine answers again, the rotate ends either way (done, or failed with the
    // previous password put back), and engine and metadata agree on the password.
    let started = std::time::Instant::now();
    while !app.store.stale_jobs(0).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the rotate never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let (_, revealed) = app.reveal(&id).await;
    let current = data(&revealed)["password"].as_str().unwrap().to_owned();
    assert!(use_database(&cs.replace(&old, &current)).await.is_ok());
}
