//! Restarts the real RabbitMQ under a running stack. Its own test binary, because cargo runs
//! test binaries one at a time: no other suite is using the broker while it is down.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use hepdb_testkit::*;
use reqwest::Method;
use serde_json::json;

fn rabbitmqctl(arg: &str) {
    let status = Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .expect("rabbitmqctl")
        .status;
    assert!(status.success(), "rabbitmqctl {arg}");
}

/// Waits until the gateway's `/readyz` reports the broker `want` ("up" or "down"); the gateway
/// stays ready throughout (it still answers reads).
async fn broker_becomes(app: &TestApp, want: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(status, 200, "{body}");
        if body["data"]["checks"]["broker"] == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Puts the broker back even if an assertion fails half-way.
struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_worker_recover_from_a_broker_restart_by_themselves() {
    let app = spawn_app_with(
        Options {
            slots: Some(5),
            ..Default::default()
        },
        |s| {
            s.gateway.job_timeout_ms = 5000;
        },
    )
    .await;
    assert_eq!(app.create(json!({"name": "before"})).await.0, 201);

    let _restart = Restart;
    rabbitmqctl("stop_app");
    assert!(
        broker_becomes(&app, "down", Duration::from_secs(10)).await,
        "readyz reports the outage"
    );
    // Reads go on through the outage.
    let (s, listed) = app.list().await;
    assert_eq!(s, 200, "{listed}");
    let id = data(&listed)["databases"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.reveal(&id).await.0, 200);
    let started = Instant::now();
    let (s, b) = app.create(json!({"name": "during"})).await;
    assert_error(s, &b, 503, Some("BROKER_UNAVAILABLE"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast, no hang"
    );

    rabbitmqctl("start_app");
    assert!(
        broker_becomes(&app, "up", Duration::from_secs(60)).await,
        "gateway reconnected"
    );
    let worker = app.worker.as_ref().unwrap();
    assert!(
        worker.wait_consuming(Duration::from_secs(30)).await,
        "worker reconnected"
    );

    // No process was restarted: the same gateway and worker serve again.
    let (s, b) = app.create(json!({"name": "during"})).await;
    assert_eq!(s, 201, "{b}");
    assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);
    let (_, listed) = app.list().await;
    assert_eq!(data(&listed)["databases"].as_array().unwrap().len(), 2);
}
