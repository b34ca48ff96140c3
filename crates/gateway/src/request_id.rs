//! A request id for every request: taken from a well-formed incoming `X-Request-Id` (so a
//! caller or a proxy can correlate), or generated. It is echoed in the `X-Request-Id` response
//! header, written into every error envelope as `requestId`, recorded on the request's tracing
//! span, and sent to the worker in the job message's AMQP headers.
//!
//! The same middleware opens the request's span, the root of the request's trace (or a child
//! of the caller's, when it sends a W3C `traceparent`).

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
};
use tracing::{Instrument, field::Empty};

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, inside a request's task.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A caller-supplied id is kept only if it is short and plain (it ends up in logs).
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The middleware (`App::wrap(from_fn(request_id::assign))`).
pub async fn assign(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
        otel.kind = "server",
        client.address = Empty,
        otel.status_code = Empty,
        http.route = Empty,
        http.response.status_code = Empty,
    );
    if let Some(client) = crate::client_addr::of(req.request()) {
        span.record("client.address", tracing::field::display(client));
    }
    let headers = req.headers();
    hepdb_telemetry::continue_trace(&span, |name| headers.get(name)?.to_str().ok());
    let method = req.method().clone();
    let mut res = REQUEST_ID
        .scope(id.clone(), next.call(req).instrument(span.clone()))
        .await?;
    // Known only once routing has run.
    let route = res.request().match_pattern();
    let route = route.as_deref().unwrap_or("unmatched");
    hepdb_telemetry::rename(&span, format!("{method} {route}"));
    span.record("http.route", route);
    span.record("http.response.status_code", res.status().as_u16());
    if res.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_kept() {
        assert!(acceptable("01HV0000000000000000000000"));
        assert!(acceptable("req-42_a.b:c"));
        for bad in ["", "has space", "new\nline", &"x".repeat(129)] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }
}
