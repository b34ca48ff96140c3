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

/// The process's metrics registry, in Prometheus text format on `/metrics` of the gateway and
/// of the worker's admin port. Installed on first use; one per process, so every app a test
/// builds in one process shares it.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        // Seconds: from a fast reveal to a job that waited for a slow engine.
        const BUCKETS: [f64; 14] = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
        ];
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("non-empty buckets")
            .install_recorder()
            .expect("the only metrics recorder of the process")
    })
}

/// The `/readyz` answer both binaries give: 200 with the checks when every one is up, else
/// 503 `NOT_READY` in the error envelope with the same checks, so a probe and a person read
/// the same thing.
pub fn readiness(ready: bool, checks: serde_json::Value) -> (u16, serde_json::Value) {
    if ready {
        (
            200,
            serde_json::json!({ "ok": true, "data": { "checks": checks } }),
        )
    } else {
        (
            503,
            serde_json::json!({
                "ok": false,
                "error": "not ready",
                "code": "NOT_READY",
                "checks": checks,
            }),
        )
    }
}
