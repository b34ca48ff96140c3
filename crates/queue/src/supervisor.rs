//! The reconnect loop.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::watch;

/// The current session of a supervised connection: `Some` while connected and set up.
#[derive(Debug)]
pub struct Supervised<S> {
    current: watch::Receiver<Option<Arc<S>>>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A cloneable view of a supervised connection's current session, for tasks that outlive a
/// borrow of the [`Supervised`] handle.
#[derive(Debug)]
pub struct SessionView<S>(watch::Receiver<Option<Arc<S>>>);

impl<S> Clone for SessionView<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> SessionView<S> {
    /// The live session, or `None` while disconnected.
    pub fn current(&self) -> Option<Arc<S>> {
        self.0.borrow().clone()
    }
}

impl<S> Supervised<S> {
    pub fn view(&self) -> SessionView<S> {
        SessionView(self.current.clone())
    }

    /// The live session, or `None` while disconnected.
    pub fn current(&self) -> Option<Arc<S>> {
        self.current.borrow().clone()
    }

    pub fn is_connected(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// Waits up to `timeout` for a session (startup, or recovery after a broker restart).
    pub async fn wait_connected(&self, timeout: Duration) -> Option<Arc<S>> {
        let mut rx = self.current.clone();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?
            .clone()
    }
}

impl<S> Supervised<S> {
    /// Closes the connection (the broker requeues whatever was delivered and not acked) and
    /// waits for the loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl<S> Drop for Supervised<S> {
    /// Dropping stops the loop too; the connection closes in the background.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps a connection to `url` alive for as long as the returned handle lives. `setup` runs on
/// every (re)connection and builds the role's session: channels, declarations, consumers.
/// `url` may carry credentials and is never logged.
pub fn supervise<S, F, Fut>(url: String, name: &'static str, setup: F) -> Supervised<S>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<Connection>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = lapin::Result<S>> + Send,
{
    let (tx, rx) = watch::channel(None);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        while !*stopped.borrow() {
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            match crate::connect(&url, properties).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    let events = conn.events_listener();
                    match setup(conn.clone()).await {
                        Ok(session) => {
                            tracing::info!(connection = name, "connected to the broker");
                            // The first connection counts too: reconnects are this minus one.
                            metrics::counter!("hepdb_broker_connections_total", "role" => name)
                                .increment(1);
                            tx.send_replace(Some(Arc::new(session)));
                            backoff = MIN_BACKOFF;
                            let lost = tokio::select! {
                                _ = wait_for_loss(&conn, events) => true,
                                _ = stopped.wait_for(|s| *s) => false,
                            };
                            tx.send_replace(None);
                            if lost {
                                tracing::warn!(
                                    connection = name,
                                    "lost the broker connection, reconnecting"
                                );
                            }
                        }
                        Err(error) => {
                            tracing::warn!(connection = name, %error, "broker setup failed");
                        }
                    }
                    let _ = conn.close(200, "reconnecting".into()).await;
                }
                Err(error) => {
                    tracing::warn!(connection = name, %error, "cannot connect to the broker");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    Supervised {
        current: rx,
        stop,
        task: Some(task),
    }
}

/// Returns once the connection is unusable: an error event, or (as a backstop for failures
/// that raise no event) a status that is no longer connected.
async fn wait_for_loss(conn: &Connection, events: impl futures_util::Stream<Item = Event> + Send) {
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(error)) => {
                    tracing::warn!(%error, "broker connection error");
                    return;
                }
                None => return,
                Some(_) => {}
            },
            _ = tick.tick() => {
                if !conn.status().connected() {
                    return;
                }
            }
        }
    }
}
