//! End-to-end tests of the management API against real PostgreSQL, RabbitMQ and the engines.
// Some tests are long async blocks over deep futures; computing their layout can pass the
// default query depth of 128 on a fresh build (seen once in CI, not on incremental ones).
#![recursion_limit = "256"]

mod auth;
mod boot;
mod client_address;
mod create;
mod dead_letter;
mod engines;
mod envelope;
mod hosts;
mod idempotency;
mod metadata_tls;
mod openapi;
mod pipeline;
mod platform;
mod quota;
mod rate_limit;
mod reconcile;
mod reveal_rotate;
mod soak;
