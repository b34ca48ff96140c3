//! The four endpoints of the management API.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use hepdb_core::{
    AccountId, ApiError, DatabaseId, DatabaseState, Engine, JobId, JobState,
    conn_string::connection_string,
    idempotency::{self, IdempotencyKey},
    job::JobFailure,
    naming::validate_name,
    secret::Password,
    state::JobKind,
    time::iso8601,
};
use hepdb_store::{
    databases::{NewDatabase, ReserveError, Reserved},
    idempotency::{KeyedRequest, Prior},
    models::{Database, EngineHost, Job},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub(crate) use crate::envelope::ok;
use crate::{
    audit::Entry,
    auth::{BearerKey, Caller},
    envelope::Envelope,
    error::HttpError,
    openapi,
    rate_limit::Class,
    state::AppState,
};

/// A database in the list: no secrets.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Summary<'a> {
    /// Stable identifier (a ULID).
    #[schema(example = "01HV7Z3K8Q2N4R6T8V0X2Z4B6D")]
    id: &'a str,
    /// The label chosen at creation.
    #[schema(example = "my-app")]
    name: &'a str,
    /// `mariadb`, `postgres` or `mongo`.
    #[schema(example = "mariadb")]
    engine: &'a str,
    /// The database's name on the engine: `um_<10 hex>_<n>`.
    #[schema(example = "um_0a1b2c3d4e_1")]
    db_name: &'a str,
    /// The database's user on the engine: `dum_<10 hex>_<n>`.
    #[schema(example = "dum_0a1b2c3d4e_1")]
    db_user: &'a str,
    /// Last measured size on disk, refreshed by the quota watcher.
    size_bytes: i64,
    /// When the size was last measured (ISO 8601), or null if never.
    #[schema(example = "2026-05-28T12:00:00.000Z")]
    size_refreshed_at: Option<String>,
    /// `active`, `over_quota` or `disabled`.
    #[schema(example = "active")]
    status: &'static str,
    /// ISO 8601 creation time.
    #[schema(example = "2026-05-20T09:30:00.000Z")]
    created_at: String,
}

/// The list's `data`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DatabaseList<'a> {
    /// Every database of the key's account, oldest first.
    databases: Vec<Summary<'a>>,
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

/// The create and rotate answer: the credentials, with the names.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Credentials<'a> {
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
    /// The database user's current password.
    #[schema(example = "q7JdV2mX9kP4sT8wZ3bN6cR1")]
    password: &'a str,
    /// `mysql://…`, `postgresql://…` or `mongodb://…?authSource=admin`, ready to use.
    #[schema(
        example = "mysql://dum_0a1b2c3d4e_1:q7JdV2mX9kP4sT8wZ3bN6cR1@db.example.com:3306/um_0a1b2c3d4e_1"
    )]
    connection_string: String,
}

/// The reveal answer: the credentials plus the list's size and status fields.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Revealed<'a> {
    #[serde(flatten)]
    credentials: Credentials<'a>,
    size_bytes: i64,
    size_refreshed_at: Option<String>,
    /// `active`, `over_quota` or `disabled`.
    #[schema(example = "active")]
    status: &'static str,
    created_at: String,
}

/// The credentials of `db`, with the connection string of the host it lives on.
pub(crate) fn credentials<'a>(
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

/// The caller and one of its databases, for reveal and rotate: the key, its account and the
/// database in one statement, passed through the same `authorize()` as every request. A path
/// id that is malformed, unknown or someone else's is the same 404, after the key's check.
async fn owned(
    state: &AppState,
    key: &BearerKey,
    id: &str,
    class: Class,
) -> Result<(Caller, Database, EngineHost), HttpError> {
    let Ok(id) = id.parse::<DatabaseId>() else {
        key.authenticate(state, class).await?;
        return Err(ApiError::NotFound.into());
    };
    let found = state.store.reveal_for_key(key.hash(), id).await?;
    let caller = key.authorize(
        state,
        class,
        found.as_ref().map(|(row, account, _)| (row, account)),
    )?;
    let (db, host) = found
        .and_then(|(_, _, owned)| owned)
        .ok_or(ApiError::NotFound)?;
    Ok((caller, db, host))
}

pub(crate) fn open_password(state: &AppState, db: &Database) -> Result<Password, HttpError> {
    state
        .key
        .open(db.database_id(), &db.password_sealed)
        .map_err(|_| {
            tracing::error!(database = %db.id, "stored password does not open (wrong master key?)");
            HttpError(ApiError::Internal)
        })
}

/// List the caller's databases: every database of the key's account, oldest first, without
/// secrets.
#[utoipa::path(
    get,
    path = "/api/v1/db/databases",
    operation_id = "listDatabases",
    tag = "databases",
    responses(
        (status = 200, description = "The databases", body = Envelope<DatabaseList>,
            headers(("RateLimit" = String, description = "The rate budget closest to exhaustion"), ("RateLimit-Policy" = String, description = "The rate budgets of this kind of request"))),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, response = openapi::Forbidden),
        (status = 429, response = openapi::TooManyRequests),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn list(state: web::Data<AppState>, key: BearerKey) -> Result<HttpResponse, HttpError> {
    let found = state.store.list_for_key(key.hash()).await?;
    key.authorize(
        &state,
        Class::Read,
        found.as_ref().map(|(row, account, _)| (row, account)),
    )?;
    let rows = found.map(|(_, _, rows)| rows).unwrap_or_default();
    let databases = rows.iter().map(Summary::of).collect();
    Ok(ok(StatusCode::OK, DatabaseList { databases }))
}

/// What to create. Both fields are read leniently (a missing name is the spec's 400 without a
/// code, not a JSON error), and described as the spec gives them.
#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    /// A label unique in the account: 1 to 63 letters, digits, `_` or `-`, starting with a
    /// letter or digit.
    #[serde(default)]
    #[schema(
        required = true,
        value_type = String,
        min_length = 1,
        max_length = 63,
        pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        example = "my-app"
    )]
    name: Option<String>,
    /// `mariadb` (the default), `postgres` or `mongo`.
    #[serde(default)]
    #[schema(value_type = Option<openapi::EngineName>, example = "mariadb")]
    engine: Option<String>,
}

/// Records an API action in the audit log before the answer goes out. The action has
/// happened, so a failure to record it is an alert (raised by the writer) rather than an error
/// for the caller.
async fn audit(
    state: &AppState,
    caller: Caller,
    action: &'static str,
    database: &str,
    detail: Option<String>,
) {
    state
        .audit
        .record(Entry {
            actor: format!("key:{}", caller.key),
            action,
            account: caller.account.to_text(),
            database: database.to_owned(),
            key: caller.key.to_text(),
            address: caller.address.map(|a| a.to_string()),
            detail,
        })
        .await;
}

/// The request's Idempotency-Key, if it sent one.
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, HttpError> {
    let Some(raw) = req.headers().get(idempotency::HEADER) else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::BadRequest("the Idempotency-Key header is not ASCII".into()))?;
    Ok(Some(
        IdempotencyKey::parse(raw).map_err(ApiError::BadRequest)?,
    ))
}

/// What an earlier use of the key means: `Some(response)` to send instead of running.
async fn earlier_use(
    state: &AppState,
    caller: Caller,
    keyed: Option<KeyedRequest<'_>>,
) -> Result<Option<HttpResponse>, HttpError> {
    let Some(keyed) = keyed else { return Ok(None) };
    match state.store.idempotency_prior(caller.account, keyed).await? {
        Prior::Fresh => Ok(None),
        Prior::Mismatch => Err(ApiError::IdempotencyKeyReused.into()),
        Prior::Replay(job) => replay(state, caller, job).await.map(Some),
    }
}

/// Answers a repeated request from the job the first one started: the same database and the
/// same password, once the job has finished (waiting for it up to the job timeout).
async fn replay(state: &AppState, caller: Caller, job: Job) -> Result<HttpResponse, HttpError> {
    let job = settled(state, job).await?;
    let database: DatabaseId = job
        .database_id
        .as_deref()
        .and_then(|d| d.parse().ok())
        .ok_or(ApiError::NotFound)?;
    let (db, host) = state
        .store
        .owned_database(caller.account, database)
        .await?
        .ok_or(ApiError::NotFound)?;
    let sealed = job
        .password_sealed
        .as_deref()
        .unwrap_or(&db.password_sealed);
    let password = state.key.open(database, sealed).map_err(|_| {
        tracing::error!(database = %db.id, "sealed password does not open (wrong master key?)");
        ApiError::Internal
    })?;
    let status = match job.kind() {
        JobKind::Create => StatusCode::CREATED,
        JobKind::Rotate | JobKind::Access | JobKind::Delete => StatusCode::OK,
    };
    Ok(ok(status, credentials(&db, &host, &password)?))
}

/// The job an earlier request started, once it has finished (waiting for it up to the job
/// timeout, then 503 `JOB_TIMEOUT`); its failure as the error the first request got. The
/// answer to any retried change, the public API's and the platform's.
pub(crate) async fn settled(state: &AppState, job: Job) -> Result<Job, HttpError> {
    let id: JobId = job.id.parse().map_err(|_| ApiError::Internal)?;
    let deadline = Instant::now() + state.dispatcher.timeout();
    let mut job = job;
    loop {
        match job.state() {
            JobState::Done => return Ok(job),
            JobState::Failed => {
                let failure = job.error_code.as_deref().map(JobFailure::parse);
                return Err(failure.map_or(ApiError::Internal, Into::into).into());
            }
            JobState::Cancelled => return Err(ApiError::WorkerUnavailable.into()),
            JobState::Pending | JobState::Running if Instant::now() >= deadline => {
                return Err(ApiError::JobTimeout.into());
            }
            JobState::Pending | JobState::Running => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                job = state.store.job(id).await?.ok_or(ApiError::Internal)?;
            }
        }
    }
}

/// Create a database and its user. The password and connection string are in the answer; reveal
/// shows them again.
#[utoipa::path(
    post,
    path = "/api/v1/db/databases",
    operation_id = "createDatabase",
    tag = "databases",
    params(openapi::IdempotencyHeader),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = Envelope<Credentials>,
            headers(("RateLimit" = String, description = "The rate budget closest to exhaustion"), ("RateLimit-Policy" = String, description = "The rate budgets of this kind of request"))),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 402, response = openapi::PaymentRequired),
        (status = 403, response = openapi::Forbidden),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 429, response = openapi::TooManyRequests),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
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
    let key = idempotency_key(&req)?;
    let keyed = key.as_ref().map(|k| KeyedRequest {
        key: k.as_str(),
        fingerprint: idempotency::fingerprint(&["create", &name, engine.as_str()]),
    });
    if let Some(response) = earlier_use(&state, caller, keyed).await? {
        return Ok(response);
    }
    let id = DatabaseId::new();
    let password = Password::generate();
    let new = NewDatabase {
        id,
        account: caller.account,
        name: &name,
        engine,
        password_sealed: state.key.seal(id, &password),
        hosts: &hosts,
        idempotency: keyed,
    };
    let reserved = match state.store.reserve_create(new).await {
        // A concurrent request with the same key got there first (it may also have taken the
        // name or the last slot while this one waited): answer as it does.
        Err(
            e @ (ReserveError::KeyTaken | ReserveError::DuplicateName | ReserveError::OutOfSlots),
        ) if keyed.is_some() => match earlier_use(&state, caller, keyed).await? {
            Some(response) => return Ok(response),
            None => Err(e),
        },
        other => other,
    };
    let Reserved {
        database,
        host,
        job,
    } = reserved.map_err(|e| match e {
        ReserveError::OutOfSlots => HttpError(ApiError::OutOfSlots),
        ReserveError::OverQuota => HttpError(ApiError::OverStorageQuota),
        ReserveError::DuplicateName => HttpError(ApiError::DuplicateName(name.clone())),
        ReserveError::NoAccount => HttpError(ApiError::AccountForbidden),
        ReserveError::NoCapacity => {
            tracing::error!(alert = true, %engine, "every host of the engine is full or drained");
            HttpError(ApiError::NoCapacity)
        }
        ReserveError::Store(e) => e.into(),
        ReserveError::KeyTaken => HttpError(ApiError::Internal),
    })?;
    state.dispatcher.run(job, id, JobKind::Create).await?;
    let detail = format!("{} {}", database.engine, database.db_name);
    audit(
        &state,
        caller,
        "database.create",
        &database.id,
        Some(detail),
    )
    .await;
    Ok(ok(
        StatusCode::CREATED,
        credentials(&database, &host, &password)?,
    ))
}

/// Reveal one of the caller's databases: its current password and connection string, with the
/// list's size and status fields. Recorded in the audit log.
#[utoipa::path(
    get,
    path = "/api/v1/db/databases/{id}",
    operation_id = "revealDatabase",
    tag = "databases",
    params(("id" = String, Path, description = "The database's id")),
    responses(
        (status = 200, description = "The database with its credentials", body = Envelope<Revealed>,
            headers(("RateLimit" = String, description = "The rate budget closest to exhaustion"), ("RateLimit-Policy" = String, description = "The rate budgets of this kind of request"))),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, response = openapi::Forbidden),
        (status = 404, response = openapi::NotFound),
        (status = 429, response = openapi::TooManyRequests),
        (status = 500, response = openapi::ServerError),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn reveal(
    state: web::Data<AppState>,
    key: BearerKey,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let (caller, db, host) = owned(&state, &key, &id, Class::Read).await?;
    let password = open_password(&state, &db)?;
    audit(&state, caller, "database.reveal", &db.id, None).await;
    revealed(&db, &host, &password)
}

/// The reveal answer: the credentials with the summary's size and status fields (the public
/// API's and the platform's).
pub(crate) fn revealed(
    db: &Database,
    host: &EngineHost,
    password: &Password,
) -> Result<HttpResponse, HttpError> {
    let summary = Summary::of(db);
    Ok(ok(
        StatusCode::OK,
        Revealed {
            credentials: credentials(db, host, password)?,
            size_bytes: summary.size_bytes,
            size_refreshed_at: summary.size_refreshed_at,
            status: summary.status,
            created_at: summary.created_at,
        },
    ))
}

/// Rotate the password of one of the caller's databases: the old one stops working, the new one
/// is in the answer. No request body.
#[utoipa::path(
    post,
    path = "/api/v1/db/databases/{id}/rotate",
    operation_id = "rotatePassword",
    tag = "databases",
    params(("id" = String, Path, description = "The database's id"), openapi::IdempotencyHeader),
    responses(
        (status = 200, description = "The new credentials", body = Envelope<Credentials>,
            headers(("RateLimit" = String, description = "The rate budget closest to exhaustion"), ("RateLimit-Policy" = String, description = "The rate budgets of this kind of request"))),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, response = openapi::Forbidden),
        (status = 404, response = openapi::NotFound),
        (status = 409, response = openapi::Conflict),
        (status = 422, response = openapi::KeyReused),
        (status = 500, response = openapi::ServerError),
        (status = 429, response = openapi::TooManyRequests),
        (status = 503, response = openapi::Unavailable),
    )
)]
pub async fn rotate(
    state: web::Data<AppState>,
    key: BearerKey,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let (caller, db, host) = owned(&state, &key, &id, Class::Change).await?;
    let key = idempotency_key(&req)?;
    let keyed = key.as_ref().map(|k| KeyedRequest {
        key: k.as_str(),
        fingerprint: idempotency::fingerprint(&["rotate", &db.id]),
    });
    if let Some(response) = earlier_use(&state, caller, keyed).await? {
        return Ok(response);
    }
    let Some(password) = rotate_password(&state, caller.account, &db, keyed, None).await? else {
        return earlier_use(&state, caller, keyed)
            .await?
            .ok_or_else(|| ApiError::Internal.into());
    };
    audit(&state, caller, "database.rotate", &db.id, None).await;
    Ok(ok(StatusCode::OK, credentials(&db, &host, &password)?))
}

/// A rotate, the same job for the public API and the platform's: the new password is sealed
/// into the job before anything changes, the worker applies it, and it is returned once the
/// job is done. `None` when a concurrent request bound the same Idempotency-Key first.
pub(crate) async fn rotate_password(
    state: &AppState,
    account: AccountId,
    db: &Database,
    keyed: Option<KeyedRequest<'_>>,
    platform: Option<hepdb_store::audit::Binding<'_>>,
) -> Result<Option<Password>, HttpError> {
    if db.state() == DatabaseState::Disabled {
        return Err(ApiError::DatabaseDisabled.into());
    }
    let password = Password::generate();
    let sealed = state.key.seal(db.database_id(), &password);
    let Some(job) = state
        .store
        .insert_rotate_job(account, db.database_id(), sealed, keyed, platform)
        .await?
    else {
        return Ok(None);
    };
    state
        .dispatcher
        .run(job, db.database_id(), JobKind::Rotate)
        .await?;
    Ok(Some(password))
}
