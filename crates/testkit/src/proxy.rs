//! A TCP proxy between a worker and one of its dependencies (the broker, an engine), through
//! which a test breaks the network the way it really breaks: every open connection cut at
//! once, or frozen (bytes held in one direction, sockets left open, so the other side's call
//! hangs until its own timeout).

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Which way a freeze holds bytes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Nothing is held.
    None,
    /// Requests never reach the server: the statement never runs.
    Requests,
    /// Replies never reach the client: the statement ran, the client cannot know.
    Replies,
}

#[derive(Debug)]
struct Shared {
    /// Bumped by [`Proxy::cut`]: every connection opened before ends.
    generation: watch::Sender<u64>,
    hold: watch::Sender<Hold>,
    /// Request chunks holding these bytes wait until it is `None` ([`Proxy::hold_matching`]).
    matching: watch::Sender<Option<Vec<u8>>>,
}

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl Proxy {
    /// Listens on a free local port and forwards every connection to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            generation: watch::channel(0).0,
            hold: watch::channel(Hold::None).0,
            matching: watch::channel(None).0,
        });
        let (upstream, accepting) = (upstream.to_owned(), shared.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(forward(client, server, accepting.clone()));
            }
        });
        Self {
            port,
            shared,
            accept,
        }
    }

    /// Ends every connection open now, as a network failure would; new ones go through.
    pub fn cut(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Holds bytes in one direction on every connection, open now or later, until
    /// `hold(Hold::None)`.
    pub fn hold(&self, hold: Hold) {
        self.shared.hold.send_replace(hold);
    }

    /// Holds every request that carries `bytes` (a statement's text, say), on every
    /// connection, until `hold_matching(None)`; everything else goes through. One statement
    /// the network delivers late, while the rest of its conversation goes on.
    pub fn hold_matching(&self, bytes: Option<&[u8]>) {
        self.shared.matching.send_replace(bytes.map(<[u8]>::to_vec));
    }
}

async fn forward(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let requests = pump(
        client_read,
        server_write,
        shared.hold.subscribe(),
        Hold::Requests,
        Some(shared.matching.subscribe()),
    );
    let replies = pump(
        server_read,
        client_write,
        shared.hold.subscribe(),
        Hold::Replies,
        None,
    );
    // Either side closing, or a cut, ends both directions (the sockets drop here).
    tokio::select! {
        _ = requests => {}
        _ = replies => {}
        _ = generation.changed() => {}
    }
}

/// Copies one direction, holding each chunk while that direction is held, or while it
/// carries the bytes `matching` names.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hold: watch::Receiver<Hold>,
    held_by: Hold,
    mut matching: Option<watch::Receiver<Option<Vec<u8>>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if hold.wait_for(|h| *h != held_by).await.is_err() {
            return;
        }
        let chunk = &buf[..n];
        if let Some(m) = matching.as_mut() {
            let carries = |p: &Option<Vec<u8>>| {
                p.as_ref().is_some_and(|p| {
                    !p.is_empty() && chunk.windows(p.len()).any(|w| w == p.as_slice())
                })
            };
            if m.wait_for(|p| !carries(p)).await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
