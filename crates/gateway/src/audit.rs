//! The audit entries of API calls, committed in groups. A request still waits until its entry
//! is durable, but the entries of concurrent requests share one INSERT and one commit, so a
//! burst of reveals costs the metadata database one write instead of one per request.

use hepdb_store::{Store, audit::AuditEntry};
use tokio::sync::{mpsc, oneshot};

/// Entries written by one statement at most.
const MAX_BATCH: usize = 256;

/// One API action to record; ids only, never a secret.
#[derive(Debug)]
pub struct Entry {
    pub actor: String,
    pub action: &'static str,
    pub account: String,
    pub database: String,
    pub key: String,
    pub address: Option<String>,
    pub detail: Option<String>,
}

impl Entry {
    fn view(&self) -> AuditEntry<'_> {
        AuditEntry {
            actor: &self.actor,
            action: self.action,
            account: &self.account,
            database: Some(&self.database),
            key: Some(&self.key),
            address: self.address.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

#[derive(Debug)]
struct Pending {
    entry: Entry,
    committed: oneshot::Sender<bool>,
}

/// The handle requests use; one writer task per gateway process does the inserts.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

impl AuditWriter {
    pub fn start(store: Store) -> Self {
        let (queue, pending) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(store, pending));
        Self { queue }
    }

    /// Records `entry` and waits for its commit; `false` if it could not be written (already
    /// logged as an alert).
    pub async fn record(&self, entry: Entry) -> bool {
        let (committed, done) = oneshot::channel();
        if self.queue.send(Pending { entry, committed }).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}

/// Takes whatever has queued up while the previous insert ran, and writes it in one
/// statement. Runs to completion each time: a request that stops waiting does not cancel it.
async fn write_batches(store: Store, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let entries: Vec<AuditEntry<'_>> = batch.iter().map(|p| p.entry.view()).collect();
        let written = match store.audit_many(&entries).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(alert = true, %error, entries = entries.len(), "could not write the audit log");
                false
            }
        };
        drop(entries);
        for p in batch.drain(..) {
            let _ = p.committed.send(written);
        }
    }
}
