//! The error catalog: every error a caller can see, with its HTTP status and machine code.
//!
//! The first rows are the spec's table, exactly; the rest are hepdb's additions for cases the
//! spec does not name (malformed requests and service outages). Codes are stable API: add new
//! ones, never rename. Messages never contain a secret.

/// One caller-visible error. `status()` and `code()` are the whole wire contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    // --- the spec's table ---
    /// The name failed validation (400, no code).
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    EngineDisabled(String),
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    NoKey,
    #[error("invalid API key")]
    BadKey,
    #[error("this API key is disabled")]
    KeyDisabled,
    #[error("no free database slots: buy a pack or upgrade to Premium")]
    OutOfSlots,
    /// The owning account is suspended or not allowed to use databases (403, no code).
    #[error("this account cannot use databases")]
    AccountForbidden,
    #[error("database not found")]
    NotFound,
    /// The account already has a database with that name (409, no code).
    #[error("you already have a database named `{0}`")]
    DuplicateName(String),

    // --- hepdb's additions ---
    /// The request itself is malformed (bad JSON, wrong field types).
    #[error("{0}")]
    BadRequest(String),
    #[error("no such endpoint")]
    NoRoute,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The account's databases already use more than its storage quota.
    #[error("your databases use more than your storage quota: free space or top up storage first")]
    OverStorageQuota,
    /// The Idempotency-Key was used before with a different request.
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// The database is disabled (suspension), so its password cannot be rotated.
    #[error("this database is disabled")]
    DatabaseDisabled,
    /// Over a rate limit; the number is the seconds until the request would be let through.
    #[error("too many requests: retry in {0} s")]
    RateLimited(u32),
    #[error("the metadata store is unavailable, try again shortly")]
    MetadataUnavailable,
    #[error("the job queue is unavailable, nothing was changed; try again shortly")]
    BrokerUnavailable,
    #[error("no worker took the job in time, nothing was changed; try again shortly")]
    WorkerUnavailable,
    #[error("the operation is still running and will complete; check the database again shortly")]
    JobTimeout,
    #[error("the database server is unavailable, nothing was changed; try again shortly")]
    EngineUnavailable,
    /// Every server of the engine is full or drained: an operator must add capacity.
    #[error(
        "no database server has room for a new database right now; an operator has been alerted"
    )]
    NoCapacity,
    #[error("the database could not be provisioned; an operator has been alerted")]
    EngineConflict,
    #[error("internal error")]
    Internal,

    // --- the platform API's ---
    #[error("missing platform token: send `Authorization: Bearer <token>`")]
    NoToken,
    /// Unknown, revoked or malformed; an API key is not a platform token.
    #[error("invalid platform token")]
    BadToken,
    #[error("account not found")]
    AccountNotFound,
    #[error("key not found")]
    KeyNotFound,
    #[error("no engine host by that name")]
    HostNotFound,
    /// A database whose create has not finished cannot be deleted yet.
    #[error("this database is still being created; delete it once its create has finished")]
    DatabaseBusy,
    /// Another account already has this `externalId`.
    #[error("an account with this externalId exists already")]
    ExternalIdTaken,
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            InvalidName(_) | EngineDisabled(_) | BadRequest(_) => 400,
            NoKey | BadKey | KeyDisabled | NoToken | BadToken => 401,
            OutOfSlots | OverStorageQuota => 402,
            AccountForbidden => 403,
            NotFound | NoRoute | AccountNotFound | KeyNotFound | HostNotFound => 404,
            MethodNotAllowed => 405,
            DuplicateName(_) | DatabaseDisabled | ExternalIdTaken | DatabaseBusy => 409,
            PayloadTooLarge => 413,
            IdempotencyKeyReused => 422,
            RateLimited(_) => 429,
            UnsupportedMediaType => 415,
            Internal | EngineConflict => 500,
            MetadataUnavailable | BrokerUnavailable | WorkerUnavailable | JobTimeout
            | EngineUnavailable | NoCapacity => 503,
        }
    }

    /// The machine code, absent exactly where the spec has none.
    pub fn code(&self) -> Option<&'static str> {
        use ApiError::*;
        Some(match self {
            InvalidName(_) | AccountForbidden | DuplicateName(_) => return None,
            EngineDisabled(_) => "ENGINE_DISABLED",
            NoKey => "NO_KEY",
            BadKey => "BAD_KEY",
            KeyDisabled => "KEY_DISABLED",
            OutOfSlots => "OUT_OF_SLOTS",
            OverStorageQuota => "OVER_STORAGE_QUOTA",
            NotFound => "NOT_FOUND",
            BadRequest(_) => "BAD_REQUEST",
            NoRoute => "NO_ROUTE",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            DatabaseDisabled => "DATABASE_DISABLED",
            IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            RateLimited(_) => "RATE_LIMITED",
            MetadataUnavailable => "METADATA_UNAVAILABLE",
            BrokerUnavailable => "BROKER_UNAVAILABLE",
            WorkerUnavailable => "WORKER_UNAVAILABLE",
            JobTimeout => "JOB_TIMEOUT",
            EngineUnavailable => "ENGINE_UNAVAILABLE",
            NoCapacity => "NO_CAPACITY",
            EngineConflict => "ENGINE_CONFLICT",
            Internal => "INTERNAL",
            NoToken => "NO_TOKEN",
            BadToken => "BAD_TOKEN",
            AccountNotFound => "ACCOUNT_NOT_FOUND",
            KeyNotFound => "KEY_NOT_FOUND",
            HostNotFound => "HOST_NOT_FOUND",
            DatabaseBusy => "DATABASE_BUSY",
            ExternalIdTaken => "EXTERNAL_ID_TAKEN",
        })
    }

    /// For a 429 or a 503: how many seconds to wait before the same request has a fair chance
    /// (sent as `Retry-After`). A change still running finishes soon; an outage takes longer;
    /// missing capacity needs an operator.
    pub fn retry_after_secs(&self) -> Option<u32> {
        use ApiError::*;
        match self {
            RateLimited(secs) => Some(*secs),
            JobTimeout => Some(2),
            MetadataUnavailable | BrokerUnavailable | WorkerUnavailable => Some(5),
            EngineUnavailable => Some(10),
            NoCapacity => Some(60),
            _ => None,
        }
    }

    /// The error envelope: `{"ok": false, "error": "...", "code": "..."}`, no `code` key when
    /// there is none.
    pub fn envelope(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "ok": false, "error": self.to_string() });
        if let Some(code) = self.code() {
            body["code"] = code.into();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_table_rows() {
        let rows: [(ApiError, u16, Option<&str>); 9] = [
            (ApiError::InvalidName("x".into()), 400, None),
            (
                ApiError::EngineDisabled("x".into()),
                400,
                Some("ENGINE_DISABLED"),
            ),
            (ApiError::NoKey, 401, Some("NO_KEY")),
            (ApiError::BadKey, 401, Some("BAD_KEY")),
            (ApiError::KeyDisabled, 401, Some("KEY_DISABLED")),
            (ApiError::OutOfSlots, 402, Some("OUT_OF_SLOTS")),
            (ApiError::AccountForbidden, 403, None),
            (ApiError::NotFound, 404, Some("NOT_FOUND")),
            (ApiError::DuplicateName("x".into()), 409, None),
        ];
        for (err, status, code) in rows {
            assert_eq!((err.status(), err.code()), (status, code), "{err:?}");
        }
    }

    #[test]
    fn platform_rows() {
        let rows: [(ApiError, u16, &str); 7] = [
            (ApiError::NoToken, 401, "NO_TOKEN"),
            (ApiError::BadToken, 401, "BAD_TOKEN"),
            (ApiError::AccountNotFound, 404, "ACCOUNT_NOT_FOUND"),
            (ApiError::KeyNotFound, 404, "KEY_NOT_FOUND"),
            (ApiError::HostNotFound, 404, "HOST_NOT_FOUND"),
            (ApiError::ExternalIdTaken, 409, "EXTERNAL_ID_TAKEN"),
            (ApiError::DatabaseBusy, 409, "DATABASE_BUSY"),
        ];
        for (err, status, code) in rows {
            assert_eq!((err.status(), err.code()), (status, Some(code)), "{err:?}");
        }
    }

    #[test]
    fn envelope_omits_absent_code() {
        let body = ApiError::DuplicateName("my-app".into()).envelope();
        assert_eq!(
            body,
            serde_json::json!({"ok": false, "error": "you already have a database named `my-app`"})
        );
        assert_eq!(ApiError::NoKey.envelope()["code"], "NO_KEY");
    }
}
