//! Accounts: create (with the platform's own id), find, read, top up, and the suspension
//! cascade. Each change is audited with the token's name as the actor.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{
    AccountId, ApiError,
    account::{self, MAX_EXTERNAL_ID, MAX_NAME, MAX_SLOTS, MAX_STORAGE_MB, OutOfBounds},
    time::iso8601,
};
use hepdb_store::{
    accounts::{AccountUpdate, CreateAccountError, NewAccount, Usage},
    models::Account,
};
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, ToSchema,
    openapi::{
        Object, ObjectBuilder, Required, Type,
        path::{Parameter, ParameterBuilder, ParameterIn},
    },
};

use super::{Authed, Platform, keyed, ok, prior, raced, whole_number};
use crate::{envelope::Envelope, error::HttpError, openapi, state::AppState};

const MB: i64 = 1024 * 1024;

/// An account as the platform sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    #[schema(example = "01HV7Z3K8Q2N4R6T8V0X2Z4B6D")]
    id: String,
    /// The platform's own id of this user.
    #[schema(example = "user-4711")]
    external_id: Option<String>,
    #[schema(example = "Ada Lovelace")]
    name: String,
    slots: Slots,
    storage: Storage,
    /// Suspended accounts' keys are disabled and their databases refuse logins.
    suspended: bool,
    /// Whether the account may use databases at all.
    db_access: bool,
    /// Whether the engines are where metadata wants them after a suspension or an
    /// unsuspension (a storage change shows here once the quota watcher's next pass has
    /// moved databases over or under quota); `pending` databases are still on their way.
    engine_access: EngineAccess,
    created_at: String,
}

/// Database slots: how many the account has, and how many its databases hold.
#[derive(Serialize, ToSchema)]
struct Slots {
    total: i32,
    used: i64,
}

/// Storage: the quota, and what the databases measured at their last refresh.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Storage {
    quota_bytes: i64,
    used_bytes: i64,
}

/// The engine side of a suspension or unsuspension.
#[derive(Serialize, ToSchema)]
struct EngineAccess {
    /// Every database's engine access is what metadata wants.
    converged: bool,
    /// Databases whose access job has not finished yet.
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

/// A new account.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    /// The platform's own id of the user, unique.
    #[schema(schema_with = external_id_schema)]
    external_id: String,
    #[schema(schema_with = name_schema)]
    name: String,
    #[serde(deserialize_with = "whole_number::required")]
    #[schema(minimum = 0, maximum = 100_000, example = 3)]
    slots: i32,
    #[serde(deserialize_with = "whole_number::required")]
    #[schema(minimum = 0, maximum = 100_000_000, example = 1024)]
    storage_mb: i64,
    /// Whether the account may use databases (default true).
    db_access: Option<bool>,
}

/// What [`check_text`] accepts, as a pattern for the documents: no control character, and at
/// least one that is not white space.
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn printable(max: usize, example: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(PRINTABLE))
        .examples([example])
        .build()
}

fn external_id_schema() -> Object {
    printable(MAX_EXTERNAL_ID, "user-4711")
}

fn name_schema() -> Object {
    printable(MAX_NAME, "Ada Lovelace")
}

/// Printable text with at least one visible character.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), HttpError> {
    account::is_printable(value, max)
        .then_some(())
        .ok_or_else(|| {
            HttpError(ApiError::BadRequest(format!(
                "`{field}` must be 1 to {max} printable characters"
            )))
        })
}

fn check_quota(slots: Option<i32>, storage_mb: Option<i64>) -> Result<(), HttpError> {
    account::check_entitlements(slots, storage_mb).map_err(|e| {
        HttpError(ApiError::BadRequest(match e {
            OutOfBounds::Slots => format!("`slots` must be 0 to {MAX_SLOTS}"),
            OutOfBounds::StorageMb => format!("`storageMb` must be 0 to {MAX_STORAGE_MB}"),
        }))
    })
}

/// Create an account for one of the platform's users; 409 `EXTERNAL_ID_TAKEN` if that user
/// has one.
#[utoipa::path(
    post,
    path = "/platform/v1/accounts",
    operation_id = "createAccount",
    tag = "accounts",
    params(openapi::IdempotencyHeader),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = Envelope<AccountView>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 409, response = openapi::Conflict),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn create(
    Authed(platform, body): Authed<CreateBody>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    check_text("externalId", &body.external_id, MAX_EXTERNAL_ID)?;
    check_text("name", &body.name, MAX_NAME)?;
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
pub struct FindQuery {
    external_id: String,
}

/// By hand: the derive drops `required` from a parameter whose schema is `schema_with`.
impl IntoParams for FindQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("externalId")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some("The platform's own id of the user."))
                .schema(Some(external_id_schema()))
                .build(),
        ]
    }
}

/// Find the account of one of the platform's users.
#[utoipa::path(
    get,
    path = "/platform/v1/accounts",
    operation_id = "findAccount",
    tag = "accounts",
    params(FindQuery),
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn find(
    _: Platform,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let query = web::Query::<FindQuery>::from_query(req.query_string())
        .map_err(|e| HttpError(ApiError::BadRequest(e.to_string())))?;
    let external_id = query.into_inner().external_id;
    check_text("externalId", &external_id, MAX_EXTERNAL_ID)?;
    let account = state
        .store
        .account_by_external_id(&external_id)
        .await?
        .ok_or(HttpError(ApiError::AccountNotFound))?;
    Ok(ok(StatusCode::OK, view(&state, account).await?))
}

/// An account, with its slots, storage, suspension and the engine side's progress.
#[utoipa::path(
    get,
    path = "/platform/v1/accounts/{id}",
    operation_id = "getAccount",
    tag = "accounts",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn get(
    _: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let account = load(&state, account_id(&path)?).await?;
    Ok(ok(StatusCode::OK, view(&state, account).await?))
}

/// What to change; absent fields stay as they are.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(minimum = 0, maximum = 100_000, example = 5)]
    slots: Option<i32>,
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(minimum = 0, maximum = 100_000_000, example = 2048)]
    storage_mb: Option<i64>,
    db_access: Option<bool>,
}

/// Top up slots or storage, or switch database access.
#[utoipa::path(
    patch,
    path = "/platform/v1/accounts/{id}",
    operation_id = "updateAccount",
    tag = "accounts",
    params(("id" = String, Path, description = "The account's id"), openapi::IdempotencyHeader),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The account as it is now", body = Envelope<AccountView>),
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

/// Suspend an account: its keys and databases are disabled before the answer; the engines
/// follow, and `engineAccess` shows their progress (here and in `GET /accounts/{id}`).
#[utoipa::path(
    post,
    path = "/platform/v1/accounts/{id}/suspend",
    operation_id = "suspendAccount",
    tag = "accounts",
    params(("id" = String, Path, description = "The account's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The account as it is now", body = Envelope<AccountView>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn suspend(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    set_suspended(platform, state, path, req, true).await
}

/// Lift a suspension: what the suspension disabled is enabled again (a key its owner
/// disabled stays disabled).
#[utoipa::path(
    post,
    path = "/platform/v1/accounts/{id}/unsuspend",
    operation_id = "unsuspendAccount",
    tag = "accounts",
    params(("id" = String, Path, description = "The account's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The account as it is now", body = Envelope<AccountView>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
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
