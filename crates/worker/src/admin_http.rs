//! The worker's small admin port: `/healthz` (the process serves), `/readyz` (metadata
//! reachable and the broker consuming; each engine host's provisioner reported, but one host
//! down never makes the worker unready: its other hosts' jobs still run, and an unready worker
//! would stall rollouts and node drains), for Kubernetes probes and operators, and `/metrics`
//! (Prometheus, with `hepdb_engine_host_up` per host as of the last probe).

use std::{net::TcpListener, time::Duration};

use actix_web::{App, HttpResponse, HttpServer, dev::Server, web};
use futures_util::future::join_all;
use hepdb_queue::SessionView;
use serde_json::{Map, Value, json};

use crate::{consumer, jobs::JobContext};

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

struct Probe {
    ctx: JobContext,
    broker: SessionView<consumer::Session>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "data": { "status": "up" } }))
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(hepdb_telemetry::metrics().render())
}

async fn readyz(probe: web::Data<Probe>) -> HttpResponse {
    let up = |b: bool| Value::from(if b { "up" } else { "down" });
    let metadata = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, probe.ctx.store.ping()).await,
        Ok(Ok(()))
    );
    let broker = probe.broker.current().is_some();
    let engines = join_all(probe.ctx.engines.iter().map(|(host, driver)| async move {
        let ok = matches!(
            tokio::time::timeout(CHECK_TIMEOUT, driver.ping()).await,
            Ok(Ok(()))
        );
        metrics::gauge!("hepdb_engine_host_up", "host" => host.to_owned()).set(if ok {
            1.0
        } else {
            0.0
        });
        (host.to_owned(), ok)
    }))
    .await;
    let engines: Map<String, Value> = engines.into_iter().map(|(h, ok)| (h, up(ok))).collect();
    let checks = json!({ "metadata": up(metadata), "broker": up(broker), "engines": engines });
    let (status, body) = hepdb_telemetry::readiness(metadata && broker, checks);
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"));
    if status == 503 {
        response.insert_header(("Retry-After", hepdb_telemetry::NOT_READY_RETRY_AFTER_SECS));
    }
    response.json(body)
}

/// Binds `listen` and returns the server (to spawn) and its port.
pub fn serve(
    listen: &str,
    ctx: JobContext,
    broker: SessionView<consumer::Session>,
) -> std::io::Result<(Server, u16)> {
    let listener = TcpListener::bind(listen)?;
    let port = listener.local_addr()?.port();
    let probe = web::Data::new(Probe { ctx, broker });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(probe.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, port))
}
