//! Idempotency-Key on create and rotate: a retry returns the original answer and runs nothing
//! twice; the same key for another request is 422.

use reqwest::Method;
use serde_json::json;

use hepdb_testkit::*;

fn databases(body: &serde_json::Value) -> usize {
    data(body)["databases"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_create_returns_the_same_database_and_password() {
    let app = spawn_app().await;
    let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";
    let (s, first) = app.create_keyed(json!({"name": "once"}), key).await;
    assert_eq!(s, 201, "{first}");
    // The same intent spelled differently is the same request.
    let (s, again) = app
        .create_keyed(json!({"engine": "mariadb", "name": "once"}), key)
        .await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(data(&again), data(&first));
    assert_eq!(databases(&app.list().await.1), 1);
    assert_eq!(engine_databases(&app.tag().await).await.len(), 1);
    assert!(can_login(data(&first)["connectionString"].as_str().unwrap()).await);

    // Same key, different request.
    let (s, b) = app.create_keyed(json!({"name": "other"}), key).await;
    assert_error(s, &b, 422, Some("IDEMPOTENCY_KEY_REUSED"));
    // Keys belong to an account: another tenant's identical key is its own.
    let (_, other_key) = app.other_tenant().await;
    let (s, b) = app
        .send_with(
            Method::POST,
            "/api/v1/db/databases",
            Some(&format!("Bearer {other_key}")),
            Some(json!({"name": "once"})),
            &[("Idempotency-Key", key)],
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_ne!(data(&b)["id"], data(&first)["id"]);
    // Without a key, the name is simply taken.
    assert_eq!(app.create(json!({"name": "once"})).await.0, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_with_one_key_make_one_database() {
    let app = spawn_app_with(
        Options {
            slots: Some(5),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let answers = futures_util::future::join_all(
        (0..5).map(|_| app.create_keyed(json!({"name": "raced"}), "race-key")),
    )
    .await;
    let first = data(&answers[0].1).clone();
    for (s, b) in &answers {
        assert_eq!(*s, 201, "{b}");
        assert_eq!(data(b), &first);
    }
    assert_eq!(engine_databases(&app.tag().await).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_rotate_rotates_once() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "r"})).await;
    let id = data(&created)["id"].as_str().unwrap();
    let (s, first) = app.rotate_keyed(id, "rotate-1").await;
    assert_eq!(s, 200, "{first}");
    let (s, again) = app.rotate_keyed(id, "rotate-1").await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(data(&again), data(&first));
    let (_, revealed) = app.reveal(id).await;
    assert_eq!(data(&revealed)["password"], data(&first)["password"]);
    assert!(can_login(data(&first)["connectionString"].as_str().unwrap()).await);
    // The key names this rotate of this database; for another database it is a new request.
    let (_, other) = app.create(json!({"name": "r2"})).await;
    let (s, b) = app
        .rotate_keyed(data(&other)["id"].as_str().unwrap(), "rotate-1")
        .await;
    assert_error(s, &b, 422, Some("IDEMPOTENCY_KEY_REUSED"));
    // A new key is a new rotate, and the replayed password is then no longer current.
    let (s, next) = app.rotate_keyed(id, "rotate-2").await;
    assert_eq!(s, 200);
    assert_ne!(data(&next)["password"], data(&first)["password"]);
    assert!(!can_login(data(&first)["connectionString"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_whose_attempt_changed_nothing_can_be_retried() {
    let mut app = spawn_app_with(
        Options {
            no_worker: true,
            ..Default::default()
        },
        |s| s.gateway.job_timeout_ms = 1000,
    )
    .await;
    let (s, b) = app.create_keyed(json!({"name": "later"}), "k1").await;
    assert_error(s, &b, 503, Some("WORKER_UNAVAILABLE"));
    app.start_worker().await;
    let (s, b) = app.create_keyed(json!({"name": "later"}), "k1").await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.create_keyed(json!({"name": "later"}), "k1").await.1, b);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_keys_are_400() {
    let app = spawn_app().await;
    for key in ["", &"k".repeat(256), "with space"] {
        let (s, b) = app.create_keyed(json!({"name": "x"}), key).await;
        assert_error(s, &b, 400, Some("BAD_REQUEST"));
    }
    assert_eq!(databases(&app.list().await.1), 0);
}
