//! What every handler can reach.

use hepdb_core::{Engine, secret::MasterKey, settings::EnginesSettings};
use hepdb_store::Store;

use crate::dispatch::Dispatcher;

#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub key: MasterKey,
    pub engines: EnginesSettings,
}

impl AppState {
    /// Public host and port for connection strings, if the engine is enabled.
    pub fn public_endpoint(&self, engine: Engine) -> Option<(&str, u16)> {
        let e = self.engines.get(engine);
        e.enabled.then_some((e.public_host.as_str(), e.public_port))
    }
}
