//! The OpenAPI documents: each served on its own listener only, without a credential, and
//! every operation it describes is a route of that listener that refuses a caller without one.
//! (Schemathesis checks the rest against a running stack: `cargo xtask fuzz`.)

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use hepdb_testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served_and_guarded() {
    let app = spawn_app_with(
        Options {
            no_worker: true,
            ..Options::default()
        },
        |_| {},
    )
    .await;
    let listeners = [
        (&app.address, "/api/v1/db/openapi.json", "NO_KEY", 4),
        (
            &app.platform_address,
            "/platform/v1/openapi.json",
            "NO_TOKEN",
            19,
        ),
    ];
    for (base, document, code, operations) in listeners {
        let resp = app
            .client
            .get(format!("{base}{document}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let concrete = path
                .replace("{id}", "01HV7Z3K8Q2N4R6T8V0X2Z4B6D")
                .replace("{name}", "some-host");
            // A method the path does not have: 405, with the ones it has in `Allow`.
            let resp = app
                .client
                .put(format!("{base}{concrete}"))
                .send()
                .await
                .unwrap();
            let mut allow: Vec<String> = resp.headers()["allow"]
                .to_str()
                .unwrap()
                .split(", ")
                .map(str::to_lowercase)
                .collect();
            allow.sort();
            let mut documented: Vec<String> = item.as_object().unwrap().keys().cloned().collect();
            documented.sort();
            assert_eq!(allow, documented, "{path}");
            let (status, body) = (resp.status(), resp.json::<Value>().await.unwrap());
            assert_error(status, &body, 405, Some("METHOD_NOT_ALLOWED"));
            for method in item.as_object().unwrap().keys() {
                let method: Method = method.to_uppercase().parse().unwrap();
                let mut req = app
                    .client
                    .request(method.clone(), format!("{base}{concrete}"));
                if method == Method::POST || method == Method::PATCH {
                    req = req.json(&json!({}));
                }
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let body: Value = resp.json().await.unwrap();
                assert_error(status, &body, 401, Some(code));
                seen += 1;
            }
        }
        assert_eq!(seen, operations, "{document}");
    }
    // Neither listener serves the other's document.
    for (base, other) in [
        (&app.address, "/platform/v1/openapi.json"),
        (&app.platform_address, "/api/v1/db/openapi.json"),
    ] {
        let resp = app
            .client
            .get(format!("{base}{other}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_error(status, &body, 404, Some("NO_ROUTE"));
    }
}
