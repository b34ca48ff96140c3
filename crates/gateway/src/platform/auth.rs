//! Platform-token authentication: a handler that takes a [`Platform`] caller was called by one
//! of the hosting platform's services with a live token. API keys never pass here, and platform
//! tokens never pass the public API's key check (the two have different shapes).

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use hepdb_core::{ApiError, secret::PlatformToken};
use hepdb_store::audit::{Actor, Binding};
use serde::de::DeserializeOwned;

use crate::{auth::token, error::HttpError, state::AppState};

/// The platform service behind the request's token.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The token's id: the scope of its Idempotency-Keys.
    pub token: String,
    /// `platform:<token name>`: the actor of every audit entry it causes.
    who: String,
    /// The caller's address: the TCP peer (not a header a caller could forge).
    from: Option<String>,
}

impl Platform {
    /// The audit log's actor for this caller.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            name: &self.who,
            address: self.from.as_deref(),
            idempotency: None,
        }
    }

    /// The actor, with the request's Idempotency-Key (if it sent one) bound to the change.
    pub fn actor_keyed<'a>(&'a self, keyed: Option<&'a super::Keyed>) -> Actor<'a> {
        Actor {
            idempotency: keyed.map(|k| Binding {
                token: &self.token,
                key: k.key.as_str(),
                fingerprint: &k.fingerprint,
            }),
            ..self.actor()
        }
    }
}

impl FromRequest for Platform {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, HttpError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let raw = req.headers().get(header::AUTHORIZATION);
        let parsed = token(raw.and_then(|v| v.to_str().ok()))
            .ok_or(ApiError::NoToken)
            .and_then(|t| PlatformToken::parse(t).ok_or(ApiError::BadToken));
        // The platform's services call from inside the cluster, past no ingress: the TCP peer
        // is the caller (no forwarding header is believed here).
        let address = req.peer_addr().map(|a| a.ip());
        Box::pin(async move {
            let state = state.ok_or(HttpError(ApiError::Internal))?;
            let hash = parsed.map_err(HttpError)?.hash();
            let (token, name) = state
                .store
                .platform_token(&hash)
                .await?
                .ok_or(HttpError(ApiError::BadToken))?;
            Ok(Platform {
                token,
                who: format!("platform:{name}"),
                from: address.map(|a| a.to_string()),
            })
        })
    }
}

/// An authenticated caller and its JSON body, extracted in that order. Separate extractors run
/// together, so a `web::Json` next to a [`Platform`] would answer a malformed body (and name
/// the expected fields) to a caller whose token is not yet checked.
#[derive(Debug)]
pub struct Authed<T>(pub Platform, pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Authed<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        let platform = Platform::from_request(&req, &mut Payload::None);
        Box::pin(async move {
            let platform = platform.await?;
            let body = web::Json::<T>::from_request(&req, &mut payload).await?;
            Ok(Authed(platform, body.into_inner()))
        })
    }
}
