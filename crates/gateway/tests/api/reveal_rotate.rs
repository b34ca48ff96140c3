use reqwest::Method;
use serde_json::json;

use hepdb_testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn reveal_returns_the_current_password_and_status() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "my-app"})).await;
    let created = data(&created).clone();
    let (s, b) = app.reveal(created["id"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{b}");
    let d = data(&b);
    assert_eq!(
        keys(d),
        [
            "connectionString",
            "createdAt",
            "dbName",
            "dbUser",
            "engine",
            "id",
            "name",
            "password",
            "sizeBytes",
            "sizeRefreshedAt",
            "status"
        ]
    );
    for field in [
        "id",
        "name",
        "engine",
        "dbName",
        "dbUser",
        "password",
        "connectionString",
    ] {
        assert_eq!(d[field], created[field], "{field}");
    }
    assert_eq!(d["status"], "active");
    assert!(can_login(d["connectionString"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn reveal_and_rotate_of_anything_not_owned_are_404() {
    let app = spawn_app().await;
    let (_, key) = app.other_tenant().await;
    let (_, theirs) = app
        .send(
            Method::POST,
            "/api/v1/db/databases",
            Some(&key),
            Some(json!({"name": "theirs"})),
        )
        .await;
    let theirs = data(&theirs)["id"].as_str().unwrap().to_owned();
    let missing = hepdb_core::DatabaseId::new().to_text();
    for id in [theirs.as_str(), missing.as_str(), "not-a-ulid", "01HV"] {
        let (s, b) = app.reveal(id).await;
        assert_error(s, &b, 404, Some("NOT_FOUND"));
        let (s, b) = app.rotate(id).await;
        assert_error(s, &b, 404, Some("NOT_FOUND"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_refuses_the_old_password_and_reveal_returns_the_new() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "my-app"})).await;
    let created = data(&created).clone();
    let id = created["id"].as_str().unwrap();
    let old = created["connectionString"].as_str().unwrap();
    use_database(old).await.unwrap();

    let (s, b) = app.rotate(id).await;
    assert_eq!(s, 200, "{b}");
    let rotated = data(&b);
    assert_eq!(
        keys(rotated),
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
    assert_ne!(rotated["password"], created["password"]);
    assert_eq!(rotated["dbUser"], created["dbUser"]);
    let new = rotated["connectionString"].as_str().unwrap();

    assert!(
        !can_login(old).await,
        "old password must be refused right after the 200"
    );
    use_database(new)
        .await
        .expect("new password works, and the data survived");
    let (_, revealed) = app.reveal(id).await;
    assert_eq!(data(&revealed)["password"], rotated["password"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_rotates_leave_reveal_consistent_with_the_engine() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "busy"})).await;
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    let results = futures_util::future::join_all((0..8).map(|_| app.rotate(&id))).await;
    let mut strings = vec![];
    for (s, b) in &results {
        assert_eq!(*s, 200, "{b}");
        strings.push(data(b)["connectionString"].as_str().unwrap().to_owned());
    }
    let (_, revealed) = app.reveal(&id).await;
    let current = data(&revealed)["connectionString"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(strings.contains(&current));
    for cs in strings.iter().chain(
        [data(&created)["connectionString"]
            .as_str()
            .unwrap()
            .to_owned()]
        .iter(),
    ) {
        assert_eq!(
            can_login(cs).await,
            *cs == current,
            "only reveal's password may log in"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_stored_sealed_and_hashed() {
    let app = spawn_app().await;
    let (_, created) = app.create(json!({"name": "sealed"})).await;
    let pw = data(&created)["password"].as_str().unwrap().to_owned();
    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
        app.settings.metadata.url.expose(),
    )
    .await
    .unwrap();
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Dump {
        #[diesel(sql_type = diesel::sql_types::Text)]
        dump: String,
    }
    let dump: Vec<Dump> = diesel::sql_query(
        "SELECT concat_ws(' ', d::text, k::text, j::text) AS dump FROM databases d \
         CROSS JOIN api_keys k LEFT JOIN jobs j ON j.database_id = d.id",
    )
    .load::<Dump>(&mut conn)
    .await
    .unwrap();
    assert!(!dump.is_empty());
    for row in dump {
        let text = row.dump.to_lowercase();
        assert!(!text.contains(&pw.to_lowercase()) && !text.contains(&hex(pw.as_bytes())));
        assert!(
            !text.contains(&app.key.to_lowercase()) && !text.contains(&hex(app.key.as_bytes()))
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
