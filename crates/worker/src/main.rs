//! `hepdb-worker`: runs jobs until SIGTERM or Ctrl-C.

use anyhow::Context;
use hepdb_core::telemetry;
use hepdb_worker::Worker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = telemetry::boot()?;
    let worker = Worker::start(&settings).context("starting the worker")?;
    tracing::info!(queue_prefix = %settings.amqp.queue_prefix, "hepdb-worker started");
    shutdown_signal().await;
    tracing::info!("shutting down; unacknowledged jobs return to the queue");
    worker.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
