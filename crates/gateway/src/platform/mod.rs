//! The platform API: what the hosting platform's dashboard, billing and abuse systems call,
//! with platform tokens, on a listener of its own (`platform.listen`), never the public one.
//! Same envelope and error catalog as the public API; JSON fields in camelCase.

pub(crate) mod accounts;
mod auth;
pub(crate) mod databases;
pub(crate) mod keys;
pub(crate) mod reads;
mod whole_number;

use actix_web::{HttpRequest, web};
use hepdb_core::{
    ApiError,
    idempotency::{self, IdempotencyKey},
};
use hepdb_store::audit::AuditEntry;

pub use auth::{Authed, Platform};

use crate::{envelope::ok, error::HttpError, error::method_not_allowed, state::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/platform/v1")
            .service(
                web::resource("/accounts")
                    .route(web::post().to(accounts::create))
                    .route(web::get().to(accounts::find))
                    .default_service(method_not_allowed("POST, GET")),
            )
            .service(
                web::resource("/accounts/{id}")
                    .route(web::get().to(accounts::get))
                    .route(web::patch().to(accounts::patch))
                    .default_service(method_not_allowed("GET, PATCH")),
            )
            .service(
                web::resource("/accounts/{id}/suspend")
                    .route(web::post().to(accounts::suspend))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/accounts/{id}/unsuspend")
                    .route(web::post().to(accounts::unsuspend))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/accounts/{id}/keys")
                    .route(web::post().to(keys::mint))
                    .route(web::get().to(keys::list))
                    .default_service(method_not_allowed("POST, GET")),
            )
            .service(
                web::resource("/accounts/{id}/databases")
                    .route(web::get().to(reads::databases))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/accounts/{id}/audit")
                    .route(web::get().to(reads::audit))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/databases/{id}")
                    .route(web::get().to(databases::reveal))
                    .route(web::delete().to(databases::delete))
                    .default_service(method_not_allowed("GET, DELETE")),
            )
            .service(
                web::resource("/databases/{id}/rotate")
                    .route(web::post().to(databases::rotate))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/hosts")
                    .route(web::get().to(reads::hosts))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/hosts/{name}/drain")
                    .route(web::post().to(reads::drain))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/hosts/{name}/undrain")
                    .route(web::post().to(reads::undrain))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/keys/{id}")
                    .route(web::delete().to(keys::revoke))
                    .default_service(method_not_allowed("DELETE")),
            )
            .service(
                web::resource("/keys/{id}/disable")
                    .route(web::post().to(keys::disable))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/keys/{id}/enable")
                    .route(web::post().to(keys::enable))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/openapi.json")
                    .route(web::get().to(crate::openapi::platform_document))
                    .default_service(method_not_allowed("GET")),
            ),
    );
}

/// A request's Idempotency-Key and its fingerprint (method, path and body).
#[derive(Debug)]
pub struct Keyed {
    key: IdempotencyKey,
    fingerprint: Vec<u8>,
}

/// The request's Idempotency-Key, if it sent one, fingerprinted with what the request asks.
fn keyed(req: &HttpRequest, body: &str) -> Result<Option<Keyed>, HttpError> {
    let Some(raw) = req.headers().get(idempotency::HEADER) else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::BadRequest("the Idempotency-Key header is not ASCII".into()))?;
    let key = IdempotencyKey::parse(raw).map_err(ApiError::BadRequest)?;
    let fingerprint = idempotency::fingerprint(&[req.method().as_str(), req.path(), body]).to_vec();
    Ok(Some(Keyed { key, fingerprint }))
}

/// The resource an earlier request with the same key bound, to answer from instead of doing
/// the change again; 422 `IDEMPOTENCY_KEY_REUSED` if that request asked something else.
async fn prior(
    state: &AppState,
    platform: &Platform,
    keyed: Option<&Keyed>,
) -> Result<Option<String>, HttpError> {
    let Some(keyed) = keyed else { return Ok(None) };
    match state
        .store
        .platform_prior(&platform.token, keyed.key.as_str())
        .await?
    {
        None => Ok(None),
        Some((fingerprint, _)) if fingerprint != keyed.fingerprint => {
            Err(HttpError(ApiError::IdempotencyKeyReused))
        }
        Some((_, resource)) => Ok(Some(resource)),
    }
}

/// After a change failed: the resource a concurrent request with the same key bound, if that
/// is why; otherwise the error.
async fn raced(
    state: &AppState,
    platform: &Platform,
    keyed: Option<&Keyed>,
    error: hepdb_store::StoreError,
) -> Result<String, HttpError> {
    if hepdb_store::audit::key_taken(&error)
        && let Some(resource) = prior(state, platform, keyed).await?
    {
        return Ok(resource);
    }
    Err(error.into())
}

/// Records the dashboard's reveal or rotate of a database (in its account's log) before it
/// is answered, as the public API does; the token's name is the actor.
async fn audit_database(
    state: &AppState,
    platform: &Platform,
    action: &str,
    db: &hepdb_store::models::Database,
) -> Result<(), HttpError> {
    let actor = platform.actor();
    state
        .store
        .audit(AuditEntry {
            actor: actor.name,
            action,
            account: &db.account_id,
            database: Some(&db.id),
            key: None,
            address: actor.address,
            detail: None,
        })
        .await?;
    Ok(())
}
