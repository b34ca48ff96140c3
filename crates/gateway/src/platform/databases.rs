//! The owner's actions on a database, done by the dashboard: reveal and rotate. The same
//! reads, the same rotate job and the same audit actions as the public API's; the actor is
//! the platform token's name.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{ApiError, DatabaseId, JobId, state::JobKind};
use hepdb_store::{
    databases::DeleteIntent,
    models::{Database, EngineHost},
};

use serde::Serialize;
use utoipa::ToSchema;

use super::{Platform, audit_database, keyed, prior, raced};
use crate::{
    envelope::Envelope,
    error::HttpError,
    openapi,
    routes::databases::{
        Credentials, Revealed, credentials, ok, open_password, revealed, rotate_password, settled,
    },
    state::AppState,
};

/// A deleted database.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    id: String,
    /// Always true: its engine database and user are gone, and its slot is free.
    deleted: bool,
}

/// A visible database by path id, whoever owns it; a malformed or unknown id is 404.
async fn visible(state: &AppState, raw: &str) -> Result<(Database, EngineHost), HttpError> {
    let id: DatabaseId = raw.parse().map_err(|_| HttpError(ApiError::NotFound))?;
    state
        .store
        .visible_database(id)
        .await?
        .ok_or(HttpError(ApiError::NotFound))
}

/// Reveal any account's database, as its owner would: audited as a reveal, with the token's
/// name as the actor.
#[utoipa::path(
    get,
    path = "/platform/v1/databases/{id}",
    operation_id = "revealAnyDatabase",
    tag = "databases",
    params(("id" = String, Path, description = "The database's id")),
    responses(
        (status = 200, description = "The database with its credentials", body = Envelope<Revealed>),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn reveal(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let (db, host) = visible(&state, &path).await?;
    let password = open_password(&state, &db)?;
    audit_database(&state, &platform, "database.reveal", &db).await?;
    revealed(&db, &host, &password)
}

/// Rotate a database's password, as its owner would: the same job as the public rotate.
#[utoipa::path(
    post,
    path = "/platform/v1/databases/{id}/rotate",
    operation_id = "rotateAnyPassword",
    tag = "databases",
    params(("id" = String, Path, description = "The database's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The new credentials", body = Envelope<Credentials>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn rotate(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let (db, host) = visible(&state, &path).await?;
    let account = db
        .account_id
        .parse()
        .map_err(|_| HttpError(ApiError::Internal))?;
    let keyed = keyed(&req, "")?;
    if let Some(job) = prior(&state, &platform, keyed.as_ref()).await? {
        return rotated(&state, &job, &db, &host).await;
    }
    let binding = platform.actor_keyed(keyed.as_ref()).idempotency;
    let Some(password) = rotate_password(&state, account, &db, None, binding).await? else {
        // A concurrent request with the same key recorded its rotate first.
        let job = prior(&state, &platform, keyed.as_ref())
            .await?
            .ok_or(HttpError(ApiError::Internal))?;
        return rotated(&state, &job, &db, &host).await;
    };
    audit_database(&state, &platform, "database.rotate", &db).await?;
    Ok(ok(StatusCode::OK, credentials(&db, &host, &password)?))
}

/// The answer to a retried rotate: the password its job set (sealed in the job, never stored
/// in clear), as the public API's retries answer, waiting for the job as they do.
async fn rotated(
    state: &AppState,
    job: &str,
    db: &Database,
    host: &EngineHost,
) -> Result<HttpResponse, HttpError> {
    let id: JobId = job.parse().map_err(|_| HttpError(ApiError::Internal))?;
    let job = state
        .store
        .job(id)
        .await?
        .ok_or(HttpError(ApiError::Internal))?;
    let job = settled(state, job).await?;
    let sealed = job
        .password_sealed
        .as_deref()
        .ok_or(HttpError(ApiError::Internal))?;
    let password = state
        .key
        .open(db.database_id(), sealed)
        .map_err(|_| HttpError(ApiError::Internal))?;
    Ok(ok(StatusCode::OK, credentials(db, host, &password)?))
}

/// Delete a database: a job through the worker drops only what carries hepdb's mark, then the
/// row, freeing the slot. Once recorded it always completes: 200 when done, 503 `JOB_TIMEOUT`
/// while it still runs (asking again joins the same job); 409 `DATABASE_BUSY` while the
/// database is still being created.
#[utoipa::path(
    delete,
    path = "/platform/v1/databases/{id}",
    operation_id = "deleteDatabase",
    tag = "databases",
    params(("id" = String, Path, description = "The database's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "Deleted", body = Envelope<Deleted>),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn delete(
    platform: Platform,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    // The whole request waits at most the request timeout, including any wait for the row's
    // lock while a deletion already in progress holds it.
    let deadline = tokio::time::Instant::now() + state.dispatcher.timeout();
    let id: DatabaseId = path.parse().map_err(|_| HttpError(ApiError::NotFound))?;
    let keyed = keyed(&req, "")?;
    if prior(&state, &platform, keyed.as_ref()).await?.is_some() {
        return deleted_yet(&state, id).await;
    }
    // A deletion already under way is joined without waiting for the row's lock, which its
    // job holds while it runs on the engine (a PostgreSQL DROP DATABASE waits for a
    // checkpoint): the answer comes within the request timeout.
    if let Some(job) = state.store.open_delete_job(id).await? {
        let outcome = state.dispatcher.await_outcome(job, deadline).await;
        return deletion_answer(&state, id, outcome).await;
    }
    let actor = Some(platform.actor_keyed(keyed.as_ref()));
    let intent = match state.store.insert_delete_job(id, actor).await {
        Ok(intent) => intent,
        Err(e) => {
            raced(&state, &platform, keyed.as_ref(), e).await?;
            return deleted_yet(&state, id).await;
        }
    };
    let outcome = match intent {
        DeleteIntent::Missing => return Err(HttpError(ApiError::NotFound)),
        DeleteIntent::Unsettled => return Err(HttpError(ApiError::DatabaseBusy)),
        // Another request's job: wait for its outcome rather than send it again.
        DeleteIntent::Job { job, new: false } => {
            state.dispatcher.await_outcome(job, deadline).await
        }
        DeleteIntent::Job { job, new: true } => {
            state
                .dispatcher
                .run_to_completion(job, id, JobKind::Delete, deadline)
                .await
        }
    };
    deletion_answer(&state, id, outcome).await
}

/// The answer to a recorded deletion from its job's outcome in this request.
async fn deletion_answer(
    state: &AppState,
    id: DatabaseId,
    outcome: Result<(), ApiError>,
) -> Result<HttpResponse, HttpError> {
    match outcome {
        Ok(()) => Ok(deleted(id)),
        // A recorded deletion is never given up: whatever its job met (an engine or broker
        // outage, too many deliveries, a row another deletion already removed), the
        // reconciler carries it on. So the answer is only ever done or still running.
        Err(error) => {
            tracing::info!(%error, database = %id, "deletion not finished in this request");
            deleted_yet(state, id).await
        }
    }
}

fn deleted(id: DatabaseId) -> HttpResponse {
    ok(
        StatusCode::OK,
        Deleted {
            id: id.to_text(),
            deleted: true,
        },
    )
}

/// The answer to a retried deletion: done once the row is gone, `JOB_TIMEOUT` while its job
/// still runs.
async fn deleted_yet(state: &AppState, id: DatabaseId) -> Result<HttpResponse, HttpError> {
    match state.store.database(id).await? {
        None => Ok(deleted(id)),
        Some(_) => Err(HttpError(ApiError::JobTimeout)),
    }
}
