//! What every handler can reach.

use hepdb_core::{Engine, secret::MasterKey, settings::EnginesSettings};
use hepdb_store::Store;

use crate::{audit::AuditWriter, dispatch::Dispatcher, rate_limit::Limits};

#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub audit: AuditWriter,
    pub key: MasterKey,
    pub engines: EnginesSettings,
    /// The public API's rate limits; `None` when they are off.
    pub limits: Option<Limits>,
}

impl AppState {
    /// The hosts a new database of `engine` may be placed on; `None` if the engine is not
    /// offered by this deployment.
    pub fn placeable_hosts(&self, engine: Engine) -> Option<Vec<&str>> {
        let e = self.engines.get(engine);
        e.enabled
            .then(|| e.hosts(engine).into_iter().map(|h| h.name).collect())
    }
}
