use reqwest::Method;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_wrong_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let auth = app.bearer();
    let (s, b) = app
        .send(Method::GET, "/api/v1/db/nope", Some(&auth), None)
        .await;
    assert_error(s, &b, 404, Some("NO_ROUTE"));
    let (s, b) = app.send(Method::GET, "/", None, None).await;
    assert_error(s, &b, 404, Some("NO_ROUTE"));
    for (m, p) in [
        (Method::DELETE, "/api/v1/db/databases"),
        (Method::PUT, "/api/v1/db/databases"),
        (
            Method::DELETE,
            "/api/v1/db/databases/01HV000000000000000000000A",
        ),
        (
            Method::GET,
            "/api/v1/db/databases/01HV000000000000000000000A/rotate",
        ),
    ] {
        let (s, b) = app.send(m, p, Some(&auth), None).await;
        assert_error(s, &b, 405, Some("METHOD_NOT_ALLOWED"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_4xx_in_the_envelope() {
    let app = spawn_app().await;
    let url = format!("{}/api/v1/db/databases", app.address);
    let post = |body: String, ctype: &'static str| {
        app.client
            .post(&url)
            .header("Authorization", app.bearer())
            .header("Content-Type", ctype)
            .body(body)
    };
    let cases = [
        (
            post("{not json".into(), "application/json"),
            400,
            "BAD_REQUEST",
        ),
        (
            post(r#"{"name": 5}"#.into(), "application/json"),
            400,
            "BAD_REQUEST",
        ),
        (
            post(r#""just a string""#.into(), "application/json"),
            400,
            "BAD_REQUEST",
        ),
        (
            post("name=x".into(), "application/x-www-form-urlencoded"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            post(
                format!(r#"{{"name": "{}"}}"#, "x".repeat(100_000)),
                "application/json",
            ),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        let s = resp.status();
        let b: serde_json::Value = resp.json().await.unwrap();
        assert_error(s, &b, status, Some(code));
    }
    assert!(
        data(&app.list().await.1)["databases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (s, b) = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((s.as_u16(), &b["ok"]), (200, &serde_json::json!(true)));
    let (s, b) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        data(&b)["checks"],
        serde_json::json!({"metadata": "up", "broker": "up"})
    );
}
