//! Hosts found down during one background pass (the reconciler's, the quota watcher's).
//!
//! Each engine call of a pass waits up to `worker.engine_timeout_secs` on a host that is down
//! or hangs; a pass that tried each of a dead host's rows in turn would wait that long per
//! row. After the first failure on a host the pass asks whether the host answers at all; if it
//! does not, the host's other rows wait for the next pass, which tries again.

use std::collections::HashSet;

use crate::{engines::EngineError, jobs::JobContext};

#[derive(Debug, Default)]
pub struct HostGate {
    down: HashSet<String>,
}

impl HostGate {
    /// A gate that starts with `down` (hosts the pass already failed to reach).
    pub fn with_down(down: impl IntoIterator<Item = String>) -> Self {
        Self {
            down: down.into_iter().collect(),
        }
    }

    /// `Err` with the reason to report when `host` was found down earlier in this pass.
    pub fn check(&self, host: &str) -> Result<(), String> {
        if self.down.contains(host) {
            Err(format!(
                "host {host} unavailable earlier in this pass; next pass"
            ))
        } else {
            Ok(())
        }
    }

    /// Records that an engine call on `host` failed with `error`: an unreachable host, or one
    /// that did not answer in time, is down for the rest of the pass.
    pub fn engine_failed(&mut self, host: &str, error: &EngineError) {
        if matches!(
            error,
            EngineError::Unreachable(_) | EngineError::Unavailable(_)
        ) {
            self.down.insert(host.to_owned());
        }
    }

    /// Records that an action on `host` failed for a reason the caller cannot type (a job run
    /// in process): the host is down for the rest of the pass if it does not answer a ping
    /// within the engine timeout.
    pub async fn action_failed(&mut self, ctx: &JobContext, host: &str) {
        if self.down.contains(host) {
            return;
        }
        let Some(driver) = ctx.engines.get(host) else {
            return;
        };
        if let Err(error) = crate::jobs::bounded(ctx.engine_timeout, driver.ping()).await {
            tracing::warn!(%error, host, "host does not answer; its other rows wait for the next pass");
            self.down.insert(host.to_owned());
        }
    }
}
