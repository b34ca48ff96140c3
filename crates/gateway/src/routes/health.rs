//! Probes: `/healthz` says the process serves; `/readyz` says it can do its job (metadata
//! reachable, broker connected) and lists each check.

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
    let (status, body) = hepdb_telemetry::readiness(metadata && broker, checks);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"))
        .json(body)
}
