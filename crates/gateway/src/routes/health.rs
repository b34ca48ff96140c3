//! Probes: `/healthz` says the process serves; `/readyz` says it can answer: metadata is
//! reachable. The broker is reported but not required: while it is down, list and reveal still
//! work and creates and rotates answer 503 `BROKER_UNAVAILABLE` in the envelope, which is
//! better for a client than no gateway behind the Service at all.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "data": { "status": "up" } }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let metadata = state.store.ping().await.is_ok();
    let broker = state.dispatcher.broker_connected();
    let up = |b: bool| if b { "up" } else { "down" };
    let checks = json!({ "metadata": up(metadata), "broker": up(broker) });
    let (status, body) = hepdb_telemetry::readiness(metadata, checks);
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"));
    if status == 503 {
        response.insert_header(("Retry-After", hepdb_telemetry::NOT_READY_RETRY_AFTER_SECS));
    }
    response.json(body)
}
