//! API keys, as the owner manages them in the dashboard: mint (shown once), list, switch off
//! and on, and revoke for good.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{ApiError, KeyId, time::iso8601};
use hepdb_store::models::ApiKeyRow;
use serde::{Deserialize, Serialize};

use super::{Authed, Platform, accounts, keyed, ok, prior, raced};
use crate::{error::HttpError, state::AppState};

/// A key as the dashboard shows it (never the key itself, except once at minting).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyView {
    id: String,
    label: String,
    enabled: bool,
    disabled_by: Option<&'static str>,
    created_at: String,
    last_used_at: Option<String>,
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    #[serde(default)]
    label: String,
}

fn key_id(raw: &str) -> Result<KeyId, HttpError> {
    raw.parse().map_err(|_| HttpError(ApiError::KeyNotFound))
}

/// `POST /accounts/{id}/keys`: 201 with the key, the only time it is shown.
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
    let mut data = serde_json::to_value(KeyView::of(&row)).expect("key views serialize");
    data["key"] = key.expose().into();
    Ok(ok(StatusCode::CREATED, data))
}

/// `GET /accounts/{id}/keys`: every key not revoked.
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
    let keys: Vec<KeyView> = keys.iter().map(KeyView::of).collect();
    Ok(ok(StatusCode::OK, serde_json::json!({ "keys": keys })))
}

/// `POST /keys/{id}/disable` and `/enable`: the owner's switch.
pub async fn disable(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    switch(platform, state, path, req, false).await
}

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

/// `DELETE /keys/{id}`: revoked for good.
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
            serde_json::json!({ "id": id.to_text(), "revoked": true }),
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
