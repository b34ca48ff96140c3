//! Assertions on the API's `{ok, data}` / `{ok:false, error, code}` envelope.

use reqwest::StatusCode;
use serde_json::Value;

pub fn data(body: &Value) -> &Value {
    assert_eq!(body["ok"], true, "expected success: {body}");
    &body["data"]
}

/// Asserts the error envelope: ok false, a message, and exactly this code (or none).
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: Option<&str>) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match want_code {
        Some(code) => assert_eq!(body["code"], code, "{body}"),
        None => assert!(body.get("code").is_none(), "no code expected: {body}"),
    }
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<_> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}
