//! Rate limits: per key and per account, reads and changes apart, and refused
//! authentications per client address; 429 `RATE_LIMITED` with `Retry-After`, and the
//! `RateLimit-Policy`/`RateLimit` headers on every answer to a caller, known or refused.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use hepdb_testkit::*;

struct Answer {
    status: StatusCode,
    policy: String,
    state: String,
    retry_after: Option<u64>,
    body: Value,
}

async fn answer(resp: Response) -> Answer {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (policy, state) = (
        header("ratelimit-policy").unwrap_or_default(),
        header("ratelimit").unwrap_or_default(),
    );
    let retry_after = header("retry-after").map(|v| v.parse().unwrap());
    let status = resp.status();
    Answer {
        status,
        policy,
        state,
        retry_after,
        body: resp.json().await.unwrap(),
    }
}

async fn send(app: &TestApp, method: Method, path: &str, key: &str) -> Answer {
    let mut req = app
        .client
        .request(method.clone(), format!("{}/api/v1/db{path}", app.address))
        .header("Authorization", format!("Bearer {key}"));
    if method == Method::POST && path == "/databases" {
        req = req.json(&json!({"name": "limited"}));
    }
    answer(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_per_key_and_per_account_for_reads_and_changes() {
    let app = spawn_app_with(Options::default(), |s| {
        s.rate_limit.enabled = true;
        s.rate_limit.key_reads_per_minute = 5;
        s.rate_limit.account_reads_per_minute = 8;
        s.rate_limit.key_changes_per_minute = 2;
        s.rate_limit.account_changes_per_minute = 100;
        s.rate_limit.address_failures_per_minute = 4;
    })
    .await;
    let a = app.key.clone();

    // Key A's reads: five, each saying what is left; the sixth waits.
    for left in (0..5).rev() {
        let r = send(&app, Method::GET, "/databases", &a).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.policy,
            "\"key-reads\";q=5;w=60, \"account-reads\";q=8;w=60"
        );
        assert!(
            r.state.starts_with(&format!("\"key-reads\";r={left};t=")),
            "{}",
            r.state
        );
        assert_eq!(r.retry_after, None);
    }
    let r = send(&app, Method::GET, "/databases", &a).await;
    assert_error(r.status, &r.body, 429, Some("RATE_LIMITED"));
    assert!(r.state.starts_with("\"key-reads\";r=0;t="), "{}", r.state);
    // One read comes back every 12 s.
    assert!(
        r.retry_after.is_some_and(|s| (1..=12).contains(&s)),
        "{:?}",
        r.retry_after
    );

    // Its changes have a budget of their own: a create goes through, and says so.
    let r = send(&app, Method::POST, "/databases", &a).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.policy.starts_with("\"key-changes\";q=2;w=60"),
        "{}",
        r.policy
    );
    let id = data(&r.body)["id"].as_str().unwrap().to_owned();
    let rotate = format!("/databases/{id}/rotate");
    assert_eq!(send(&app, Method::POST, &rotate, &a).await.status, 200);
    let r = send(&app, Method::POST, &rotate, &a).await;
    assert_error(r.status, &r.body, 429, Some("RATE_LIMITED"));
    assert!(r.retry_after.is_some_and(|s| (1..=30).contains(&s)));

    // A second key of the same account has its own key budget, but shares the account's:
    // three reads are left of the account's eight.
    let (_, b) = app.store.mint_key(app.account).await.unwrap().unwrap();
    let b = b.expose().to_owned();
    for _ in 0..3 {
        let r = send(&app, Method::GET, "/databases", &b).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = send(&app, Method::GET, "/databases", &b).await;
    assert_error(r.status, &r.body, 429, Some("RATE_LIMITED"));
    assert!(r.state.starts_with("\"account-reads\";r=0"), "{}", r.state);

    // Another account is untouched.
    let (_, other) = app.other_tenant().await;
    let r = send(&app, Method::GET, "/databases", &other).await;
    assert_eq!(r.status, 200);
    assert!(r.state.starts_with("\"key-reads\";r=4"), "{}", r.state);

    // A refused authentication spends from the client address's budget of failures:
    // unknown keys, malformed ones, no key and a disabled key alike, each answer with the
    // headers.
    let hash = hepdb_core::secret::ApiKey::parse(&a).unwrap().hash();
    let (row, _) = app.store.find_key(&hash).await.unwrap().unwrap();
    let key_id = row.id.parse().unwrap();
    app.store
        .set_key_enabled(key_id, false, None)
        .await
        .unwrap();
    let unknown = "hepgg_db_notakeynotakeynotakeynotakey";
    for (left, key, code) in [
        (3, unknown, "BAD_KEY"),
        (2, "not-a-key", "BAD_KEY"),
        (1, a.as_str(), "KEY_DISABLED"),
        (0, "", "NO_KEY"),
    ] {
        let r = send(&app, Method::GET, "/databases", key).await;
        assert_error(r.status, &r.body, 401, Some(code));
        assert_eq!(r.policy, "\"address-failures\";q=4;w=60");
        assert!(
            r.state
                .starts_with(&format!("\"address-failures\";r={left};t=")),
            "{}",
            r.state
        );
    }
    // Spent: no key or an unknown one is 429 from this address...
    let r = send(&app, Method::POST, "/databases", unknown).await;
    assert_error(r.status, &r.body, 429, Some("RATE_LIMITED"));
    assert!(r.retry_after.is_some_and(|s| (1..=15).contains(&s)));
    // ...but a real key that is disabled is still told so (its owner must learn why).
    let r = send(&app, Method::GET, "/databases", &a).await;
    assert_error(r.status, &r.body, 401, Some("KEY_DISABLED"));
    assert!(
        r.state.starts_with("\"address-failures\";r=0"),
        "{}",
        r.state
    );
    // Callers with a working key are not held back by the failures of their address.
    let r = send(&app, Method::GET, "/databases", &other).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
