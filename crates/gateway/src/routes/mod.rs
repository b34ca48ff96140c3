//! URL map. Each resource answers a wrong method with 405 in the envelope.

pub(crate) mod databases;
mod health;

use actix_web::web;

use crate::error::method_not_allowed;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/db")
            .service(
                web::resource("/databases")
                    .route(web::get().to(databases::list))
                    .route(web::post().to(databases::create))
                    .default_service(method_not_allowed("GET, POST")),
            )
            .service(
                web::resource("/databases/{id}")
                    .route(web::get().to(databases::reveal))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/databases/{id}/rotate")
                    .route(web::post().to(databases::rotate))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/openapi.json")
                    .route(web::get().to(crate::openapi::public_document))
                    .default_service(method_not_allowed("GET")),
            ),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz));
}
