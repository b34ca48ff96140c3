//! The `/readyz` envelope.

/// The `Retry-After` of a 503 `NOT_READY`.
pub const NOT_READY_RETRY_AFTER_SECS: u32 = 5;

/// The `/readyz` answer both binaries give: 200 with the checks when every one is up, else
/// 503 `NOT_READY` in the error envelope with the same checks, so a probe and a person read
/// the same thing.
pub fn readiness(ready: bool, checks: serde_json::Value) -> (u16, serde_json::Value) {
    if ready {
        (
            200,
            serde_json::json!({ "ok": true, "data": { "checks": checks } }),
        )
    } else {
        (
            503,
            serde_json::json!({
                "ok": false,
                "error": "not ready",
                "code": "NOT_READY",
                "checks": checks,
            }),
        )
    }
}
