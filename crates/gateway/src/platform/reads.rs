//! What the platform reads and switches besides accounts and keys: an account's databases (in
//! every state, with host and size), its audit log page by page, and the engine hosts.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{ApiError, time::iso8601};
use hepdb_store::{audit::AuditRow, models::Database};
use serde::{Deserialize, Serialize};

use super::{Platform, accounts, ok};
use crate::{error::HttpError, state::AppState};

/// A database as the platform sees it: every state, where it lives, what it measures. Never
/// its password (reveal is its own, audited, call).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatabaseView<'a> {
    id: &'a str,
    name: &'a str,
    engine: &'a str,
    db_name: &'a str,
    db_user: &'a str,
    state: &'a str,
    host: &'a str,
    size_bytes: i64,
    size_refreshed_at: Option<String>,
    engine_access: &'a str,
    created_at: String,
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

/// `GET /accounts/{id}/databases`.
pub async fn databases(
    _: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = accounts::account_id(&path)?;
    accounts::load(&state, id).await?;
    let rows = state.store.databases_of(id).await?;
    let views: Vec<DatabaseView<'_>> = rows.iter().map(DatabaseView::of).collect();
    Ok(ok(
        StatusCode::OK,
        serde_json::json!({ "databases": views }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    action: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditView {
    at: String,
    actor: String,
    action: String,
    database_id: Option<String>,
    key_id: Option<String>,
    address: Option<String>,
    detail: Option<String>,
}

impl AuditView {
    fn of(row: AuditRow) -> Self {
        Self {
            at: iso8601(row.at),
            actor: row.actor,
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

/// `GET /accounts/{id}/audit?limit=&cursor=&action=`: newest first; `nextCursor` fetches the
/// page after this one, and is null on the last page.
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
    accounts::load(&state, id).await?;
    let rows = state
        .store
        .audit_page(id, limit, before, query.action.as_deref())
        .await?;
    let next = (i64::try_from(rows.len()).unwrap_or(i64::MAX) == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let entries: Vec<AuditView> = rows.into_iter().map(AuditView::of).collect();
    Ok(ok(
        StatusCode::OK,
        serde_json::json!({ "entries": entries, "nextCursor": next }),
    ))
}

/// `GET /hosts`: every engine host, open or drained, with what it holds.
pub async fn hosts(_: Platform, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let hosts: Vec<serde_json::Value> = state
        .store
        .host_summaries()
        .await?
        .into_iter()
        .map(|s| {
            let h = s.host;
            serde_json::json!({
                "name": h.name,
                "engine": h.engine,
                "state": if h.drained { "drained" } else { "open" },
                "capacity": h.capacity,
                "databases": s.databases,
                "sizeBytes": s.size_bytes,
                "publicEndpoint": format!("{}:{}", h.public_host, h.public_port),
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, serde_json::json!({ "hosts": hosts })))
}

/// `POST /hosts/{name}/drain` and `/undrain`: no new databases are placed on a drained host;
/// its databases keep working.
pub async fn drain(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    set_drained(platform, state, path, true).await
}

pub async fn undrain(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    set_drained(platform, state, path, false).await
}

async fn set_drained(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    drained: bool,
) -> Result<HttpResponse, HttpError> {
    let name = path.into_inner();
    if !state.store.set_drained(&name, drained).await? {
        return Err(HttpError(ApiError::HostNotFound));
    }
    tracing::info!(host = %name, drained, actor = platform.actor().name, "host placement changed");
    Ok(ok(
        StatusCode::OK,
        serde_json::json!({ "name": name, "state": if drained { "drained" } else { "open" } }),
    ))
}
