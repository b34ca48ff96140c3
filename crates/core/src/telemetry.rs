//! Logging setup shared by every binary.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::{LogFormat, TelemetrySettings};

/// Installs the global subscriber: JSON or compact lines on stderr, filtered by
/// `telemetry.log_filter` (an `EnvFilter` directive such as `info,hepdb_worker=debug`).
/// Idempotent, so tests that build several apps in one process can call it freely.
pub fn init(settings: &TelemetrySettings) {
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match settings.log_format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Compact => registry
            .with(fmt::layer().compact().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// What every long-running binary does first: load the settings, install logging, and warn
/// loudly if the development master key is in use.
pub fn boot() -> Result<crate::settings::Settings, crate::settings::SettingsError> {
    let settings = crate::settings::Settings::load()?;
    init(&settings.telemetry);
    if settings.crypto.is_dev_key() {
        tracing::warn!(
            "using the built-in development master key; set HEPDB__CRYPTO__MASTER_KEY in production"
        );
    }
    Ok(settings)
}
