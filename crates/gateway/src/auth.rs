//! Bearer-key authentication, as an extractor: a handler that takes a [`Caller`] is
//! authenticated, and one that does not cannot accidentally be.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use hepdb_core::{AccountId, ApiError, KeyId, secret::ApiKey};

use crate::{error::HttpError, state::AppState};

/// The authenticated account behind the request's key.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub account: AccountId,
    /// The key it authenticated with, for the audit log.
    pub key: KeyId,
    /// The peer's address (the TCP peer, not a header a client could forge).
    pub address: Option<std::net::IpAddr>,
}

/// The token from `Authorization: Bearer <key>`, `Token <key>`, or the raw key. `None` when
/// the header is missing or the token is empty.
pub fn token(header_value: Option<&str>) -> Option<&str> {
    let value = header_value?.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    let token = if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        rest.trim()
    } else {
        value
    };
    (!token.is_empty()).then_some(token)
}

impl FromRequest for Caller {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, HttpError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let address = req.peer_addr().map(|a| a.ip());
        let raw = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
        Box::pin(async move {
            let state = state.ok_or(HttpError(ApiError::Internal))?;
            let token = token(raw.as_deref()).ok_or(HttpError(ApiError::NoKey))?;
            // A token of the wrong shape cannot match a key: no lookup needed.
            let key = ApiKey::parse(token).ok_or(HttpError(ApiError::BadKey))?;
            let hash = key.hash();
            // No cache: disabling a key takes effect on the very next request, on every replica.
            let (row, account) = state
                .store
                .find_key(&hash)
                .await?
                .ok_or(HttpError(ApiError::BadKey))?;
            if !hash.matches(&row.key_hash) {
                return Err(HttpError(ApiError::BadKey));
            }
            if !row.enabled {
                return Err(HttpError(ApiError::KeyDisabled));
            }
            if account.suspended || !account.db_access {
                return Err(HttpError(ApiError::AccountForbidden));
            }
            let account = account
                .id
                .parse()
                .map_err(|_| HttpError(ApiError::Internal))?;
            let key = row.id.parse().map_err(|_| HttpError(ApiError::Internal))?;
            Ok(Caller {
                account,
                key,
                address,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::token;

    #[test]
    fn accepts_the_three_header_forms() {
        assert_eq!(token(Some("Bearer abc")), Some("abc"));
        assert_eq!(token(Some("bearer abc")), Some("abc"));
        assert_eq!(token(Some("Token abc")), Some("abc"));
        assert_eq!(token(Some("abc")), Some("abc"));
        assert_eq!(token(Some("  Bearer   abc  ")), Some("abc"));
    }

    #[test]
    fn empty_tokens_are_missing_keys() {
        assert_eq!(token(None), None);
        assert_eq!(token(Some("")), None);
        assert_eq!(token(Some("Bearer")), None);
        assert_eq!(token(Some("token")), None);
        assert_eq!(token(Some("Bearer ")), None);
        assert_eq!(token(Some("Token   ")), None);
    }
}
