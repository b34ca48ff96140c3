//! The envelope every answer travels in, as one type per side: what handlers send ([`ok`])
//! and what the OpenAPI documents describe are the same types, so the two cannot drift.

use actix_web::{HttpResponse, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"ok": true, "data": …}`.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true` on success.
    ok: bool,
    data: T,
}

/// A success answer: `data` in the envelope.
pub fn ok(status: StatusCode, data: impl Serialize) -> HttpResponse {
    HttpResponse::build(status).json(Envelope { ok: true, data })
}

/// `{"ok": false, "error": "…", "code": "…"}`: the shape of every error, built by
/// [`hepdb_core::ApiError::envelope`]; this type only describes it (a test holds the two
/// together).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorBody {
    /// Always `false` on error.
    pub ok: bool,
    /// A human-readable message. It never contains a secret.
    #[schema(example = "database not found")]
    pub error: String,
    /// The machine code, absent for the cases the spec gives none (a name that fails
    /// validation, a duplicate name, an account that may not use databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "NOT_FOUND")]
    pub code: Option<String>,
    /// The request's `X-Request-Id`, to quote to support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use hepdb_core::ApiError;

    use super::ErrorBody;

    #[test]
    fn the_documented_error_body_is_the_catalog_envelope() {
        for error in [
            ApiError::NotFound,
            ApiError::DuplicateName("x".into()),
            ApiError::BadToken,
        ] {
            let mut sent = error.envelope();
            sent["requestId"] = "r1".into();
            let body: ErrorBody = serde_json::from_value(sent.clone()).expect("same fields");
            assert_eq!(serde_json::to_value(&body).unwrap(), sent);
            assert!(!body.ok);
            assert_eq!(body.code.as_deref(), error.code());
        }
    }
}
