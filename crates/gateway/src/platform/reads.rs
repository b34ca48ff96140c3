//! What the platform reads and switches besides accounts and keys: an account's databases (in
//! every state, with host and size), its audit log page by page, and the engine hosts.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{ApiError, time::iso8601};
use hepdb_store::{audit::AuditRow, models::Database};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Platform, accounts, ok};
use crate::{envelope::Envelope, error::HttpError, openapi, state::AppState};

/// A database as the platform sees it: every state, where it lives, what it measures. Never
/// its password (reveal is its own, audited, call).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseView<'a> {
    #[schema(example = "01HV7Z3K8Q2N4R6T8V0X2Z4B6D")]
    id: &'a str,
    #[schema(example = "my-app")]
    name: &'a str,
    #[schema(example = "mariadb")]
    engine: &'a str,
    #[schema(example = "um_0a1b2c3d4e_1")]
    db_name: &'a str,
    #[schema(example = "dum_0a1b2c3d4e_1")]
    db_user: &'a str,
    /// `creating`, `active`, `over_quota`, `disabled`, `failed` or `deleting`.
    #[schema(example = "active")]
    state: &'a str,
    /// The engine host it lives on.
    #[schema(example = "mariadb-1")]
    host: &'a str,
    size_bytes: i64,
    size_refreshed_at: Option<String>,
    /// Whether logins are `open`, `locked` or in between (`locking`, `unlocking`).
    #[schema(example = "open")]
    engine_access: &'a str,
    created_at: String,
}

/// An account's databases.
#[derive(Serialize, ToSchema)]
pub struct DatabaseViews<'a> {
    /// Every database, in every state, oldest first.
    databases: Vec<DatabaseView<'a>>,
}

impl<'a> DatabaseView<'a> {
    fn of(db: &'a Database) -> Self {
        Self {
            id: &db.id,
            name: &db.name,
            engine: &db.engine,
            db_name: &db.db_name,
            db_user: &db.db_user,
            state: &db.state,
            host: &db.host,
            size_bytes: db.size_bytes,
            size_refreshed_at: db.size_refreshed_at.map(iso8601),
            engine_access: &db.engine_access,
            created_at: iso8601(db.created_at),
        }
    }
}

/// Every database of an account, including the states the public list hides (creating,
/// failed, deleting), with host and sizes.
#[utoipa::path(
    get,
    path = "/platform/v1/accounts/{id}/databases",
    operation_id = "listAccountDatabases",
    tag = "databases",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 200, description = "The databases", body = Envelope<DatabaseViews>),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn databases(
    _: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = accounts::account_id(&path)?;
    accounts::load(&state, id).await?;
    let rows = state.store.databases_of(id).await?;
    let databases = rows.iter().map(DatabaseView::of).collect();
    Ok(ok(StatusCode::OK, DatabaseViews { databases }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The previous page's `nextCursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
    /// Only entries of this action, for example `database.reveal`.
    #[param(pattern = "^[a-z_.]{1,64}$")]
    action: Option<String>,
}

/// One entry of the audit log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    #[schema(example = "2026-05-20T09:30:00.000Z")]
    at: String,
    /// Who did it: a platform token's name, an API key's id, or an operator's user name.
    #[schema(example = "dashboard")]
    actor: String,
    /// What `actor` names.
    actor_type: ActorType,
    #[schema(example = "database.reveal")]
    action: String,
    database_id: Option<String>,
    key_id: Option<String>,
    /// The caller's address.
    address: Option<String>,
    detail: Option<String>,
}

/// One page of the audit log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// Newest first.
    entries: Vec<AuditView>,
    /// The `cursor` of the next page; null on the last one.
    next_cursor: Option<String>,
}

/// An engine host.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    #[schema(example = "mariadb-1")]
    name: String,
    #[schema(example = "mariadb")]
    engine: String,
    /// `open`, or `drained` (no new databases are placed there).
    #[schema(example = "open")]
    state: &'static str,
    /// How many databases it may hold.
    capacity: i32,
    /// How many it holds.
    databases: i64,
    size_bytes: i64,
    /// Where tenants connect.
    #[schema(example = "db.example.com:3306")]
    public_endpoint: String,
}

/// The engine hosts.
#[derive(Serialize, ToSchema)]
pub struct HostList {
    hosts: Vec<HostView>,
}

/// A host's placement after a drain or undrain.
#[derive(Serialize, ToSchema)]
pub struct Placement {
    name: String,
    /// `open` or `drained`.
    state: &'static str,
}

fn placement(drained: bool) -> &'static str {
    if drained { "drained" } else { "open" }
}

/// What an audit entry's actor names.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ActorType {
    /// A platform token (the dashboard, billing, abuse tooling).
    Platform,
    /// A tenant's API key, on the public API.
    Key,
    /// An operator, through `hepdb-admin`.
    Operator,
}

impl AuditView {
    fn of(row: AuditRow) -> Self {
        let (kind, name) = row.actor_parts();
        let actor_type = match kind {
            "platform" => ActorType::Platform,
            "key" => ActorType::Key,
            _ => ActorType::Operator,
        };
        Self {
            at: iso8601(row.at),
            actor: name.to_owned(),
            actor_type,
            action: row.action,
            database_id: row.database_id,
            key_id: row.key_id,
            address: row.address,
            detail: row.detail,
        }
    }
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

/// An account's audit log, newest first, page by page: `nextCursor` fetches the page after
/// this one, and is null on the last page.
#[utoipa::path(
    get,
    path = "/platform/v1/accounts/{id}/audit",
    operation_id = "listAudit",
    tag = "accounts",
    params(("id" = String, Path, description = "The account's id"), AuditQuery),
    responses(
        (status = 200, description = "A page", body = Envelope<AuditPage>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn audit(
    _: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let id = accounts::account_id(&path)?;
    let query = web::Query::<AuditQuery>::from_query(req.query_string())
        .map_err(|e| HttpError(ApiError::BadRequest(e.to_string())))?
        .into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(HttpError(ApiError::BadRequest(format!(
            "`limit` must be 1 to {MAX_PAGE}"
        ))));
    }
    let before = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| HttpError(ApiError::BadRequest("`cursor` is not valid".into())))?,
        ),
    };
    let named = |a: &str| {
        (1..=64).contains(&a.len())
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
    };
    if query.action.as_deref().is_some_and(|a| !named(a)) {
        return Err(HttpError(ApiError::BadRequest(
            "`action` names an action, such as `database.reveal`".into(),
        )));
    }
    accounts::load(&state, id).await?;
    let rows = state
        .store
        .audit_page(id, limit, before, query.action.as_deref())
        .await?;
    let next = (i64::try_from(rows.len()).unwrap_or(i64::MAX) == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let entries = rows.into_iter().map(AuditView::of).collect();
    Ok(ok(
        StatusCode::OK,
        AuditPage {
            entries,
            next_cursor: next,
        },
    ))
}

/// Every engine host, open or drained, with what it holds.
#[utoipa::path(
    get,
    path = "/platform/v1/hosts",
    operation_id = "listHosts",
    tag = "hosts",
    responses(
        (status = 200, description = "The hosts", body = Envelope<HostList>),
        (status = 401, response = openapi::Unauthorized),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn hosts(_: Platform, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let hosts = state
        .store
        .host_summaries()
        .await?
        .into_iter()
        .map(|s| {
            let h = s.host;
            HostView {
                state: placement(h.drained),
                public_endpoint: format!("{}:{}", h.public_host, h.public_port),
                name: h.name,
                engine: h.engine,
                capacity: h.capacity,
                databases: s.databases,
                size_bytes: s.size_bytes,
            }
        })
        .collect();
    Ok(ok(StatusCode::OK, HostList { hosts }))
}

/// Drain a host: no new databases are placed on it; its databases keep working.
#[utoipa::path(
    post,
    path = "/platform/v1/hosts/{name}/drain",
    operation_id = "drainHost",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "Drained", body = Envelope<Placement>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn drain(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    set_drained(platform, state, path, req, true).await
}

/// Open a drained host for new databases again.
#[utoipa::path(
    post,
    path = "/platform/v1/hosts/{name}/undrain",
    operation_id = "undrainHost",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "Open", body = Envelope<Placement>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn undrain(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    set_drained(platform, state, path, req, false).await
}

async fn set_drained(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    drained: bool,
) -> Result<HttpResponse, HttpError> {
    let keyed = super::keyed(&req, "")?;
    let name = path.into_inner();
    // A name no host could have names no host (and never reaches metadata).
    if !hepdb_core::settings::valid_host_name(&name) {
        return Err(HttpError(ApiError::HostNotFound));
    }
    // A retry is answered as the first request was, without changing the host again (an
    // undrain since then stands).
    if let Some(host) = super::prior(&state, &platform, keyed.as_ref()).await? {
        let state = placement(drained);
        return Ok(ok(StatusCode::OK, Placement { name: host, state }));
    }
    let binding = platform.actor_keyed(keyed.as_ref()).idempotency;
    let found = match state.store.set_drained_bound(&name, drained, binding).await {
        Ok(found) => found,
        Err(e) => {
            super::raced(&state, &platform, keyed.as_ref(), e).await?;
            true
        }
    };
    if !found {
        return Err(HttpError(ApiError::HostNotFound));
    }
    tracing::info!(host = %name, drained, actor = platform.actor().name, "host placement changed");
    Ok(ok(
        StatusCode::OK,
        Placement {
            name,
            state: placement(drained),
        },
    ))
}
