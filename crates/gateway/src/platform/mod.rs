//! The platform API: what the hosting platform's dashboard, billing and abuse systems call,
//! with platform tokens, on a listener of its own (`platform.listen`), never the public one.
//! Same envelope and error catalog as the public API; JSON fields in camelCase.

mod accounts;
mod auth;
mod keys;
mod reads;

use actix_web::{HttpResponse, http::StatusCode, web};
use hepdb_store::audit::AuditEntry;
use serde::Serialize;

pub use auth::{Authed, Platform};

use crate::{error::HttpError, error::method_not_allowed, state::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/platform/v1")
            .service(
                web::resource("/accounts")
                    .route(web::post().to(accounts::create))
                    .route(web::get().to(accounts::find))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/accounts/{id}")
                    .route(web::get().to(accounts::get))
                    .route(web::patch().to(accounts::patch))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/accounts/{id}/suspend")
                    .route(web::post().to(accounts::suspend))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/accounts/{id}/unsuspend")
                    .route(web::post().to(accounts::unsuspend))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/accounts/{id}/keys")
                    .route(web::post().to(keys::mint))
                    .route(web::get().to(keys::list))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/accounts/{id}/databases")
                    .route(web::get().to(reads::databases))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/accounts/{id}/audit")
                    .route(web::get().to(reads::audit))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/hosts")
                    .route(web::get().to(reads::hosts))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/hosts/{name}/drain")
                    .route(web::post().to(reads::drain))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/hosts/{name}/undrain")
                    .route(web::post().to(reads::undrain))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/keys/{id}")
                    .route(web::delete().to(keys::revoke))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/keys/{id}/disable")
                    .route(web::post().to(keys::disable))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/keys/{id}/enable")
                    .route(web::post().to(keys::enable))
                    .default_service(web::to(method_not_allowed)),
            ),
    );
}

fn ok(status: StatusCode, data: impl Serialize) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "ok": true, "data": data }))
}

/// Records a platform action before it is answered; the token's name is the actor.
async fn audit(
    state: &AppState,
    platform: &Platform,
    action: &str,
    account: &str,
    key: Option<&str>,
    detail: Option<&str>,
) -> Result<(), HttpError> {
    let (actor, address) = (platform.actor(), platform.address.map(|a| a.to_string()));
    state
        .store
        .audit(AuditEntry {
            actor: &actor,
            action,
            account,
            database: None,
            key,
            address: address.as_deref(),
            detail,
        })
        .await?;
    Ok(())
}
