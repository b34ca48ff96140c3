//! The four endpoints of the management API.

use actix_web::{HttpResponse, web};
use hepdb_core::{
    ApiError, DatabaseId, DatabaseState, Engine, conn_string::connection_string,
    naming::validate_name, secret::Password, state::JobKind, time::iso8601,
};
use hepdb_store::{
    databases::{NewDatabase, ReserveError, Reserved},
    models::{Database, EngineHost},
};
use serde::{Deserialize, Serialize};

use crate::{auth::Caller, error::HttpError, state::AppState};

/// The list entry (no secrets).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    id: &'a str,
    name: &'a str,
    engine: &'a str,
    db_name: &'a str,
    db_user: &'a str,
    size_bytes: i64,
    size_refreshed_at: Option<String>,
    status: &'static str,
    created_at: String,
}

impl<'a> Summary<'a> {
    fn of(db: &'a Database) -> Self {
        Self {
            id: &db.id,
            name: &db.name,
            engine: &db.engine,
            db_name: &db.db_name,
            db_user: &db.db_user,
            size_bytes: db.size_bytes,
            size_refreshed_at: db.size_refreshed_at.map(iso8601),
            status: db.state().public_status().unwrap_or("disabled"),
            created_at: iso8601(db.created_at),
        }
    }
}

/// The create and rotate response: the credentials, shown with the names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Credentials<'a> {
    id: &'a str,
    name: &'a str,
    engine: &'a str,
    db_name: &'a str,
    db_user: &'a str,
    password: &'a str,
    connection_string: String,
}

/// Reveal: credentials plus the summary's size and status fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Revealed<'a> {
    #[serde(flatten)]
    credentials: Credentials<'a>,
    size_bytes: i64,
    size_refreshed_at: Option<String>,
    status: &'static str,
    created_at: String,
}

fn ok(status: actix_web::http::StatusCode, data: impl Serialize) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "ok": true, "data": data }))
}

/// The credentials of `db`, with the connection string of the host it lives on.
fn credentials<'a>(
    db: &'a Database,
    host: &EngineHost,
    password: &'a Password,
) -> Result<Credentials<'a>, HttpError> {
    let engine = db.engine();
    let names = db.names().ok_or(HttpError(ApiError::Internal))?;
    let (public_host, public_port) = host.endpoint();
    Ok(Credentials {
        id: &db.id,
        name: &db.name,
        engine: &db.engine,
        db_name: &db.db_name,
        db_user: &db.db_user,
        password: password.expose(),
        connection_string: connection_string(engine, public_host, public_port, &names, password),
    })
}

/// A path id that is malformed, unknown or someone else's: all the same 404.
async fn owned(
    state: &AppState,
    caller: Caller,
    id: &str,
) -> Result<(Database, EngineHost), HttpError> {
    let id: DatabaseId = id.parse().map_err(|_| HttpError(ApiError::NotFound))?;
    state
        .store
        .owned_database(caller.account, id)
        .await?
        .ok_or(HttpError(ApiError::NotFound))
}

fn open_password(state: &AppState, db: &Database) -> Result<Password, HttpError> {
    state
        .key
        .open(db.database_id(), &db.password_sealed)
        .map_err(|_| {
            tracing::error!(database = %db.id, "stored password does not open (wrong master key?)");
            HttpError(ApiError::Internal)
        })
}

pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, HttpError> {
    let rows = state.store.list_databases(caller.account).await?;
    let databases: Vec<_> = rows.iter().map(Summary::of).collect();
    Ok(ok(
        actix_web::http::StatusCode::OK,
        serde_json::json!({ "databases": databases }),
    ))
}

#[derive(Deserialize)]
pub struct CreateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    engine: Option<String>,
}

pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, HttpError> {
    let body = body.into_inner();
    let name = body.name.unwrap_or_default();
    validate_name(&name).map_err(ApiError::InvalidName)?;
    let engine: Engine = match body.engine.as_deref() {
        None => Engine::Mariadb,
        Some(s) => s.parse().map_err(|e: hepdb_core::engine::UnknownEngine| {
            ApiError::EngineDisabled(e.to_string())
        })?,
    };
    let Some(hosts) = state.placeable_hosts(engine) else {
        return Err(ApiError::EngineDisabled(format!(
            "the {engine} engine is not available on this deployment"
        ))
        .into());
    };
    let id = DatabaseId::new();
    let password = Password::generate();
    let new = NewDatabase {
        id,
        account: caller.account,
        name: &name,
        engine,
        password_sealed: state.key.seal(id, &password),
        hosts: &hosts,
    };
    let Reserved {
        database,
        host,
        job,
    } = state.store.reserve_create(new).await.map_err(|e| match e {
        ReserveError::OutOfSlots => HttpError(ApiError::OutOfSlots),
        ReserveError::DuplicateName => HttpError(ApiError::DuplicateName(name.clone())),
        ReserveError::NoAccount => HttpError(ApiError::AccountForbidden),
        ReserveError::NoCapacity => {
            tracing::error!(alert = true, %engine, "every host of the engine is full or drained");
            HttpError(ApiError::NoCapacity)
        }
        ReserveError::Store(e) => e.into(),
    })?;
    state.dispatcher.run(job, id, JobKind::Create).await?;
    Ok(ok(
        actix_web::http::StatusCode::CREATED,
        credentials(&database, &host, &password)?,
    ))
}

pub async fn reveal(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let (db, host) = owned(&state, caller, &id).await?;
    let password = open_password(&state, &db)?;
    let summary = Summary::of(&db);
    Ok(ok(
        actix_web::http::StatusCode::OK,
        Revealed {
            credentials: credentials(&db, &host, &password)?,
            size_bytes: summary.size_bytes,
            size_refreshed_at: summary.size_refreshed_at,
            status: summary.status,
            created_at: summary.created_at,
        },
    ))
}

pub async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let (db, host) = owned(&state, caller, &id).await?;
    if db.state() == DatabaseState::Disabled {
        return Err(ApiError::DatabaseDisabled.into());
    }
    let password = Password::generate();
    let job = state
        .store
        .insert_rotate_job(
            db.database_id(),
            state.key.seal(db.database_id(), &password),
        )
        .await?;
    state
        .dispatcher
        .run(job, db.database_id(), JobKind::Rotate)
        .await?;
    Ok(ok(
        actix_web::http::StatusCode::OK,
        credentials(&db, &host, &password)?,
    ))
}
