//! The envelope on the wire: every error, including actix's own (unknown route, wrong method,
//! bad JSON), leaves as `{"ok": false, "error", "code"}`.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::JsonPayloadError,
    http::{
        StatusCode,
        header::{self, HeaderValue},
    },
    web,
};
use hepdb_core::ApiError;
use hepdb_store::StoreError;

/// [`ApiError`] as an actix response (the catalog itself lives in hepdb-core).
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = self.0.envelope();
        if let Some(id) = crate::request_id::current() {
            body["requestId"] = id.into();
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.0.retry_after_secs() {
            response.insert_header((header::RETRY_AFTER, secs));
        }
        response.json(body)
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "metadata unavailable");
                Self(ApiError::MetadataUnavailable)
            }
            other => {
                tracing::error!(error = %other, "metadata error");
                Self(ApiError::Internal)
            }
        }
    }
}

/// `web::JsonConfig` error handler: size, content type and syntax problems, in the envelope.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("invalid JSON body: {e}")),
        _ => ApiError::BadRequest("could not read the request body".into()),
    };
    HttpError(api).into()
}

/// Fallback for paths no route matches.
pub async fn no_route() -> HttpResponse {
    HttpError(ApiError::NoRoute).error_response()
}

/// Fallback for a known path with the wrong method: 405, with the `Allow` header (RFC 9110)
/// naming the methods the path has.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut response = HttpError(ApiError::MethodNotAllowed).error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    })
}
