//! Everything the gateway, the worker and the operator CLI must agree on, and nothing that ties
//! them to a web framework, an ORM or a broker client: ids, engines, naming, secrets, the error
//! catalog, the job messages and the settings loader.

pub mod account;
pub mod conn_string;
pub mod engine;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod naming;
pub mod random;
pub mod secret;
pub mod settings;
pub mod state;
pub mod time;
pub mod url;

pub use engine::Engine;
pub use error::ApiError;
pub use ids::{AccountId, DatabaseId, JobId, KeyId, PlatformTokenId};
pub use state::{Access, DatabaseState, JobState};
