//! Bearer-key authentication, as extractors: a handler that takes a [`Caller`] is
//! authenticated. A handler that takes a [`BearerKey`] has a parsed key and must pass what
//! it reads through [`BearerKey::authorize`] before it answers (list and reveal read the key
//! and their rows in one round trip).

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use hepdb_core::{
    AccountId, ApiError, KeyId,
    secret::{ApiKey, KeyHash},
};
use hepdb_store::{
    Store,
    models::{Account, ApiKeyRow},
};

use crate::{error::HttpError, rate_limit::Class, state::AppState};

/// The authenticated account behind the request's key.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub account: AccountId,
    /// The key it authenticated with, for the audit log.
    pub key: KeyId,
    /// The client's address: the TCP peer, or what a trusted proxy says it forwarded for.
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

/// The request's key, parsed but not yet looked up: 401 `NO_KEY` or `BAD_KEY` if the header
/// cannot hold a key. The read endpoints look it up together with the rows they read.
#[derive(Debug)]
pub struct BearerKey {
    hash: KeyHash,
    address: Option<std::net::IpAddr>,
}

impl BearerKey {
    pub fn hash(&self) -> &KeyHash {
        &self.hash
    }

    /// The caller this key stands for, given its stored row and account (as `find_key` and
    /// the combined reads return them): the one place keys are checked. There is no cache:
    /// disabling a key or suspending an account takes effect on the very next request, on
    /// every replica.
    ///
    /// An accepted key's use is recorded in the background, at most once an hour. Then one
    /// request of `class` is spent from the key's and the account's rate limits.
    pub fn authorize(
        &self,
        state: &AppState,
        class: Class,
        found: Option<(&ApiKeyRow, &Account)>,
    ) -> Result<Caller, HttpError> {
        let refuse = |refusal| Err(refused(Some(state), self.address, refusal));
        let Some((row, account)) = found else {
            return refuse(ApiError::BadKey);
        };
        if !self.hash.matches(&row.key_hash) || row.revoked_at.is_some() {
            return refuse(ApiError::BadKey);
        }
        if !row.enabled {
            return refuse(ApiError::KeyDisabled);
        }
        if account.suspended || !account.db_access {
            return refuse(ApiError::AccountForbidden);
        }
        note_use(&state.store, row);
        let caller = Caller {
            account: account
                .id
                .parse()
                .map_err(|_| HttpError(ApiError::Internal))?,
            key: row.id.parse().map_err(|_| HttpError(ApiError::Internal))?,
            address: self.address,
        };
        if let Some(limits) = &state.limits {
            limits.check(class, caller.key.as_u128(), caller.account.as_u128())?;
        }
        Ok(caller)
    }

    /// Looks the key up on its own (for endpoints that read nothing before they check it).
    pub async fn authenticate(&self, state: &AppState, class: Class) -> Result<Caller, HttpError> {
        let found = state.store.find_key(&self.hash).await?;
        self.authorize(
            state,
            class,
            found.as_ref().map(|(row, account)| (row, account)),
        )
    }
}

/// Keys whose use this process is recording now: at most one write per key at a time, however
/// many requests arrive before it commits (or while metadata refuses it).
static NOTING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Records, in the background, that an accepted key was used, when its last recorded use is
/// over an hour old: `lastUsedAt` is coarse, so authentication adds no write per request.
fn note_use(store: &Store, row: &ApiKeyRow) {
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    if row.last_used_at.is_some_and(|at| at >= hour_ago)
        || !NOTING.lock().expect("noting lock").insert(row.id.clone())
    {
        return;
    }
    let (store, id) = (store.clone(), row.id.clone());
    tokio::spawn(async move {
        if let Err(error) = store.note_key_use(&id).await {
            tracing::debug!(%error, "could not record a key's use");
        }
        NOTING.lock().expect("noting lock").remove(&id);
    });
}

impl FromRequest for BearerKey {
    type Error = HttpError;
    type Future = std::future::Ready<Result<Self, HttpError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.headers().get(header::AUTHORIZATION);
        let address = crate::client_addr::of(req);
        // A header that is not text holds no key; a token of the wrong shape cannot match one
        // (no lookup needed).
        let parsed = token(raw.and_then(|v| v.to_str().ok()))
            .ok_or(ApiError::NoKey)
            .and_then(|t| ApiKey::parse(t).ok_or(ApiError::BadKey));
        std::future::ready(match parsed {
            Ok(key) => Ok(BearerKey {
                hash: key.hash(),
                address,
            }),
            Err(refusal) => {
                let state = req.app_data::<web::Data<AppState>>();
                Err(refused(state.map(|s| s.get_ref()), address, refusal))
            }
        })
    }
}

/// A refused authentication: spent from the client address's budget of failures when limits
/// are on; once that budget is gone, a request with no key or an unknown one is answered 429
/// `RATE_LIMITED` instead (see [`crate::rate_limit::Limits::refused`]).
fn refused(
    state: Option<&AppState>,
    address: Option<std::net::IpAddr>,
    refusal: ApiError,
) -> HttpError {
    HttpError(match state.and_then(|s| s.limits.as_ref()) {
        Some(limits) => limits.refused(address, refusal),
        None => refusal,
    })
}

impl FromRequest for Caller {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, HttpError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let bearer = BearerKey::from_request(req, payload).into_inner();
        Box::pin(async move {
            let state = state.ok_or(HttpError(ApiError::Internal))?;
            // The endpoints that take a `Caller` are the changes (create, rotate).
            bearer?.authenticate(&state, Class::Change).await
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
