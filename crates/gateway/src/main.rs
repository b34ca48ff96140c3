//! `hepdb-gateway`: serves the management API.

use anyhow::Context;
use hepdb_core::{settings::Settings, telemetry};
use hepdb_gateway::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    telemetry::init(&settings.telemetry);
    if settings.crypto.is_dev_key() {
        tracing::warn!(
            "using the built-in development master key; set HEPDB__CRYPTO__MASTER_KEY in production"
        );
    }
    let app = Application::build(&settings).context("starting the gateway")?;
    tracing::info!(listen = %settings.gateway.listen, port = app.port(), "hepdb-gateway listening");
    app.run_until_stopped().await?;
    Ok(())
}
