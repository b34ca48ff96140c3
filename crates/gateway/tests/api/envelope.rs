use reqwest::Method;

use hepdb_testkit::*;

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

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id_and_errors_repeat_it() {
    let app = spawn_app().await;
    let get = |path: &str, id: Option<&str>| {
        let mut req = app.client.get(format!("{}{path}", app.address));
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        req.send()
    };
    // Generated when absent: in the header, and in the error envelope.
    let resp = get("/api/v1/db/databases", None).await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["code"], &body["requestId"]),
        (&"NO_KEY".into(), &id.clone().into())
    );
    // A caller's well-formed id is kept; a malformed one is replaced.
    let resp = get("/nope", Some("trace-abc-123")).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["requestId"], "trace-abc-123");
    let resp = get("/healthz", Some("bad id with spaces")).await.unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id with spaces");
    // Successes carry the header, not a body field (the spec's data shape is unchanged).
    let resp = app
        .client
        .get(format!("{}/api/v1/db/databases", app.address))
        .header("Authorization", app.bearer())
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body.get("requestId").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn both_binaries_serve_prometheus_metrics() {
    let app = spawn_app().await;
    let (s, b) = app.create(serde_json::json!({"name": "measured"})).await;
    assert_eq!(s, 201, "{b}");
    let text = |url: String| async move {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        resp.text().await.unwrap()
    };
    let gateway = text(format!("{}/metrics", app.metrics_address)).await;
    // Not on the public listener (nor the platform's).
    for base in [&app.address, &app.platform_address] {
        let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(resp.status(), 404);
    }
    for want in [
        r#"hepdb_http_requests_total{route="/api/v1/db/databases",method="POST",status="201"}"#,
        r#"hepdb_http_request_duration_seconds_bucket{route="/api/v1/db/databases",method="POST",status="201",le="#,
        r#"hepdb_broker_connections_total{role="hepdb-gateway"}"#,
    ] {
        assert!(gateway.contains(want), "missing {want}");
    }
    // Ids never become labels.
    assert!(!gateway.contains(data(&b)["id"].as_str().unwrap()));
    let port = app.worker.as_ref().unwrap().admin_port();
    let worker = text(format!("http://127.0.0.1:{port}/metrics")).await;
    for want in [
        r#"hepdb_jobs_total{kind="create",outcome="done"}"#,
        r#"hepdb_engine_steps_total{kind="create",engine="mariadb",outcome="done"}"#,
        r#"hepdb_job_duration_seconds_bucket{kind="create",outcome="done",le="#,
    ] {
        assert!(worker.contains(want), "missing {want}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_metadata_connections_are_503_then_replaced_never_500() {
    let app = spawn_app().await;
    let (_, created) = app.create(serde_json::json!({"name": "kept"})).await;
    let id = data(&created)["id"].as_str().unwrap().to_owned();
    assert_eq!(app.list().await.0, 200);

    // What a metadata restart does to pooled connections: the server ends them.
    let url = app.settings.metadata.url.expose();
    let (dbname, admin) = (
        url.rsplit('/').next().unwrap(),
        url.rsplit_once('/').unwrap().0,
    );
    let (client, conn) =
        tokio_postgres::connect(&format!("{admin}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let ended = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&dbname],
        )
        .await
        .unwrap();
    assert!(ended > 0, "the pools had connections to end");

    // Each request either works on a fresh connection or says the metadata database is
    // unavailable; the broken connections are discarded, so the answers come back.
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (s, b) = app.reveal(&id).await;
        if s != 200 {
            assert_error(s, &b, 503, Some("METADATA_UNAVAILABLE"));
        }
        answers.push(s.as_u16());
    }
    assert!(answers.ends_with(&[200, 200, 200]), "{answers:?}");
}
