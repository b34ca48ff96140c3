//! Rate limits of the public API: per key and per account, with separate budgets for reads
//! (list, reveal) and changes (create, rotate), so that one key flooding rotates starves
//! neither its own reads nor anyone else. GCRA (governor), in this process's memory: each
//! gateway replica counts on its own (README says how to size the limits for N replicas).
//!
//! A refused authentication (no key, an unknown or disabled one, a forbidden account) spends
//! instead from a budget of the client's address (the one the audit log records), so that
//! guessing keys from one address is slowed and those answers carry the headers too.
//!
//! The decision is made where the caller becomes known (`auth.rs`); the headers go out on
//! every answer to a caller, known or refused, through [`headers`]: `RateLimit-Policy` names the class's
//! two policies, `RateLimit` the one closer to exhaustion (IETF httpapi ratelimit-headers
//! draft), and a 429 carries `Retry-After`.

use std::{cell::RefCell, num::NonZeroU32, time::Duration};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use hepdb_core::{ApiError, settings::RateLimitSettings};

/// Client addresses with failures counted, past which idle ones are forgotten at once.
const MAX_FAILING_ADDRESSES: usize = 100_000;

/// What a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// List and reveal.
    Read,
    /// Create and rotate.
    Change,
}

type Keyed =
    RateLimiter<u128, DefaultKeyedStateStore<u128>, DefaultClock, StateInformationMiddleware>;

/// One budget: a name for the headers, its rate, and the counts per key or account.
struct Policy {
    name: &'static str,
    per_minute: u32,
    limiter: Keyed,
}

impl Policy {
    fn new(name: &'static str, per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::keyed(Quota::per_minute(n))
            .with_middleware::<StateInformationMiddleware>();
        Self {
            name,
            per_minute: n.get(),
            limiter,
        }
    }

    /// Spends one unit of `who`'s budget: what is left and how long until the budget is
    /// whole again, or how long until one unit is back.
    fn spend(&self, who: u128, clock: &DefaultClock) -> Result<Left, Duration> {
        match self.limiter.check_key(&who) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let quota = snapshot.quota();
                let used = quota.burst_size().get().saturating_sub(remaining);
                Ok(Left {
                    policy: self.name,
                    remaining,
                    reset: quota.replenish_interval() * used,
                })
            }
            Err(not_until) => Err(not_until.wait_time_from(clock.now())),
        }
    }

    fn describe(&self) -> String {
        format!("\"{}\";q={};w=60", self.name, self.per_minute)
    }
}

/// How much of the tighter budget is left after a request.
#[derive(Debug, Clone, Copy)]
struct Left {
    policy: &'static str,
    remaining: u32,
    reset: Duration,
}

/// The budgets of this process.
pub struct Limits {
    reads: [Policy; 2],
    changes: [Policy; 2],
    /// Refused authentications, per client address.
    failures: Policy,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

/// What the headers of this request's answer say, once its caller is known.
#[derive(Debug, Clone)]
struct Verdict {
    policies: String,
    left: Left,
}

tokio::task_local! {
    static VERDICT: RefCell<Option<Verdict>>;
}

impl Limits {
    /// `None` when limits are off.
    pub fn from_settings(s: &RateLimitSettings) -> Option<Self> {
        s.enabled.then(|| Self {
            reads: [
                Policy::new("key-reads", s.key_reads_per_minute),
                Policy::new("account-reads", s.account_reads_per_minute),
            ],
            changes: [
                Policy::new("key-changes", s.key_changes_per_minute),
                Policy::new("account-changes", s.account_changes_per_minute),
            ],
            failures: Policy::new("address-failures", s.address_failures_per_minute),
            clock: DefaultClock::default(),
        })
    }

    /// Spends one request of `class` from the key's budget and its account's; 429
    /// `RATE_LIMITED` (with the wait) when either is spent.
    pub fn check(&self, class: Class, key: u128, account: u128) -> Result<(), ApiError> {
        let [by_key, by_account] = match class {
            Class::Read => &self.reads,
            Class::Change => &self.changes,
        };
        let policies = format!("{}, {}", by_key.describe(), by_account.describe());
        let spent = by_key
            .spend(key, &self.clock)
            .map_err(|wait| (by_key, wait));
        let left = spent.and_then(|k| {
            let a = by_account
                .spend(account, &self.clock)
                .map_err(|wait| (by_account, wait))?;
            Ok(if k.remaining <= a.remaining { k } else { a })
        });
        settle(policies, left)
    }

    /// A refused authentication from `address`: spends one of the address's failures, and
    /// answers `refusal`. Once they are spent, a request with no key or an unknown one is
    /// answered 429 `RATE_LIMITED` instead; a real key that is disabled, or whose account may
    /// not use databases, keeps its own answer (its owner must learn why), with the headers.
    /// Without an address (no peer) there is nothing to count.
    pub fn refused(&self, address: Option<std::net::IpAddr>, refusal: ApiError) -> ApiError {
        let Some(address) = address else {
            return refusal;
        };
        // One budget per IPv4 address, and per IPv6 /64 (what one client is usually given,
        // so that walking its own prefix buys no fresh budget).
        let who = match address {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            std::net::IpAddr::V6(v6) => v6.to_bits() & !u128::from(u64::MAX),
        };
        // Callers who send no valid key can make entries; past a bound, the whole ones go
        // at once rather than at the minute's cleanup.
        if self.failures.limiter.len() > MAX_FAILING_ADDRESSES {
            self.failures.limiter.retain_recent();
        }
        let spent = self
            .failures
            .spend(who, &self.clock)
            .map_err(|wait| (&self.failures, wait));
        match (settle(self.failures.describe(), spent), refusal) {
            (Ok(()), refusal) => refusal,
            (Err(_), refusal @ (ApiError::KeyDisabled | ApiError::AccountForbidden)) => refusal,
            (Err(limited), _) => limited,
        }
    }

    /// Forgets callers whose budgets are whole again, so the counts do not grow with the
    /// number of keys ever seen.
    pub fn forget_idle(&self) {
        let failures = std::iter::once(&self.failures);
        for policy in self.reads.iter().chain(&self.changes).chain(failures) {
            policy.limiter.retain_recent();
            policy.limiter.shrink_to_fit();
        }
    }
}

/// Records the verdict for the answer's headers: `Ok` with what is left, or 429
/// `RATE_LIMITED` with the wait.
fn settle(policies: String, left: Result<Left, (&Policy, Duration)>) -> Result<(), ApiError> {
    match left {
        Ok(left) => {
            record(Verdict { policies, left });
            Ok(())
        }
        Err((policy, wait)) => {
            // Whole seconds, rounded up: a client that waits this long is let through.
            let secs = u32::try_from(wait.as_millis().div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1);
            let left = Left {
                policy: policy.name,
                remaining: 0,
                reset: Duration::from_secs(secs.into()),
            };
            record(Verdict { policies, left });
            Err(ApiError::RateLimited(secs))
        }
    }
}

fn record(verdict: Verdict) {
    let _ = VERDICT.try_with(|v| *v.borrow_mut() = Some(verdict));
}

/// The middleware (`App::wrap(from_fn(rate_limit::headers))`): the request runs with room for
/// its verdict, and the answer gets the headers of it.
pub async fn headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let (mut res, verdict) = VERDICT
        .scope(RefCell::new(None), async {
            let res = next.call(req).await;
            (res, VERDICT.with(|v| v.borrow_mut().take()))
        })
        .await;
    if let (Ok(res), Some(verdict)) = (&mut res, verdict) {
        let left = verdict.left;
        let state = format!(
            "\"{}\";r={};t={}",
            left.policy,
            left.remaining,
            left.reset.as_secs_f64().ceil() as u64
        );
        for (name, value) in [("ratelimit-policy", verdict.policies), ("ratelimit", state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                res.headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
    }
    res
}
