//! Accounts: create (with the platform's own id), find, read, top up, and the suspension
//! cascade. Each change is audited with the token's name as the actor.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{AccountId, ApiError, time::iso8601};
use hepdb_store::{
    accounts::{AccountUpdate, CreateAccountError, NewAccount, Usage},
    models::Account,
};
use serde::{Deserialize, Serialize};

use super::{Authed, Platform, keyed, ok, prior, raced};
use crate::{error::HttpError, state::AppState};

const MB: i64 = 1024 * 1024;
/// Bounds on what an account may be given, so that a typo cannot overflow anything.
const MAX_SLOTS: i32 = 100_000;
const MAX_STORAGE_MB: i64 = 100_000_000;

/// An account as the platform sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    id: String,
    external_id: Option<String>,
    name: String,
    slots: Slots,
    storage: Storage,
    suspended: bool,
    db_access: bool,
    /// Whether the engines are where metadata wants them after a suspension or an
    /// unsuspension (a storage change shows here once the quota watcher's next pass has
    /// moved databases over or under quota); `pending` databases are still on their way.
    engine_access: EngineAccess,
    created_at: String,
}

#[derive(Serialize)]
struct Slots {
    total: i32,
    used: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Storage {
    quota_bytes: i64,
    used_bytes: i64,
}

#[derive(Serialize)]
struct EngineAccess {
    converged: bool,
    pending: i64,
}

impl AccountView {
    fn of(a: Account, usage: Usage) -> Self {
        Self {
            id: a.id,
            external_id: a.external_id,
            name: a.name,
            slots: Slots {
                total: a.slots,
                used: usage.slots_used,
            },
            storage: Storage {
                quota_bytes: a.storage_mb.saturating_mul(MB),
                used_bytes: usage.used_bytes,
            },
            suspended: a.suspended,
            db_access: a.db_access,
            engine_access: EngineAccess {
                converged: usage.access_pending == 0,
                pending: usage.access_pending,
            },
            created_at: iso8601(a.created_at),
        }
    }
}

async fn view(state: &AppState, account: Account) -> Result<AccountView, HttpError> {
    let usage = state.store.usage(&account).await?;
    Ok(AccountView::of(account, usage))
}

/// An account id from the path; a malformed one names no account.
pub fn account_id(raw: &str) -> Result<AccountId, HttpError> {
    raw.parse()
        .map_err(|_| HttpError(ApiError::AccountNotFound))
}

pub async fn load(state: &AppState, id: AccountId) -> Result<Account, HttpError> {
    state
        .store
        .account(id)
        .await?
        .ok_or(HttpError(ApiError::AccountNotFound))
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    external_id: String,
    name: String,
    slots: i32,
    storage_mb: i64,
    db_access: Option<bool>,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), HttpError> {
    let ok = !value.trim().is_empty()
        && value.chars().count() <= max
        && !value.chars().any(char::is_control);
    ok.then_some(()).ok_or_else(|| {
        HttpError(ApiError::BadRequest(format!(
            "`{field}` must be 1 to {max} printable characters"
        )))
    })
}

fn check_quota(slots: Option<i32>, storage_mb: Option<i64>) -> Result<(), HttpError> {
    if slots.is_some_and(|s| !(0..=MAX_SLOTS).contains(&s)) {
        return Err(HttpError(ApiError::BadRequest(format!(
            "`slots` must be 0 to {MAX_SLOTS}"
        ))));
    }
    if storage_mb.is_some_and(|s| !(0..=MAX_STORAGE_MB).contains(&s)) {
        return Err(HttpError(ApiError::BadRequest(format!(
            "`storageMb` must be 0 to {MAX_STORAGE_MB}"
        ))));
    }
    Ok(())
}

/// `POST /accounts`: 201 with the account; 409 `EXTERNAL_ID_TAKEN` if the platform id has one.
pub async fn create(
    Authed(platform, body): Authed<CreateBody>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    check_text("externalId", &body.external_id, 255)?;
    check_text("name", &body.name, 100)?;
    check_quota(Some(body.slots), Some(body.storage_mb))?;
    let keyed = keyed(&req, &body_text(&body))?;
    if let Some(id) = prior(&state, &platform, keyed.as_ref()).await? {
        return replay(&state, &id, StatusCode::CREATED).await;
    }
    let new = NewAccount {
        external_id: Some(&body.external_id),
        name: &body.name,
        slots: body.slots,
        storage_mb: body.storage_mb,
        db_access: body.db_access.unwrap_or(true),
    };
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    let account = match state.store.insert_account(&new, actor).await {
        Ok(account) => account,
        // A concurrent request with the same key may have taken the externalId first.
        Err(CreateAccountError::ExternalIdTaken) => {
            return match prior(&state, &platform, keyed.as_ref()).await? {
                Some(id) => replay(&state, &id, StatusCode::CREATED).await,
                None => Err(HttpError(ApiError::ExternalIdTaken)),
            };
        }
        Err(CreateAccountError::Store(e)) => {
            let id = raced(&state, &platform, keyed.as_ref(), e).await?;
            return replay(&state, &id, StatusCode::CREATED).await;
        }
    };
    Ok(ok(StatusCode::CREATED, view(&state, account).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FindQuery {
    external_id: Option<String>,
}

/// `GET /accounts?externalId=…`: the account with that platform id.
pub async fn find(
    _: Platform,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let query = web::Query::<FindQuery>::from_query(req.query_string())
        .map_err(|e| HttpError(ApiError::BadRequest(e.to_string())))?;
    let Some(external_id) = query.into_inner().external_id else {
        return Err(HttpError(ApiError::BadRequest(
            "give `externalId` to find an account".into(),
        )));
    };
    let account = state
        .store
        .account_by_external_id(&external_id)
        .await?
        .ok_or(HttpError(ApiError::AccountNotFound))?;
    Ok(ok(StatusCode::OK, view(&state, account).await?))
}

/// `GET /accounts/{id}`.
pub async fn get(
    _: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let account = load(&state, account_id(&path)?).await?;
    Ok(ok(StatusCode::OK, view(&state, account).await?))
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchBody {
    slots: Option<i32>,
    storage_mb: Option<i64>,
    db_access: Option<bool>,
}

/// `PATCH /accounts/{id}`: top-ups and access.
pub async fn patch(
    Authed(platform, body): Authed<PatchBody>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let id = account_id(&path)?;
    check_quota(body.slots, body.storage_mb)?;
    let keyed = keyed(&req, &body_text(&body))?;
    if let Some(id) = prior(&state, &platform, keyed.as_ref()).await? {
        return replay(&state, &id, StatusCode::OK).await;
    }
    let update = AccountUpdate {
        slots: body.slots,
        storage_mb: body.storage_mb,
        db_access: body.db_access,
    };
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    let account = match state.store.update_account(id, &update, actor).await {
        Ok(account) => account.ok_or(HttpError(ApiError::AccountNotFound))?,
        Err(e) => {
            let id = raced(&state, &platform, keyed.as_ref(), e).await?;
            return replay(&state, &id, StatusCode::OK).await;
        }
    };
    Ok(ok(StatusCode::OK, view(&state, account).await?))
}

/// `POST /accounts/{id}/suspend` and `/unsuspend`: keys and metadata change in one
/// transaction before the answer; the engines follow through access jobs, whose progress
/// the answer (and `GET /accounts/{id}`) shows as `engineAccess`.
pub async fn suspend(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    set_suspended(platform, state, path, req, true).await
}

pub async fn unsuspend(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    set_suspended(platform, state, path, req, false).await
}

async fn set_suspended(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    suspend: bool,
) -> Result<HttpResponse, HttpError> {
    let id = account_id(&path)?;
    let keyed = keyed(&req, "")?;
    if let Some(id) = prior(&state, &platform, keyed.as_ref()).await? {
        return replay(&state, &id, StatusCode::OK).await;
    }
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    let done = if suspend {
        state.store.suspend_account(id, actor).await
    } else {
        state.store.unsuspend_account(id, actor).await
    };
    let done = match done {
        Ok(done) => done.ok_or(HttpError(ApiError::AccountNotFound))?,
        Err(e) => {
            let id = raced(&state, &platform, keyed.as_ref(), e).await?;
            return replay(&state, &id, StatusCode::OK).await;
        }
    };
    // Whatever cannot be sent now, the reconciler delivers.
    state.dispatcher.send_access_jobs(&done.jobs).await;
    let account = load(&state, id).await?;
    Ok(ok(StatusCode::OK, view(&state, account).await?))
}

/// The answer to a retried request: the account as it is now.
async fn replay(state: &AppState, id: &str, status: StatusCode) -> Result<HttpResponse, HttpError> {
    let account = load(state, account_id(id)?).await?;
    Ok(ok(status, view(state, account).await?))
}

/// What a request body asks, for its Idempotency-Key's fingerprint.
pub fn body_text(body: &impl Serialize) -> String {
    serde_json::to_string(body).expect("request bodies serialize")
}
