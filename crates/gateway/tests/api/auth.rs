use reqwest::Method;

use hepdb_testkit::*;

const LIST: &str = "/api/v1/db/databases";

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_empty_key_is_no_key() {
    let app = spawn_app().await;
    for auth in [None, Some(""), Some("Bearer "), Some("Token"), Some("   ")] {
        let (s, b) = app.send(Method::GET, LIST, auth, None).await;
        assert_error(s, &b, 401, Some("NO_KEY"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_or_malformed_key_is_bad_key() {
    let app = spawn_app().await;
    let unknown = hepdb_core::secret::ApiKey::generate();
    for auth in [
        format!("Bearer {}", unknown.expose()),
        "Bearer hepgg_db_tooshort".into(),
        "Bearer not-a-key-at-all".into(),
        format!("Basic {}", app.key),
    ] {
        let (s, b) = app.send(Method::GET, LIST, Some(&auth), None).await;
        assert_error(s, &b, 401, Some("BAD_KEY"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_and_raw_forms_are_accepted() {
    let app = spawn_app().await;
    for auth in [
        format!("Bearer {}", app.key),
        format!("Token {}", app.key),
        app.key.clone(),
    ] {
        let (s, b) = app.send(Method::GET, LIST, Some(&auth), None).await;
        assert_eq!(s, 200, "{auth:.10}: {b}");
        assert_eq!(data(&b)["databases"], serde_json::json!([]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_a_key_takes_effect_on_the_next_request() {
    let app = spawn_app().await;
    let (key_id, key) = app.store.mint_key(app.account).await.unwrap().unwrap();
    let auth = format!("Bearer {}", key.expose());
    assert_eq!(app.send(Method::GET, LIST, Some(&auth), None).await.0, 200);

    assert!(
        app.store
            .set_key_enabled(key_id, false, None)
            .await
            .unwrap()
            .is_some()
    );
    let (s, b) = app.send(Method::GET, LIST, Some(&auth), None).await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));
    // The account's other key is unaffected.
    assert_eq!(
        app.send(Method::GET, LIST, Some(&app.bearer()), None)
            .await
            .0,
        200
    );

    assert!(
        app.store
            .set_key_enabled(key_id, true, None)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(app.send(Method::GET, LIST, Some(&auth), None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn suspension_disables_keys_and_unsuspension_restores_only_those() {
    let app = spawn_app().await;
    let (owner_disabled, k2) = app.store.mint_key(app.account).await.unwrap().unwrap();
    app.store
        .set_key_enabled(owner_disabled, false, None)
        .await
        .unwrap();

    assert_eq!(
        app.store
            .suspend_account(app.account, None)
            .await
            .unwrap()
            .map(|s| s.keys),
        Some(1)
    );
    let (s, b) = app.list().await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));

    assert_eq!(
        app.store
            .unsuspend_account(app.account, None)
            .await
            .unwrap()
            .map(|s| s.keys),
        Some(1)
    );
    assert_eq!(app.list().await.0, 200);
    let (s, b) = app
        .send(
            Method::GET,
            LIST,
            Some(&format!("Bearer {}", k2.expose())),
            None,
        )
        .await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn account_without_database_access_is_forbidden_without_code() {
    let app = spawn_app().await;
    let update = hepdb_store::accounts::AccountUpdate {
        db_access: Some(false),
        ..Default::default()
    };
    app.store
        .update_account(app.account, &update, None)
        .await
        .unwrap();
    let (s, b) = app.list().await;
    assert_error(s, &b, 403, None);
    let (s, b) = app.create(serde_json::json!({"name": "x"})).await;
    assert_error(s, &b, 403, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_checks_the_key_before_it_shows_anything() {
    let app = spawn_app().await;
    let (_, created) = app.create(serde_json::json!({"name": "guarded"})).await;
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    let (key_id, key) = app.store.mint_key(app.account).await.unwrap().unwrap();
    assert!(
        app.store
            .set_key_enabled(key_id, false, None)
            .await
            .unwrap()
            .is_some()
    );
    let auth = format!("Bearer {}", key.expose());
    let reveal = format!("{LIST}/{id}");
    let rotate = format!("{LIST}/{id}/rotate");
    for (method, path) in [
        (Method::GET, LIST),
        (Method::GET, reveal.as_str()),
        (Method::GET, &format!("{LIST}/not-an-id")),
        (Method::GET, &format!("{LIST}/01ARZ3NDEKTSV4RRFFQ69G5FAV")),
        (Method::POST, rotate.as_str()),
    ] {
        let (s, b) = app.send(method.clone(), path, Some(&auth), None).await;
        assert_error(s, &b, 401, Some("KEY_DISABLED"));
        assert!(b.get("data").is_none(), "{method} {path}: {b}");
    }
}
