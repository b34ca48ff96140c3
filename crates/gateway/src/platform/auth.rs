//! Platform-token authentication: a handler that takes a [`Platform`] caller was called by one
//! of the hosting platform's services with a live token. API keys never pass here, and platform
//! tokens never pass the public API's key check (the two have different shapes).

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use hepdb_core::{ApiError, secret::PlatformToken};

use crate::{auth::token, error::HttpError, state::AppState};

/// The platform service behind the request's token.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The token's name: the actor of every audit entry it causes.
    pub name: String,
    /// The peer's address (the TCP peer, not a header a client could forge).
    pub address: Option<std::net::IpAddr>,
}

impl Platform {
    /// The audit log's actor for this caller.
    pub fn actor(&self) -> String {
        format!("platform:{}", self.name)
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
        let address = req.peer_addr().map(|a| a.ip());
        Box::pin(async move {
            let state = state.ok_or(HttpError(ApiError::Internal))?;
            let hash = parsed.map_err(HttpError)?.hash();
            let name = state
                .store
                .platform_token_name(&hash)
                .await?
                .ok_or(HttpError(ApiError::BadToken))?;
            Ok(Platform { name, address })
        })
    }
}
