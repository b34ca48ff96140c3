//! The client address in the audit log: a forwarding header counts only from a trusted proxy.

use reqwest::Method;
use serde_json::{Value, json};

use hepdb_testkit::*;

/// Reveals `id` with `X-Forwarded-For: 203.0.113.9`, then reads the address the audit log
/// recorded for that reveal.
async fn recorded_address(app: &TestApp, id: &str) -> Value {
    let resp = app
        .client
        .get(format!("{}/api/v1/db/databases/{id}", app.address))
        .header("Authorization", app.bearer())
        .header("X-Forwarded-For", "198.51.100.77, 203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token = app.platform_token("audit-reader").await;
    let path = format!("/accounts/{}/audit?action=database.reveal", app.account);
    let (s, b) = app.platform(Method::GET, &path, Some(&token), None).await;
    assert_eq!(s, 200, "{b}");
    data(&b)["entries"][0]["address"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_records_the_client_a_trusted_proxy_names() {
    // The test client connects from 127.0.0.1: here, that is the ingress.
    let app = spawn_app_with(Options::default(), |s| {
        s.gateway.trusted_proxies = "127.0.0.0/8".into();
    })
    .await;
    let (s, b) = app.create(json!({"name": "behind-ingress"})).await;
    assert_eq!(s, 201, "{b}");
    let id = data(&b)["id"].as_str().unwrap().to_owned();
    // The nearest hop not trusted: the forged first entry is ignored.
    assert_eq!(recorded_address(&app, &id).await, "203.0.113.9");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarding_header_from_anyone_else_is_ignored() {
    let app = spawn_app().await;
    let (s, b) = app.create(json!({"name": "direct"})).await;
    assert_eq!(s, 201, "{b}");
    let id = data(&b)["id"].as_str().unwrap().to_owned();
    assert_eq!(recorded_address(&app, &id).await, "127.0.0.1");
}
