//! `hepdb-worker`: runs jobs until SIGTERM or Ctrl-C.

use anyhow::Context;
use hepdb_worker::Worker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (settings, _telemetry) = hepdb_telemetry::boot("hepdb-worker")?;
    let worker = Worker::start(&settings).context("starting the worker")?;
    tracing::info!(queue_prefix = %settings.amqp.queue_prefix, "hepdb-worker started");
    shutdown_signal().await;
    let deadline = std::time::Duration::from_secs(settings.worker.shutdown_secs);
    tracing::info!(
        ?deadline,
        "shutting down: no new jobs, finishing the running ones"
    );
    let requeued = worker.shutdown_within(deadline).await;
    tracing::info!(requeued, "stopped; unfinished jobs went back to the queue");
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
