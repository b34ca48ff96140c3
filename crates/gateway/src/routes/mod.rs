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
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/databases/{id}")
                    .route(web::get().to(databases::reveal))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/databases/{id}/rotate")
                    .route(web::post().to(databases::rotate))
                    .default_service(web::to(method_not_allowed)),
            ),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(crate::metrics::render));
}
