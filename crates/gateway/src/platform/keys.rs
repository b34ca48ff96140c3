//! API keys, as the owner manages them in the dashboard: mint (shown once), list, switch off
//! and on, and revoke for good.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{ApiError, KeyId, time::iso8601};
use hepdb_store::models::ApiKeyRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Authed, Platform, accounts, keyed, ok, prior, raced};
use crate::{envelope::Envelope, error::HttpError, openapi, state::AppState};

/// A key as the dashboard shows it (never the key itself, except once at minting).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    #[schema(example = "01HV7Z3K8Q2N4R6T8V0X2Z4B6D")]
    id: String,
    #[schema(example = "ci")]
    label: String,
    /// Whether the key authenticates.
    enabled: bool,
    /// `owner` (the owner's switch) or `suspension` (the account's), or null when enabled.
    #[schema(example = json!(null))]
    disabled_by: Option<&'static str>,
    created_at: String,
    /// When the key last authenticated, to within a few minutes; null if never.
    last_used_at: Option<String>,
}

/// A key just minted: the only answer that carries the key itself.
#[derive(Serialize, ToSchema)]
pub struct MintedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The bearer key, shown only in the answer that minted it: hepdb keeps only its hash, so
    /// the answer to a retry with the same `Idempotency-Key` describes the key without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "hepgg_db_0123456789abcdef0123456789abcdef")]
    key: Option<String>,
}

/// The keys of an account.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// Every key not revoked, oldest first.
    keys: Vec<KeyView>,
}

/// A revoked key.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    id: String,
    /// Always true: the key never authenticates again.
    revoked: bool,
}

impl KeyView {
    fn of(row: &ApiKeyRow) -> Self {
        Self {
            id: row.id.clone(),
            label: row.label.clone(),
            enabled: row.enabled,
            disabled_by: row.disabled_by(),
            created_at: iso8601(row.created_at),
            last_used_at: row.last_used_at.map(iso8601),
        }
    }
}

/// A new key.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// What the owner calls it (at most 100 printable characters).
    #[serde(default)]
    #[schema(
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
        example = "ci"
    )]
    label: String,
}

fn key_id(raw: &str) -> Result<KeyId, HttpError> {
    raw.parse().map_err(|_| HttpError(ApiError::KeyNotFound))
}

/// Mint a key for an account: the answer is the only time the key is shown.
#[utoipa::path(
    post,
    path = "/platform/v1/accounts/{id}/keys",
    operation_id = "mintKey",
    tag = "keys",
    params(("id" = String, Path, description = "The account's id"), openapi::IdempotencyHeader),
    request_body = MintBody,
    responses(
        (status = 201, description = "The key, shown once", body = Envelope<MintedKey>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn mint(
    Authed(platform, body): Authed<MintBody>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let account = accounts::account_id(&path)?;
    let keyed = keyed(&req, &accounts::body_text(&body))?;
    if let Some(id) = prior(&state, &platform, keyed.as_ref()).await? {
        return replay(&state, &id, StatusCode::CREATED).await;
    }
    let label = body.label;
    if label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(HttpError(ApiError::BadRequest(
            "`label` must be at most 100 printable characters".into(),
        )));
    }
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    let (row, key) = match state.store.mint_labeled_key(account, &label, actor).await {
        Ok(minted) => minted.ok_or(HttpError(ApiError::AccountNotFound))?,
        Err(e) => {
            let id = raced(&state, &platform, keyed.as_ref(), e).await?;
            return replay(&state, &id, StatusCode::CREATED).await;
        }
    };
    let minted = MintedKey {
        view: KeyView::of(&row),
        key: Some(key.expose().to_owned()),
    };
    Ok(ok(StatusCode::CREATED, minted))
}

/// An account's keys: every key not revoked, never the keys themselves.
#[utoipa::path(
    get,
    path = "/platform/v1/accounts/{id}/keys",
    operation_id = "listKeys",
    tag = "keys",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 200, description = "The keys", body = Envelope<KeyList>),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn list(
    _: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let account = accounts::load(&state, accounts::account_id(&path)?).await?;
    let keys = state
        .store
        .keys_of(
            account
                .id
                .parse()
                .map_err(|_| HttpError(ApiError::Internal))?,
        )
        .await?;
    let keys = keys.iter().map(KeyView::of).collect();
    Ok(ok(StatusCode::OK, KeyList { keys }))
}

/// The owner's switch, off: the key stops authenticating at once (401 `KEY_DISABLED`).
#[utoipa::path(
    post,
    path = "/platform/v1/keys/{id}/disable",
    operation_id = "disableKey",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The key as it is now", body = Envelope<KeyView>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn disable(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    switch(platform, state, path, req, false).await
}

/// The owner's switch, on (a suspension's disabling stays until the unsuspension).
#[utoipa::path(
    post,
    path = "/platform/v1/keys/{id}/enable",
    operation_id = "enableKey",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The key as it is now", body = Envelope<KeyView>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn enable(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    switch(platform, state, path, req, true).await
}

async fn switch(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    enabled: bool,
) -> Result<HttpResponse, HttpError> {
    let keyed = keyed(&req, "")?;
    if let Some(id) = prior(&state, &platform, keyed.as_ref()).await? {
        return replay(&state, &id, StatusCode::OK).await;
    }
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    let row = match state
        .store
        .set_key_enabled(key_id(&path)?, enabled, actor)
        .await
    {
        Ok(row) => row.ok_or(HttpError(ApiError::KeyNotFound))?,
        Err(e) => {
            let id = raced(&state, &platform, keyed.as_ref(), e).await?;
            return replay(&state, &id, StatusCode::OK).await;
        }
    };
    Ok(ok(StatusCode::OK, KeyView::of(&row)))
}

/// The answer to a retried request about a key: the key as it is now (never the key
/// itself: it is shown only to the request that minted it).
async fn replay(state: &AppState, id: &str, status: StatusCode) -> Result<HttpResponse, HttpError> {
    let row = state
        .store
        .api_key(id)
        .await?
        .ok_or(HttpError(ApiError::KeyNotFound))?;
    Ok(ok(status, KeyView::of(&row)))
}

/// Revoke a key for good.
#[utoipa::path(
    delete,
    path = "/platform/v1/keys/{id}",
    operation_id = "revokeKey",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "Revoked", body = Envelope<Revoked>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn revoke(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let id = key_id(&path)?;
    let revoked = || {
        ok(
            StatusCode::OK,
            Revoked {
                id: id.to_text(),
                revoked: true,
            },
        )
    };
    let keyed = keyed(&req, "")?;
    if prior(&state, &platform, keyed.as_ref()).await?.is_some() {
        return Ok(revoked());
    }
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    match state.store.revoke_key(id, actor).await {
        Ok(found) => found.ok_or(HttpError(ApiError::KeyNotFound))?,
        Err(e) => raced(&state, &platform, keyed.as_ref(), e).await?,
    };
    Ok(revoked())
}
