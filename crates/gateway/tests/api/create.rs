use serde_json::json;

use hepdb_testkit::*;

fn is_name(s: &str, prefix: &str, tag: &str, n: u32) -> bool {
    s == format!("{prefix}_{tag}_{n}")
}

#[tokio::test(flavor = "multi_thread")]
async fn create_returns_credentials_that_really_connect() {
    let app = spawn_app().await;
    let (s, b) = app
        .create(json!({"name": "my-app", "engine": "mariadb"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let d = data(&b);
    assert_eq!(
        keys(d),
        [
            "connectionString",
            "dbName",
            "dbUser",
            "engine",
            "id",
            "name",
            "password"
        ]
    );
    assert_eq!(d["name"], "my-app");
    assert_eq!(d["engine"], "mariadb");
    let tag = app.tag().await;
    assert!(is_name(d["dbName"].as_str().unwrap(), "um", &tag, 1), "{d}");
    assert!(
        is_name(d["dbUser"].as_str().unwrap(), "dum", &tag, 1),
        "{d}"
    );
    assert_eq!(d["id"].as_str().unwrap().len(), 26);
    let pw = d["password"].as_str().unwrap();
    assert!(
        pw.len() >= 32 && pw.bytes().all(|c| c.is_ascii_alphanumeric()),
        "{pw}"
    );
    let cs = d["connectionString"].as_str().unwrap();
    assert_eq!(
        cs,
        format!(
            "mysql://{}:{pw}@127.0.0.1:3306/{}",
            d["dbUser"].as_str().unwrap(),
            d["dbName"].as_str().unwrap()
        )
    );
    use_database(cs)
        .await
        .expect("the returned connection string works");
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_defaults_to_mariadb_and_names_count_up_per_account() {
    let app = spawn_app().await;
    let tag = app.tag().await;
    for n in 1..=2 {
        let (s, b) = app.create(json!({"name": format!("db{n}")})).await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(data(&b)["engine"], "mariadb");
        assert!(is_name(data(&b)["dbName"].as_str().unwrap(), "um", &tag, n));
    }
    // Another account has its own tag and its own count.
    let (_, key) = app.other_tenant().await;
    let (s, b) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/db/databases",
            Some(&key),
            Some(json!({"name": "db1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let name = data(&b)["dbName"].as_str().unwrap();
    assert!(name.ends_with("_1") && !name.contains(&tag), "{name}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_names_are_400_without_code() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "-leading-dash"}),
        json!({"name": "_leading"}),
        json!({"name": "has space"}),
        json!({"name": "semi;colon"}),
        json!({"name": "x".repeat(64)}),
    ] {
        let (s, b) = app.create(body.clone()).await;
        assert_error(s, &b, 400, None);
    }
    let (s, _) = app.create(json!({"name": "x".repeat(63)})).await;
    assert_eq!(s, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_name_is_409_without_code() {
    let app = spawn_app().await;
    assert_eq!(app.create(json!({"name": "my-app"})).await.0, 201);
    let (s, b) = app.create(json!({"name": "my-app"})).await;
    assert_error(s, &b, 409, None);
    // Names are per account.
    let (_, key) = app.other_tenant().await;
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/db/databases",
            Some(&key),
            Some(json!({"name": "my-app"})),
        )
        .await;
    assert_eq!(s, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_or_unknown_engine_is_engine_disabled() {
    let app = spawn_app_with(Options::default(), |s| {
        s.engines.postgres.enabled = false;
        s.engines.mongo.enabled = false;
    })
    .await;
    for engine in ["postgres", "mongo", "oracle", "MariaDB"] {
        let (s, b) = app.create(json!({"name": "x", "engine": engine})).await;
        assert_error(s, &b, 400, Some("ENGINE_DISABLED"));
    }
    assert!(
        data(&app.list().await.1)["databases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_free_slot_is_402() {
    let app = spawn_app_with(
        Options {
            slots: Some(1),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    assert_eq!(app.create(json!({"name": "a"})).await.0, 201);
    let (s, b) = app.create(json!({"name": "b"})).await;
    assert_error(s, &b, 402, Some("OUT_OF_SLOTS"));
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_creates_against_k_slots_create_exactly_k() {
    let app = spawn_app_with(
        Options {
            slots: Some(3),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let requests = (0..12).map(|i| app.create(json!({"name": format!("p{i}")})));
    let results = futures_util::future::join_all(requests).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == 402 && b["code"] == "OUT_OF_SLOTS")
        .count();
    assert_eq!((created, refused), (3, 9), "{results:?}");
    assert_eq!(
        data(&app.list().await.1)["databases"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let tag = app.tag().await;
    assert_eq!(engine_databases(&tag).await.len(), 3);
    assert_eq!(engine_users(&tag).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_every_database_oldest_first_without_secrets() {
    let app = spawn_app().await;
    let mut ids = vec![];
    for name in ["first", "second"] {
        ids.push(data(&app.create(json!({"name": name})).await.1)["id"].clone());
    }
    let (s, b) = app.list().await;
    assert_eq!(s, 200);
    let list = data(&b)["databases"].as_array().unwrap().clone();
    assert_eq!(
        list.iter().map(|d| d["id"].clone()).collect::<Vec<_>>(),
        ids
    );
    for d in &list {
        assert_eq!(
            keys(d),
            [
                "createdAt",
                "dbName",
                "dbUser",
                "engine",
                "id",
                "name",
                "sizeBytes",
                "sizeRefreshedAt",
                "status"
            ]
        );
        assert_eq!(d["status"], "active");
        assert_eq!(d["sizeBytes"], 0);
        assert!(d["sizeRefreshedAt"].is_null());
        let created = d["createdAt"].as_str().unwrap();
        assert_eq!(created.len(), 24, "{created}");
        assert!(
            created.ends_with('Z') && created.as_bytes()[19] == b'.',
            "{created}"
        );
    }
    assert!(!b.to_string().contains("password"));
    // Another account sees none of them.
    let (_, key) = app.other_tenant().await;
    let (_, b) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/db/databases",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(data(&b)["databases"], json!([]));
}
