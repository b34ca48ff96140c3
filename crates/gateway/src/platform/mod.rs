//! The platform API: what the hosting platform's dashboard, billing and abuse systems call,
//! with platform tokens, on a listener of its own (`platform.listen`), never the public one.
//! Same envelope and error catalog as the public API; JSON fields in camelCase.

mod accounts;
mod auth;
mod databases;
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
                web::resource("/databases/{id}")
                    .route(web::get().to(databases::reveal))
                    .route(web::delete().to(databases::delete))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/databases/{id}/rotate")
                    .route(web::post().to(databases::rotate))
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

/// Records a platform action on a database (in its account's log) before it is answered.
async fn audit_database(
    state: &AppState,
    platform: &Platform,
    action: &str,
    db: &hepdb_store::models::Database,
) -> Result<(), HttpError> {
    let target = Target {
        account: &db.account_id,
        database: Some(&db.id),
        key: None,
    };
    record(state, platform, action, target, None).await
}

/// What an audit entry is about.
struct Target<'a> {
    account: &'a str,
    database: Option<&'a str>,
    key: Option<&'a str>,
}

/// Writes the entry, with the token's name as the actor and the caller's address.
async fn record(
    state: &AppState,
    platform: &Platform,
    action: &str,
    target: Target<'_>,
    detail: Option<&str>,
) -> Result<(), HttpError> {
    let actor = platform.actor();
    state
        .store
        .audit(AuditEntry {
            actor: actor.name,
            action,
            account: target.account,
            database: target.database,
            key: target.key,
            address: actor.address,
            detail,
        })
        .await?;
    Ok(())
}
