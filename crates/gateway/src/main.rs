//! `hepdb-gateway`: serves the management API.

use anyhow::Context;
use hepdb_gateway::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut settings, _telemetry) = hepdb_telemetry::boot("hepdb-gateway")?;
    // The internet-facing process holds no engine credential, even where its environment
    // (a development machine, the built-in defaults) would give it one.
    settings.engines.forget_credentials();
    let app = Application::build(&settings)
        .await
        .context("starting the gateway")?;
    tracing::info!(listen = %settings.gateway.listen, port = app.port(), "hepdb-gateway listening");
    app.run_until_stopped().await?;
    Ok(())
}
