//! The OpenAPI 3.1 documents of both APIs, generated from the handlers' `#[utoipa::path]`
//! annotations and the very types the handlers serialize, and served next to them:
//! `/api/v1/db/openapi.json` (public listener) and `/platform/v1/openapi.json` (platform
//! listener). Each error status an operation can answer is one shared response below.

use std::borrow::Cow;

use actix_web::HttpResponse;
use hepdb_core::Engine;
use utoipa::{
    IntoParams, Modify, OpenApi, PartialSchema, ToResponse, ToSchema,
    openapi::{
        ObjectBuilder, RefOr, Schema, Type,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{envelope::ErrorBody, platform, routes};

/// The request is malformed: a field of the wrong type, a bad header or query, or (on create)
/// a name that fails validation (no `code`) or an engine this deployment does not run
/// (`ENGINE_DISABLED`).
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "name must start with a letter or digit"}))]
pub struct BadRequest(pub ErrorBody);

/// `NO_KEY` (no credential), `BAD_KEY` (unknown or revoked) or `KEY_DISABLED` on the public
/// API; `NO_TOKEN` or `BAD_TOKEN` on the platform API.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "invalid API key", "code": "BAD_KEY"}))]
pub struct Unauthorized(pub ErrorBody);

/// `OUT_OF_SLOTS`: every slot is in use; `OVER_STORAGE_QUOTA`: the databases already use more
/// than the storage quota.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "no free database slots: buy a pack or upgrade to Premium", "code": "OUT_OF_SLOTS"}))]
pub struct PaymentRequired(pub ErrorBody);

/// The account is suspended or may not use databases (no `code`).
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "this account cannot use databases"}))]
pub struct Forbidden(pub ErrorBody);

/// `NOT_FOUND` (a database that is not the caller's, or no such id), `ACCOUNT_NOT_FOUND`,
/// `KEY_NOT_FOUND`, `HOST_NOT_FOUND`.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "database not found", "code": "NOT_FOUND"}))]
pub struct NotFound(pub ErrorBody);

/// A name already in use (no `code`), `EXTERNAL_ID_TAKEN`, `DATABASE_DISABLED` (a suspended
/// account's database cannot be rotated) or `DATABASE_BUSY` (still being created).
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "you already have a database named `my-app`"}))]
pub struct Conflict(pub ErrorBody);

/// `PAYLOAD_TOO_LARGE`: the body is over the configured limit.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "request body is too large", "code": "PAYLOAD_TOO_LARGE"}))]
pub struct PayloadTooLarge(pub ErrorBody);

/// `UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "request body must be JSON (Content-Type: application/json)", "code": "UNSUPPORTED_MEDIA_TYPE"}))]
pub struct UnsupportedMediaType(pub ErrorBody);

/// `IDEMPOTENCY_KEY_REUSED`: this `Idempotency-Key` came before with a different request.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "this Idempotency-Key was already used for a different request", "code": "IDEMPOTENCY_KEY_REUSED"}))]
pub struct KeyReused(pub ErrorBody);

/// `INTERNAL`: a fault of hepdb's own (logged, with an alert); or `ENGINE_CONFLICT`: the
/// engine holds an object by that name that hepdb did not make, and nothing of it was touched.
#[derive(Debug, ToResponse)]
#[response(example = json!({"ok": false, "error": "the database could not be provisioned; an operator has been alerted", "code": "ENGINE_CONFLICT"}))]
pub struct ServerError(pub ErrorBody);

/// A dependency is down or slow; nothing was lost, and the same request (with the same
/// `Idempotency-Key`) may be sent again: `METADATA_UNAVAILABLE`, `BROKER_UNAVAILABLE`,
/// `WORKER_UNAVAILABLE`, `ENGINE_UNAVAILABLE`, `NO_CAPACITY`, or `JOB_TIMEOUT` (the change
/// is still running and will complete).
#[derive(Debug, ToResponse)]
#[response(
    example = json!({"ok": false, "error": "the job queue is unavailable, nothing was changed; try again shortly", "code": "BROKER_UNAVAILABLE"}),
    headers(("Retry-After" = u32, description = "Seconds to wait before sending the request again"))
)]
pub struct Unavailable(pub ErrorBody);

/// An engine as the API names it, from [`Engine::ALL`] (so a new engine appears here).
#[derive(Debug)]
pub struct EngineName;

impl PartialSchema for EngineName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Engine::ALL.map(Engine::as_str)))
            .into()
    }
}

impl ToSchema for EngineName {
    fn name() -> Cow<'static, str> {
        "Engine".into()
    }
}

/// The `Idempotency-Key` header every change accepts: the same key with the same request
/// answers as the first did, and does not change anything twice.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// 1 to 255 visible ASCII characters, for example a UUID; kept for 24 hours.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$",
        example = "8e03978e-40d5-43e8-bc93-6894a57f9324"
    )]
    pub idempotency_key: Option<String>,
}

/// `RATE_LIMITED`: the key's or its account's budget for this kind of request (reads, or
/// creates and rotates) is spent for now.
#[derive(Debug, ToResponse)]
#[response(
    example = json!({"ok": false, "error": "too many requests: retry in 3 s", "code": "RATE_LIMITED"}),
    headers(
        ("Retry-After" = u32, description = "Seconds until the request would be let through"),
        ("RateLimit-Policy" = String, description = "The budgets that apply, e.g. `\"key-changes\";q=60;w=60, \"account-changes\";q=120;w=60`"),
        ("RateLimit" = String, description = "The budget closest to exhaustion: `\"key-changes\";r=0;t=3`")
    )
)]
pub struct TooManyRequests(pub ErrorBody);

/// Adds the bearer scheme both APIs use (an API key on one, a platform token on the other).
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The public management API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "hepdb management API",
        description = "Create and manage MariaDB, PostgreSQL and MongoDB databases with a bearer API key. \
            Every answer is an envelope: `{\"ok\": true, \"data\": …}` or `{\"ok\": false, \"error\", \"code\"}`."
    ),
    paths(
        routes::databases::list,
        routes::databases::create,
        routes::databases::reveal,
        routes::databases::rotate,
    ),
    components(
        schemas(ErrorBody, EngineName),
        responses(
            BadRequest, Unauthorized, PaymentRequired, Forbidden, NotFound, Conflict,
            PayloadTooLarge, UnsupportedMediaType, KeyReused, ServerError, Unavailable,
            TooManyRequests,
        )
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub struct PublicApi;

/// The platform API: the hosting platform's dashboard, billing and abuse systems.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "hepdb platform API",
        description = "What the hosting platform's own services do with accounts, keys, databases \
            and hosts, with a platform token. Served on its own listener, never the public one. \
            Every POST, PATCH and DELETE accepts `Idempotency-Key`."
    ),
    paths(
        platform::accounts::create,
        platform::accounts::find,
        platform::accounts::get,
        platform::accounts::patch,
        platform::accounts::suspend,
        platform::accounts::unsuspend,
        platform::keys::mint,
        platform::keys::list,
        platform::keys::disable,
        platform::keys::enable,
        platform::keys::revoke,
        platform::reads::databases,
        platform::reads::audit,
        platform::reads::hosts,
        platform::reads::drain,
        platform::reads::undrain,
        platform::databases::reveal,
        platform::databases::rotate,
        platform::databases::delete,
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest, Unauthorized, Conflict, NotFound, PayloadTooLarge,
            UnsupportedMediaType, KeyReused, ServerError, Unavailable,
        )
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub struct PlatformApi;

/// `GET /api/v1/db/openapi.json`: no credential needed, as it describes how to get one.
pub async fn public_document() -> HttpResponse {
    HttpResponse::Ok().json(PublicApi::openapi())
}

/// `GET /platform/v1/openapi.json`.
pub async fn platform_document() -> HttpResponse {
    HttpResponse::Ok().json(PlatformApi::openapi())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::{PlatformApi, PublicApi};

    /// Each document: OpenAPI 3.1, under its own prefix, every operation behind the bearer
    /// scheme and documenting its 401, every `$ref` resolvable.
    #[test]
    fn documents_are_whole() {
        for (doc, prefix, operations) in [
            (PublicApi::openapi(), "/api/v1/db/", 4),
            (PlatformApi::openapi(), "/platform/v1/", 19),
        ] {
            let json = serde_json::to_value(&doc).unwrap();
            if let Some(dir) = std::env::var_os("HEPDB_OPENAPI_DUMP") {
                let file = std::path::Path::new(&dir).join(format!("{}.json", &prefix[1..4]));
                std::fs::write(file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
            }
            assert_eq!(json["openapi"], "3.1.0");
            assert!(json["components"]["securitySchemes"]["bearer"].is_object());
            let mut count = 0;
            for (path, item) in json["paths"].as_object().unwrap() {
                assert!(path.starts_with(prefix), "{path}");
                for (method, op) in item.as_object().unwrap() {
                    count += 1;
                    assert!(op["responses"]["401"].is_object(), "{method} {path}");
                }
            }
            assert_eq!(count, operations);
            let text = json.to_string();
            for target in text.split("\"$ref\":\"#/").skip(1) {
                let pointer = format!("/{}", &target[..target.find('"').unwrap()]);
                assert!(json.pointer(&pointer).is_some(), "dangling $ref {pointer}");
            }
        }
    }

    /// The documented bounds of an account's entitlements are the ones both the platform API
    /// and hepdb-admin enforce (the schema attributes take literals, not the constants).
    #[test]
    fn documented_entitlement_bounds_are_the_enforced_ones() {
        use hepdb_core::account::{MAX_SLOTS, MAX_STORAGE_MB};
        let json = serde_json::to_value(PlatformApi::openapi()).unwrap();
        for body in ["CreateBody", "PatchBody"] {
            let props = &json["components"]["schemas"][body]["properties"];
            assert_eq!(props["slots"]["maximum"], MAX_SLOTS, "{body}");
            assert_eq!(props["storageMb"]["maximum"], MAX_STORAGE_MB, "{body}");
        }
    }
}
