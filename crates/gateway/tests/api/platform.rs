//! The platform API, driven the way the hosting platform's dashboard drives it, on real
//! services: onboarding, top-ups, the owner's key switches, suspension, and who may call what.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use hepdb_testkit::*;

/// Creates an account through the platform API; returns its id.
async fn account(app: &TestApp, token: &str, external_id: &str, slots: i32) -> String {
    let (s, b) = app
        .platform(
            Method::POST,
            "/accounts",
            Some(token),
            Some(
                json!({"externalId": external_id, "name": "Ada", "slots": slots, "storageMb": 100}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    data(&b)["id"].as_str().unwrap().to_owned()
}

/// Mints a key for the account; returns (key id, `Bearer <key>`).
async fn key(app: &TestApp, token: &str, account: &str, label: &str) -> (String, String) {
    let (s, b) = app
        .platform(
            Method::POST,
            &format!("/accounts/{account}/keys"),
            Some(token),
            Some(json!({"label": label})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let d = data(&b);
    assert_eq!(d["label"], label);
    assert_eq!(
        (d["enabled"].as_bool(), d["disabledBy"].is_null()),
        (Some(true), true)
    );
    (
        d["id"].as_str().unwrap().to_owned(),
        format!("Bearer {}", d["key"].as_str().unwrap()),
    )
}

async fn create_with(app: &TestApp, bearer: &str, name: &str) -> (reqwest::StatusCode, Value) {
    app.send(
        Method::POST,
        "/api/v1/db/databases",
        Some(bearer),
        Some(json!({"name": name})),
    )
    .await
}

async fn list_with(app: &TestApp, bearer: &str) -> (reqwest::StatusCode, Value) {
    app.send(Method::GET, "/api/v1/db/databases", Some(bearer), None)
        .await
}

async fn get_account(app: &TestApp, token: &str, id: &str) -> Value {
    let (s, b) = app
        .platform(Method::GET, &format!("/accounts/{id}"), Some(token), None)
        .await;
    assert_eq!(s, 200, "{b}");
    data(&b).clone()
}

/// 1. The dashboard creates an account and a key; the key creates a database over the public
/// API, and the account shows the slot in use.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_onboards_an_account_that_creates_a_database() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let external = format!("user-{}", ulid_like());
    let id = account(&app, &token, &external, 1).await;
    let a = get_account(&app, &token, &id).await;
    assert_eq!(
        keys(&a),
        [
            "createdAt",
            "dbAccess",
            "engineAccess",
            "externalId",
            "id",
            "name",
            "slots",
            "storage",
            "suspended"
        ]
    );
    assert_eq!(a["slots"], json!({"total": 1, "used": 0}));
    assert_eq!(
        a["storage"],
        json!({"quotaBytes": 100 * 1024 * 1024, "usedBytes": 0})
    );
    assert_eq!(
        (a["suspended"].as_bool(), a["dbAccess"].as_bool()),
        (Some(false), Some(true))
    );

    // The platform's id is unique, and finds the account.
    let (s, b) = app
        .platform(
            Method::POST,
            "/accounts",
            Some(&token),
            Some(json!({"externalId": external, "name": "Ada", "slots": 1, "storageMb": 1})),
        )
        .await;
    assert_error(s, &b, 409, Some("EXTERNAL_ID_TAKEN"));
    let (s, b) = app
        .platform(
            Method::GET,
            &format!("/accounts?externalId={external}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), data(&b)["id"].as_str()),
        (200, Some(id.as_str()))
    );

    let (_, bearer) = key(&app, &token, &id, "ci").await;
    let (s, b) = create_with(&app, &bearer, "shop").await;
    assert_eq!(s, 201, "{b}");
    assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);
    assert_eq!(get_account(&app, &token, &id).await["slots"]["used"], 1);
}

/// A new account's `db_tag` that collides with another's is retried with a fresh one: the
/// caller never sees the collision.
#[tokio::test(flavor = "multi_thread")]
async fn a_colliding_db_tag_is_retried_and_never_surfaced() {
    let app = spawn_app().await;
    let taken = app
        .store
        .account(app.account)
        .await
        .unwrap()
        .unwrap()
        .db_tag;
    let mut drawn = Vec::new();
    let new = hepdb_store::accounts::NewAccount {
        external_id: Some("collides"),
        name: "Bo",
        slots: 1,
        storage_mb: 1,
        db_access: true,
    };
    let created = app
        .store
        .insert_account_tagged(&new, None, || {
            let tag = match drawn.len() {
                0 => hepdb_core::naming::DbTag::parse(&taken).unwrap(),
                _ => hepdb_core::naming::DbTag::generate(),
            };
            drawn.push(tag.as_str().to_owned());
            tag
        })
        .await
        .unwrap();
    assert_eq!(drawn.len(), 2, "one collision, one retry");
    assert_eq!(created.db_tag, drawn[1]);
    assert_ne!(created.db_tag, taken);
}

/// An account the platform creates with `dbAccess: false` cannot use its keys on the public
/// API until a PATCH turns it on.
#[tokio::test(flavor = "multi_thread")]
async fn db_access_off_refuses_the_accounts_keys_until_it_is_on() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let (s, b) = app
        .platform(
            Method::POST,
            "/accounts",
            Some(&token),
            Some(json!({"externalId": "off", "name": "Cy", "slots": 1, "storageMb": 10, "dbAccess": false})),
        )
        .await;
    assert_eq!((s.as_u16(), &data(&b)["dbAccess"]), (201, &json!(false)));
    let id = data(&b)["id"].as_str().unwrap().to_owned();
    let (_, bearer) = key(&app, &token, &id, "ci").await;
    let (s, b) = list_with(&app, &bearer).await;
    assert_error(s, &b, 403, None);
    let (s, b) = app
        .platform(
            Method::PATCH,
            &format!("/accounts/{id}"),
            Some(&token),
            Some(json!({"dbAccess": true})),
        )
        .await;
    assert_eq!((s.as_u16(), &data(&b)["dbAccess"]), (200, &json!(true)));
    assert_eq!(list_with(&app, &bearer).await.0, 200);
    app.platform(
        Method::PATCH,
        &format!("/accounts/{id}"),
        Some(&token),
        Some(json!({"dbAccess": false})),
    )
    .await;
    let (s, b) = list_with(&app, &bearer).await;
    assert_error(s, &b, 403, None);
}

/// The dashboard sees every database of an account, in the states the public list hides
/// too, with its host and size.
#[tokio::test(flavor = "multi_thread")]
async fn the_account_database_list_shows_every_state() {
    let app = spawn_app_with(
        Options {
            slots: Some(4),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let token = app.platform_token("dashboard").await;
    let (s, b) = app.create(json!({"name": "live"})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app.create(json!({"name": "going"})).await;
    assert_eq!(s, 201, "{b}");
    let going = data(&b)["id"].as_str().unwrap().to_owned();
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'deleting' WHERE id = '{going}'"
    ))
    .await;
    app.reserve_intent("half").await;
    let (broken, _) = app.reserve_intent("broken").await;
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'failed' WHERE id = '{}'",
        broken.database.id
    ))
    .await;

    let (s, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{}/databases", app.account),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let listed: Vec<(String, String)> = data(&b)["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d["host"].is_string() && d["sizeBytes"].is_i64(), "{d}");
            let field = |f: &str| d[f].as_str().unwrap().to_owned();
            (field("name"), field("state"))
        })
        .collect();
    let expected = [
        ("live", "active"),
        ("going", "deleting"),
        ("half", "creating"),
        ("broken", "failed"),
    ]
    .map(|(n, s)| (n.to_owned(), s.to_owned()));
    assert_eq!(listed, expected);
    let (_, b) = app.list().await;
    let public: Vec<&str> = data(&b)["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(public, ["live"], "the public list hides the others");
}

/// 2. A create refused for want of slots goes through once the platform tops them up.
#[tokio::test(flavor = "multi_thread")]
async fn a_top_up_lets_a_refused_create_through() {
    let app = spawn_app().await;
    let token = app.platform_token("billing").await;
    let id = account(&app, &token, &format!("u-{}", ulid_like()), 1).await;
    let (_, bearer) = key(&app, &token, &id, "").await;
    assert_eq!(create_with(&app, &bearer, "one").await.0, 201);
    let (s, b) = create_with(&app, &bearer, "two").await;
    assert_error(s, &b, 402, Some("OUT_OF_SLOTS"));
    let (s, b) = app
        .platform(
            Method::PATCH,
            &format!("/accounts/{id}"),
            Some(&token),
            Some(json!({"slots": 2, "storageMb": 200})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(data(&b)["slots"], json!({"total": 2, "used": 1}));
    assert_eq!(data(&b)["storage"]["quotaBytes"], 200 * 1024 * 1024);
    let (s, b) = create_with(&app, &bearer, "two").await;
    assert_eq!(s, 201, "{b}");
}

/// 3. The owner switches a key off (401 `KEY_DISABLED`) and on again, then revokes it for
/// good: it is refused as unknown, cannot be enabled, and is no longer listed.
#[tokio::test(flavor = "multi_thread")]
async fn the_owner_switches_a_key_off_and_on_and_revokes_it() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let id = account(&app, &token, &format!("u-{}", ulid_like()), 2).await;
    let (key_id, bearer) = key(&app, &token, &id, "laptop").await;
    assert_eq!(list_with(&app, &bearer).await.0, 200);

    let (s, b) = app
        .platform(
            Method::POST,
            &format!("/keys/{key_id}/disable"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), &data(&b)["disabledBy"]),
        (200, &json!("owner"))
    );
    let (s, b) = list_with(&app, &bearer).await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));
    let (s, b) = app
        .platform(
            Method::POST,
            &format!("/keys/{key_id}/enable"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), data(&b)["enabled"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(list_with(&app, &bearer).await.0, 200);

    // Its use is recorded, coarsely, in the background.
    let started = Instant::now();
    loop {
        let (_, b) = app
            .platform(
                Method::GET,
                &format!("/accounts/{id}/keys"),
                Some(&token),
                None,
            )
            .await;
        let listed = &data(&b)["keys"][0];
        assert_eq!(
            keys(listed),
            [
                "createdAt",
                "disabledBy",
                "enabled",
                "id",
                "label",
                "lastUsedAt"
            ]
        );
        if listed["lastUsedAt"].is_string() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "lastUsedAt never set"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Coarse: more requests within the hour write nothing.
    let last_used = async || {
        let path = format!("/accounts/{id}/keys");
        let (_, b) = app.platform(Method::GET, &path, Some(&token), None).await;
        data(&b)["keys"][0]["lastUsedAt"].clone()
    };
    let first = last_used().await;
    for _ in 0..5 {
        assert_eq!(list_with(&app, &bearer).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(last_used().await, first);

    let (s, b) = app
        .platform(
            Method::DELETE,
            &format!("/keys/{key_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), data(&b)["revoked"].as_bool()),
        (200, Some(true))
    );
    let (s, b) = list_with(&app, &bearer).await;
    assert_error(s, &b, 401, Some("BAD_KEY"));
    for action in ["enable", "disable"] {
        let (s, b) = app
            .platform(
                Method::POST,
                &format!("/keys/{key_id}/{action}"),
                Some(&token),
                None,
            )
            .await;
        assert_error(s, &b, 404, Some("KEY_NOT_FOUND"));
    }
    let (s, b) = app
        .platform(
            Method::DELETE,
            &format!("/keys/{key_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_error(s, &b, 404, Some("KEY_NOT_FOUND"));
    let (_, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{id}/keys"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(data(&b)["keys"], json!([]));

    // Every change is in the audit log, with the token's name as the actor.
    let entries = app.store.audit_log(id.parse().unwrap()).await.unwrap();
    let by_platform: Vec<&str> = entries
        .iter()
        .filter(|e| e.actor == "platform:dashboard")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        by_platform,
        [
            "account.create",
            "key.mint",
            "key.disable",
            "key.enable",
            "key.revoke"
        ]
    );
}

/// 5. Suspension through the platform API: keys and metadata change before the answer, the
/// engines follow (reported as `engineAccess` until they have), and unsuspension undoes
/// exactly what suspension did.
#[tokio::test(flavor = "multi_thread")]
async fn suspension_through_the_platform_cascades_to_keys_and_engines() {
    let mut app = spawn_app().await;
    let token = app.platform_token("abuse").await;
    let id = account(&app, &token, &format!("u-{}", ulid_like()), 3).await;
    let (_, bearer) = key(&app, &token, &id, "").await;
    let (owner_off, _) = key(&app, &token, &id, "off").await;
    app.platform(
        Method::POST,
        &format!("/keys/{owner_off}/disable"),
        Some(&token),
        None,
    )
    .await;
    let mut logins = Vec::new();
    for engine in ["mariadb", "postgres", "mongo"] {
        let (s, created) = app
            .send(
                Method::POST,
                "/api/v1/db/databases",
                Some(&bearer),
                Some(json!({"name": engine, "engine": engine})),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        let cs = data(&created)["connectionString"].as_str().unwrap();
        logins.push(cs.to_owned());
    }
    let all_log_in = async |logins: &[String]| {
        let mut each = Vec::new();
        for cs in logins {
            each.push(can_login(cs).await);
        }
        each
    };

    // No worker for a moment: the answer comes when keys and metadata have changed, and it
    // and the account show the engines' side still to do.
    app.worker.take().unwrap().shutdown().await;
    let (s, b) = app
        .platform(
            Method::POST,
            &format!("/accounts/{id}/suspend"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), data(&b)["suspended"].as_bool()),
        (200, Some(true))
    );
    let pending = json!({"converged": false, "pending": 3});
    assert_eq!(data(&b)["engineAccess"], pending, "{b}");
    let (s, b) = list_with(&app, &bearer).await;
    assert_error(s, &b, 401, Some("KEY_DISABLED"));
    let a = get_account(&app, &token, &id).await;
    assert_eq!(a["engineAccess"], pending, "{a}");
    app.start_worker().await;
    converged(&app, &token, &id).await;
    assert_eq!(
        all_log_in(&logins).await,
        [false; 3],
        "every engine user is locked"
    );
    let (_, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{id}/keys"),
            Some(&token),
            None,
        )
        .await;
    let by: Vec<&Value> = data(&b)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["disabledBy"])
        .collect();
    assert_eq!(by, [&json!("suspension"), &json!("owner")]);
    // A key minted during the suspension waits for the unsuspension like the others.
    let (s, b) = app
        .platform(
            Method::POST,
            &format!("/accounts/{id}/keys"),
            Some(&token),
            Some(json!({"label": "during"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), &data(&b)["disabledBy"]),
        (201, &json!("suspension"))
    );
    let during = format!("Bearer {}", data(&b)["key"].as_str().unwrap());

    let (s, b) = app
        .platform(
            Method::POST,
            &format!("/accounts/{id}/unsuspend"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), data(&b)["suspended"].as_bool()),
        (200, Some(false))
    );
    converged(&app, &token, &id).await;
    assert_eq!(
        all_log_in(&logins).await,
        [true; 3],
        "every engine user works again"
    );
    assert_eq!(list_with(&app, &bearer).await.0, 200);
    assert_eq!(list_with(&app, &during).await.0, 200);
    let (_, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{id}/keys"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        data(&b)["keys"][1]["disabledBy"],
        "owner",
        "the owner's switch stays off"
    );
}

/// Waits until the account's engines are where metadata wants them.
async fn converged(app: &TestApp, token: &str, id: &str) {
    let started = Instant::now();
    loop {
        let a = get_account(app, token, id).await;
        if a["engineAccess"]["converged"] == true {
            assert_eq!(a["engineAccess"]["pending"], 0);
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never converged: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 7. Each API takes only its own credential, and each listener serves only its own API.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_keys_stay_on_their_own_api() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let (s, b) = app
        .platform(Method::GET, "/accounts?externalId=x", None, None)
        .await;
    assert_error(s, &b, 401, Some("NO_TOKEN"));
    let (s, b) = app
        .platform(
            Method::GET,
            "/accounts?externalId=x",
            Some(&app.bearer()),
            None,
        )
        .await;
    assert_error(s, &b, 401, Some("BAD_TOKEN"));
    let (s, b) = list_with(&app, &token).await;
    assert_error(s, &b, 401, Some("BAD_KEY"));
    let (s, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{}", app.account),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // A revoked token is refused at once.
    let (id, revoked) = app.store.mint_platform_token("old").await.unwrap();
    let revoked = format!("Bearer {}", revoked.expose());
    assert!(app.store.revoke_platform_token(id).await.unwrap());
    let (s, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{}", app.account),
            Some(&revoked),
            None,
        )
        .await;
    assert_error(s, &b, 401, Some("BAD_TOKEN"));
    // So is one of the right shape that was never minted.
    let unknown = hepdb_core::secret::PlatformToken::generate();
    let unknown = format!("Bearer {}", unknown.expose());
    let (s, b) = app
        .platform(Method::GET, "/hosts", Some(&unknown), None)
        .await;
    assert_error(s, &b, 401, Some("BAD_TOKEN"));

    // The public listener has no platform API, and the platform listener no public one.
    let (s, b) = app
        .send(
            Method::GET,
            &format!("/platform/v1/accounts/{}", app.account),
            Some(&token),
            None,
        )
        .await;
    assert_error(s, &b, 404, Some("NO_ROUTE"));
    let url = format!("{}/api/v1/db/databases", app.platform_address);
    let resp = app
        .client
        .get(url)
        .header("Authorization", app.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// Bad input is a 4xx in the envelope, never a 5xx.
#[tokio::test(flavor = "multi_thread")]
async fn bad_platform_requests_are_refused_in_the_envelope() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let id = app.account.to_text();
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (Method::GET, "/accounts".into(), None, 400, "BAD_REQUEST"),
        (
            Method::GET,
            "/accounts/nope".into(),
            None,
            404,
            "ACCOUNT_NOT_FOUND",
        ),
        (
            Method::GET,
            format!("/accounts/{}", hepdb_core::AccountId::new()),
            None,
            404,
            "ACCOUNT_NOT_FOUND",
        ),
        (
            Method::PATCH,
            format!("/accounts/{id}"),
            Some(json!({"slots": -1})),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::PATCH,
            format!("/accounts/{id}"),
            Some(json!({"slotz": 3})),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::PATCH,
            format!("/accounts/{id}"),
            Some(json!({"storageMb": "lots"})),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::POST,
            "/accounts".into(),
            Some(json!({"externalId": "", "name": "x", "slots": 1, "storageMb": 1})),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::POST,
            "/accounts".into(),
            Some(json!({"externalId": "a\u{0}b", "name": "x", "slots": 1, "storageMb": 1})),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::POST,
            format!("/accounts/{id}/keys"),
            Some(json!({"label": "x".repeat(101)})),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::POST,
            "/keys/nope/disable".into(),
            None,
            404,
            "KEY_NOT_FOUND",
        ),
        (
            Method::PUT,
            format!("/accounts/{id}"),
            None,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (Method::GET, "/nothing".into(), None, 404, "NO_ROUTE"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, b) = app
            .platform(method.clone(), &path, Some(&token), body)
            .await;
        assert_error(s, &b, status, Some(code));
        assert!(s.as_u16() < 500, "{method} {path}: {b}");
    }
}

/// A unique-enough suffix for external ids.
fn ulid_like() -> String {
    hepdb_core::DatabaseId::new().to_text()
}

/// 6. The audit log, page by page, newest first, with each token's name as the actor; and an
/// account's databases in every state, with their host.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_reads_page_by_page_with_token_names_as_actors() {
    let app = spawn_app().await;
    let (dashboard, billing) = (
        app.platform_token("dashboard").await,
        app.platform_token("billing").await,
    );
    let id = account(&app, &dashboard, &format!("u-{}", ulid_like()), 2).await;
    let (key_id, bearer) = key(&app, &dashboard, &id, "a").await;
    for (token, path) in [
        (&dashboard, format!("/keys/{key_id}/disable")),
        (&dashboard, format!("/keys/{key_id}/enable")),
    ] {
        assert_eq!(
            app.platform(Method::POST, &path, Some(token), None).await.0,
            200
        );
    }
    let (s, _) = app
        .platform(
            Method::PATCH,
            &format!("/accounts/{id}"),
            Some(&billing),
            Some(json!({"slots": 3})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, created) = create_with(&app, &bearer, "logged").await;
    assert_eq!(s, 201, "{created}");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/accounts/{id}/audit?limit=2&cursor={c}"),
            None => format!("/accounts/{id}/audit?limit=2"),
        };
        let (s, b) = app.platform(Method::GET, &path, Some(&billing), None).await;
        assert_eq!(s, 200, "{b}");
        let entries = data(&b)["entries"].as_array().unwrap().clone();
        assert!(entries.len() <= 2);
        seen.extend(entries.iter().map(|e| {
            let field = |f: &str| e[f].as_str().unwrap().to_owned();
            (field("actorType"), field("actor"), field("action"))
        }));
        match data(&b)["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<(String, String, String)> = [
        ("key", key_id.as_str(), "database.create"),
        ("platform", "billing", "account.update"),
        ("platform", "dashboard", "key.enable"),
        ("platform", "dashboard", "key.disable"),
        ("platform", "dashboard", "key.mint"),
        ("platform", "dashboard", "account.create"),
    ]
    .map(|(kind, actor, action)| (kind.into(), actor.into(), action.into()))
    .into();
    assert_eq!(seen, expected, "newest first, every entry once");
    let (_, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{id}/audit?action=key.disable"),
            Some(&billing),
            None,
        )
        .await;
    assert_eq!(data(&b)["entries"].as_array().unwrap().len(), 1);
    assert!(data(&b)["nextCursor"].is_null());
    for bad in [
        "limit=0",
        "limit=501",
        "cursor=abc",
        "cursor=-1",
        "colour=red",
    ] {
        let (s, b) = app
            .platform(
                Method::GET,
                &format!("/accounts/{id}/audit?{bad}"),
                Some(&billing),
                None,
            )
            .await;
        assert_error(s, &b, 400, Some("BAD_REQUEST"));
    }

    let (s, b) = app
        .platform(
            Method::GET,
            &format!("/accounts/{id}/databases"),
            Some(&billing),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let dbs = data(&b)["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1);
    assert_eq!(
        (
            dbs[0]["id"].clone(),
            dbs[0]["state"].clone(),
            dbs[0]["host"].clone()
        ),
        (
            data(&created)["id"].clone(),
            json!("active"),
            json!("mariadb")
        )
    );
    assert!(dbs[0].get("password").is_none());
}

/// Hosts: listed, drained (a create then has nowhere to go) and opened again.
#[tokio::test(flavor = "multi_thread")]
async fn hosts_are_listed_drained_and_opened_again() {
    let app = spawn_app().await;
    let token = app.platform_token("ops").await;
    let (s, b) = app
        .platform(Method::GET, "/hosts", Some(&token), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = data(&b)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mariadb"), "{names:?}");
    let (s, b) = app
        .platform(Method::POST, "/hosts/mariadb/drain", Some(&token), None)
        .await;
    assert_eq!((s.as_u16(), &data(&b)["state"]), (200, &json!("drained")));
    let (s, b) = app.create(json!({"name": "nowhere"})).await;
    assert_error(s, &b, 503, Some("NO_CAPACITY"));
    let (s, _) = app
        .platform(Method::POST, "/hosts/mariadb/undrain", Some(&token), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.create(json!({"name": "somewhere"})).await.0, 201);
    let (s, b) = app
        .platform(Method::POST, "/hosts/nope/drain", Some(&token), None)
        .await;
    assert_error(s, &b, 404, Some("HOST_NOT_FOUND"));
}

/// The dashboard reveals and rotates for the owner: the same answers as the public API's, the
/// same job (the new password logs in, the old one is refused), audited with the token's name.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_reveals_and_rotates_for_the_owner() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let (s, created) = app.create(json!({"name": "owned"})).await;
    assert_eq!(s, 201, "{created}");
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    let (s, by_platform) = app
        .platform(Method::GET, &format!("/databases/{id}"), Some(&token), None)
        .await;
    assert_eq!(s, 200, "{by_platform}");
    let (_, by_owner) = app.reveal(&id).await;
    assert_eq!(keys(data(&by_platform)), keys(data(&by_owner)));
    assert_eq!(data(&by_platform)["password"], data(&created)["password"]);

    let (s, rotated) = app
        .platform(
            Method::POST,
            &format!("/databases/{id}/rotate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rotated}");
    let new_cs = data(&rotated)["connectionString"].as_str().unwrap();
    assert!(can_login(new_cs).await, "the new password logs in");
    let old_cs = data(&created)["connectionString"].as_str().unwrap();
    assert!(!can_login(old_cs).await, "the old one is refused");
    let (_, after) = app.reveal(&id).await;
    assert_eq!(data(&after)["password"], data(&rotated)["password"]);

    let actions: Vec<(String, String)> = app
        .store
        .audit_log(app.account)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "platform:dashboard")
        .map(|e| (e.action, e.database_id.unwrap_or_default()))
        .collect();
    assert_eq!(
        actions,
        [
            ("database.reveal".to_owned(), id.clone()),
            ("database.rotate".to_owned(), id.clone())
        ]
    );
    for missing in ["nope".to_owned(), hepdb_core::DatabaseId::new().to_text()] {
        let (s, b) = app
            .platform(
                Method::GET,
                &format!("/databases/{missing}"),
                Some(&token),
                None,
            )
            .await;
        assert_error(s, &b, 404, Some("NOT_FOUND"));
    }
}

/// 4. Deleting through the platform API: a job through the worker drops the database and its
/// user on all three engines, the slot is free again, and a second request finds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_drops_everything_on_every_engine_and_frees_the_slot() {
    let app = spawn_app().await;
    let token = app.platform_token("dashboard").await;
    let mut made = Vec::new();
    for engine in ["mariadb", "postgres", "mongo"] {
        let (s, b) = app
            .create(json!({"name": format!("gone-{engine}"), "engine": engine}))
            .await;
        assert_eq!(s, 201, "{b}");
        assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);
        made.push(data(&b).clone());
    }
    let (s, b) = app.create(json!({"name": "fourth"})).await;
    assert_error(s, &b, 402, Some("OUT_OF_SLOTS"));
    for db in &made {
        let id = db["id"].as_str().unwrap();
        let (s, b) = app
            .platform(
                Method::DELETE,
                &format!("/databases/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(
            (s.as_u16(), data(&b)["deleted"].as_bool()),
            (200, Some(true)),
            "{b}"
        );
        assert!(
            !can_login(db["connectionString"].as_str().unwrap()).await,
            "{}: the user is gone",
            db["engine"]
        );
        let (s, b) = app
            .platform(
                Method::DELETE,
                &format!("/databases/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_error(s, &b, 404, Some("NOT_FOUND"));
    }
    assert!(engine_databases(&app.tag().await).await.is_empty());
    assert!(engine_users(&app.tag().await).await.is_empty());
    let (pg, conn) = tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pattern = format!("um\\_{}\\_%", app.tag().await);
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the PostgreSQL database is gone");
    let a = get_account(&app, &token, &app.account.to_text()).await;
    assert_eq!(a["slots"]["used"], 0);
    assert_eq!(
        app.create(json!({"name": "again"})).await.0,
        201,
        "the slot is free"
    );
    let entries = app.store.audit_log(app.account).await.unwrap();
    let deletes = entries
        .iter()
        .filter(|e| e.actor == "platform:dashboard" && e.action == "database.delete")
        .count();
    assert_eq!(deletes, 3);
}

/// A recorded deletion always completes: without a worker it answers 503 `JOB_TIMEOUT`, a
/// repeated request joins the same job, and a worker that starts later finishes it. A
/// database still being created cannot be deleted yet.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_nobody_has_taken_yet_still_completes() {
    let mut app = spawn_app_with(
        Options {
            no_worker: true,
            ..Default::default()
        },
        |s| s.gateway.job_timeout_ms = 800,
    )
    .await;
    let token = app.platform_token("dashboard").await;
    let (reserved, _) = app.reserve_intent("creating").await;
    let creating = reserved.database.id.clone();
    let (s, b) = app
        .platform(
            Method::DELETE,
            &format!("/databases/{creating}"),
            Some(&token),
            None,
        )
        .await;
    assert_error(s, &b, 409, Some("DATABASE_BUSY"));

    // Nor one whose create failed (the reconciler cleans those up).
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'failed' WHERE id = '{creating}'"
    ))
    .await;
    let (s, b) = app
        .platform(
            Method::DELETE,
            &format!("/databases/{creating}"),
            Some(&token),
            None,
        )
        .await;
    assert_error(s, &b, 409, Some("DATABASE_BUSY"));

    // A database that exists (made active directly in metadata: there is no worker yet).
    app.metadata_sql(&format!(
        "UPDATE databases SET state = 'active' WHERE id = '{creating}'"
    ))
    .await;
    for _ in 0..2 {
        let (s, b) = app
            .platform(
                Method::DELETE,
                &format!("/databases/{creating}"),
                Some(&token),
                None,
            )
            .await;
        assert_error(s, &b, 503, Some("JOB_TIMEOUT"));
    }
    let open = app
        .metadata_sql("SELECT 1 FROM jobs WHERE kind = 'delete' AND state = 'pending'")
        .await;
    assert_eq!(open, 1, "the repeated request joined the same job");
    app.start_worker().await;
    let started = Instant::now();
    while app
        .store
        .database(creating.parse().unwrap())
        .await
        .unwrap()
        .is_some()
    {
        assert!(started.elapsed() < Duration::from_secs(15), "never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A deletion whose job gave up (here: marked failed, as after too many deliveries) is taken
/// up again by the next DELETE, which audits nothing new; and a deletion needs no password, so
/// one that no longer opens does not block it.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_given_up_is_taken_up_again_without_a_password() {
    let mut app = spawn_app_with(Options::default(), |s| s.gateway.job_timeout_ms = 800).await;
    let token = app.platform_token("dashboard").await;
    let (s, created) = app.create(json!({"name": "stubborn"})).await;
    assert_eq!(s, 201, "{created}");
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    let cs = data(&created)["connectionString"]
        .as_str()
        .unwrap()
        .to_owned();
    app.metadata_sql(&format!(
        "UPDATE databases SET password_sealed = '\\x00' WHERE id = '{id}'"
    ))
    .await;

    app.worker.take().unwrap().shutdown().await;
    let path = format!("/databases/{id}");
    let (s, b) = app
        .platform(Method::DELETE, &path, Some(&token), None)
        .await;
    assert_error(s, &b, 503, Some("JOB_TIMEOUT"));
    let given_up = app
        .metadata_sql(
            "UPDATE jobs SET state = 'failed', error_code = 'POISONED' \
             WHERE kind = 'delete' AND state = 'pending'",
        )
        .await;
    assert_eq!(given_up, 1);

    app.start_worker().await;
    let (s, b) = app
        .platform(Method::DELETE, &path, Some(&token), None)
        .await;
    assert_eq!(
        (s.as_u16(), &data(&b)["deleted"]),
        (200, &json!(true)),
        "{b}"
    );
    assert!(!can_login(&cs).await, "gone from the engine");
    let deletes = app
        .store
        .audit_log(app.account)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == "database.delete")
        .count();
    assert_eq!(deletes, 1, "one deletion, audited once");
}

/// A rotate recorded just before a deletion finds its database going: it changes nothing on
/// the engine and answers 404, instead of retrying against a row it can no longer update.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotate_recorded_before_a_deletion_changes_nothing() {
    use hepdb_worker::jobs::{Disposition, handle};
    let app = spawn_app().await;
    let (s, created) = app.create(json!({"name": "going"})).await;
    assert_eq!(s, 201, "{created}");
    let id: hepdb_core::DatabaseId = data(&created)["id"].as_str().unwrap().parse().unwrap();
    let (msg, _) = app.rotate_intent(id).await;
    app.store.insert_delete_job(id, None).await.unwrap();
    let ctx = app.worker.as_ref().unwrap().context();
    assert_eq!(
        handle(ctx, &msg).await,
        Disposition::Finished {
            outcome: hepdb_core::job::JobOutcome::Failed(hepdb_core::job::JobFailure::Gone),
            dead_letter: None
        }
    );
    let cs = data(&created)["connectionString"].as_str().unwrap();
    assert!(can_login(cs).await, "the password was not changed");

    // Delivered only after the deletion finished and its row is gone: 404 as well, not 500.
    let (s, created) = app.create(json!({"name": "gone"})).await;
    assert_eq!(s, 201, "{created}");
    let id: hepdb_core::DatabaseId = data(&created)["id"].as_str().unwrap().parse().unwrap();
    let (msg, _) = app.rotate_intent(id).await;
    let hepdb_store::databases::DeleteIntent::Job { job, .. } =
        app.store.insert_delete_job(id, None).await.unwrap()
    else {
        panic!("no delete job");
    };
    hepdb_worker::jobs::run_delete(ctx, job, id).await.unwrap();
    assert!(app.store.database(id).await.unwrap().is_none());
    assert_eq!(
        handle(ctx, &msg).await,
        Disposition::Finished {
            outcome: hepdb_core::job::JobOutcome::Failed(hepdb_core::job::JobFailure::Gone),
            dead_letter: None
        }
    );
}

/// Every POST, PATCH and DELETE takes an Idempotency-Key: a retry is answered from what the
/// first request did, without doing it again (a minted key is never shown twice); the same
/// key for another request is 422 `IDEMPOTENCY_KEY_REUSED`.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_platform_request_is_answered_not_repeated() {
    let app = spawn_app().await;
    let token = app.platform_token("billing").await;
    let keyed = |method: Method, path: String, body: Option<Value>, key: &'static str| {
        let (app, token) = (&app, token.clone());
        async move {
            let mut req = app
                .client
                .request(
                    method,
                    format!("{}/platform/v1{path}", app.platform_address),
                )
                .header("Authorization", token)
                .header("Idempotency-Key", key);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let external = format!("u-{}", ulid_like());
    let body = json!({"externalId": external, "name": "Ada", "slots": 2, "storageMb": 10});
    let (s1, a1) = keyed(
        Method::POST,
        "/accounts".into(),
        Some(body.clone()),
        "create-1",
    )
    .await;
    let (s2, a2) = keyed(Method::POST, "/accounts".into(), Some(body), "create-1").await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201), "{a1} {a2}");
    assert_eq!(data(&a1)["id"], data(&a2)["id"], "one account");
    let id = data(&a1)["id"].as_str().unwrap().to_owned();
    let other = json!({"externalId": "someone-else", "name": "Bo", "slots": 1, "storageMb": 1});
    let (s, b) = keyed(Method::POST, "/accounts".into(), Some(other), "create-1").await;
    assert_error(s, &b, 422, Some("IDEMPOTENCY_KEY_REUSED"));

    let mint = |key| {
        keyed(
            Method::POST,
            format!("/accounts/{id}/keys"),
            Some(json!({"label": "ci"})),
            key,
        )
    };
    let (s1, k1) = mint("mint-1").await;
    let (s2, k2) = mint("mint-1").await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201), "{k1} {k2}");
    assert_eq!(data(&k1)["id"], data(&k2)["id"], "one key");
    assert!(
        data(&k1)["key"].is_string() && data(&k2).get("key").is_none(),
        "shown once"
    );
    let (_, listed) = app
        .platform(
            Method::GET,
            &format!("/accounts/{id}/keys"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(data(&listed)["keys"].as_array().unwrap().len(), 1);

    let key_id = data(&k1)["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (s, b) = keyed(Method::DELETE, format!("/keys/{key_id}"), None, "revoke-1").await;
        assert_eq!(
            (s.as_u16(), data(&b)["revoked"].as_bool()),
            (200, Some(true)),
            "{b}"
        );
    }

    let entries = app.store.audit_log(id.parse().unwrap()).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["account.create", "key.mint", "key.revoke"]);

    // A retried rotate answers the first one's password, from its job; it does not rotate again.
    let (s, created) = app.create(json!({"name": "rotated-once"})).await;
    assert_eq!(s, 201, "{created}");
    let db = data(&created)["id"].as_str().unwrap().to_owned();
    let rotate = || {
        keyed(
            Method::POST,
            format!("/databases/{db}/rotate"),
            None,
            "rotate-1",
        )
    };
    let (s1, r1) = rotate().await;
    let (s2, r2) = rotate().await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200), "{r1} {r2}");
    assert_eq!(data(&r1)["password"], data(&r2)["password"]);
    assert!(can_login(data(&r2)["connectionString"].as_str().unwrap()).await);
    let rotates = app
        .metadata_sql(&format!(
            "SELECT 1 FROM jobs WHERE kind = 'rotate' AND database_id = '{db}'"
        ))
        .await;
    assert_eq!(rotates, 1, "one rotate job");
    // A day later the key has expired, as the public API's do (and retention has scrubbed the
    // job's sealed password): the same key is a new rotate, not a 500.
    app.metadata_sql(
        "UPDATE platform_idempotency SET created_at = now() - interval '25 hours' \
         WHERE key = 'rotate-1'",
    )
    .await;
    app.metadata_sql(
        "UPDATE jobs SET updated_at = now() - interval '25 hours' WHERE state = 'done'",
    )
    .await;
    let r = app.store.apply_job_retention(30).await.unwrap();
    assert!(r.scrubbed >= 1, "{r:?}");
    let (s3, r3) = rotate().await;
    assert_eq!(s3.as_u16(), 200, "{r3}");
    assert_ne!(
        data(&r3)["password"],
        data(&r1)["password"],
        "rotated again"
    );
    assert!(can_login(data(&r3)["connectionString"].as_str().unwrap()).await);
    assert_eq!(
        app.store.purge_platform_keys().await.unwrap(),
        0,
        "the stale binding gave way"
    );

    // PATCH and suspend are answered from the account as it is now; a deletion retried with
    // its key answers 200, where a plain second DELETE finds nothing.
    let patch = |slots| {
        keyed(
            Method::PATCH,
            format!("/accounts/{id}"),
            Some(json!({ "slots": slots })),
            "patch-1",
        )
    };
    let (s, b) = patch(4).await;
    assert_eq!((s.as_u16(), &data(&b)["slots"]["total"]), (200, &json!(4)));
    let (s, b) = patch(4).await;
    assert_eq!((s.as_u16(), &data(&b)["slots"]["total"]), (200, &json!(4)));
    let (s, b) = patch(5).await;
    assert_error(s, &b, 422, Some("IDEMPOTENCY_KEY_REUSED"));
    for _ in 0..2 {
        let (s, b) = keyed(
            Method::POST,
            format!("/accounts/{id}/suspend"),
            None,
            "suspend-1",
        )
        .await;
        assert_eq!(
            (s.as_u16(), data(&b)["suspended"].as_bool()),
            (200, Some(true)),
            "{b}"
        );
    }
    for _ in 0..2 {
        let (s, b) = keyed(Method::DELETE, format!("/databases/{db}"), None, "delete-1").await;
        assert_eq!(
            (s.as_u16(), data(&b)["deleted"].as_bool()),
            (200, Some(true)),
            "{b}"
        );
    }
    let (s, b) = app
        .platform(
            Method::DELETE,
            &format!("/databases/{db}"),
            Some(&token),
            None,
        )
        .await;
    assert_error(s, &b, 404, Some("NOT_FOUND"));
    for _ in 0..2 {
        let path = format!("/accounts/{id}/unsuspend");
        let (s, b) = keyed(Method::POST, path, None, "unsuspend-1").await;
        assert_eq!(
            (s.as_u16(), data(&b)["suspended"].as_bool()),
            (200, Some(false)),
            "{b}"
        );
    }
    // The owner's switches: each retry answers the key as it is, and changes nothing again.
    let (_, k) = mint("mint-2").await;
    let key_id = data(&k)["id"].as_str().unwrap().to_owned();
    for (switch, enabled) in [("disable", false), ("enable", true)] {
        for _ in 0..2 {
            let path = format!("/keys/{key_id}/{switch}");
            let (s, b) = keyed(Method::POST, path, None, switch).await;
            assert_eq!(
                (s.as_u16(), data(&b)["enabled"].as_bool()),
                (200, Some(enabled)),
                "{b}"
            );
        }
    }
    let (s, b) = keyed(
        Method::POST,
        format!("/keys/{key_id}/enable"),
        None,
        "disable",
    )
    .await;
    assert_error(s, &b, 422, Some("IDEMPOTENCY_KEY_REUSED"));
    // Drains too: a retry answers as the first did; the key cannot be reused for an undrain.
    for _ in 0..2 {
        let (s, b) = keyed(Method::POST, "/hosts/mariadb/drain".into(), None, "drain-1").await;
        assert_eq!((s.as_u16(), &data(&b)["state"]), (200, &json!("drained")));
    }
    let (s, b) = keyed(
        Method::POST,
        "/hosts/mariadb/undrain".into(),
        None,
        "drain-1",
    )
    .await;
    assert_error(s, &b, 422, Some("IDEMPOTENCY_KEY_REUSED"));
    let (s, b) = keyed(
        Method::POST,
        "/hosts/mariadb/undrain".into(),
        None,
        "undrain-1",
    )
    .await;
    assert_eq!((s.as_u16(), &data(&b)["state"]), (200, &json!("open")));

    let entries = app.store.audit_log(id.parse().unwrap()).await.unwrap();
    let count = |action: &str| entries.iter().filter(|e| e.action == action).count();
    assert_eq!(
        [
            "account.suspend",
            "account.unsuspend",
            "key.disable",
            "key.enable"
        ]
        .map(count),
        [1; 4],
        "each change once"
    );
}
