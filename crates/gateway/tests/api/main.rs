//! End-to-end tests of the management API against real PostgreSQL, RabbitMQ and MariaDB.

mod auth;
mod create;
mod envelope;
mod helpers;
mod pipeline;
mod reveal_rotate;
