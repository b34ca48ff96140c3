//! What every long-running hepdb binary reports about itself: logs on stderr, OpenTelemetry
//! traces over OTLP when an endpoint is configured, Prometheus metrics, and the `/readyz`
//! answer. One crate, so the gateway and the worker cannot drift apart in how they are observed.

mod metrics;
mod propagation;
mod readiness;
mod span_metrics;
mod traces;

use hepdb_core::settings::{LogFormat, Settings, SettingsError, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter, fmt, prelude::*};

pub use metrics::metrics;
pub use propagation::{TRACE_HEADERS, continue_trace, trace_context};
pub use readiness::{NOT_READY_RETRY_AFTER_SECS, readiness};
pub use traces::rename;

/// The installed telemetry. Holds the trace exporter, whose buffered spans are sent when this
/// is shut down or dropped (so keep it alive for the whole of `main`).
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans buffered so far (tests; a process exit does it by itself).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "could not export the buffered spans");
        }
    }

    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber: JSON or compact lines on stderr, filtered by
/// `telemetry.log_filter` (an `EnvFilter` directive such as `info,hepdb_worker=debug`), plus
/// export of every info-level span to `telemetry.otlp_endpoint` as `service` when it is set,
/// and every info-level span's duration as a histogram on `/metrics`.
/// The first call in a process wins; later ones (tests that build several apps) change
/// nothing.
pub fn init(settings: &TelemetrySettings, service: &'static str) -> Telemetry {
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.log_format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Compact => fmt::layer().compact().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);
    let url = settings.otlp_traces_url();
    let built = url
        .as_deref()
        .map(|url| traces::provider(url, service, settings.trace_sample_ratio));
    let (provider, failure) = match built {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_threads(false)
            // Its own filter: quieter logs must not cut spans out of traces.
            .with_filter(LevelFilter::INFO)
    });
    // Steps' durations as metrics whether or not traces are exported.
    metrics();
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(span_metrics::SpanMetrics.with_filter(LevelFilter::INFO))
        .try_init()
        .is_ok();
    if !installed {
        // Another subscriber was there first: it would never see these spans.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Telemetry::default();
    }
    match (&url, &failure) {
        (Some(url), None) => tracing::info!(%url, service, "exporting traces over OTLP"),
        (Some(url), Some(error)) => {
            tracing::error!(%url, %error, "cannot export traces; running without")
        }
        _ => {}
    }
    Telemetry { provider }
}

/// What every long-running binary does first: load the settings (refusing unknown keys, and
/// the development master key outside development mode), install telemetry as `service`, and
/// warn if the development key is in use.
pub fn boot(service: &'static str) -> Result<(Settings, Telemetry), SettingsError> {
    let settings = Settings::load()?;
    settings.refuse_dev_key()?;
    let telemetry = init(&settings.telemetry, service);
    if settings.crypto.is_dev_key() {
        tracing::warn!(
            "using the built-in development master key; set HEPDB__CRYPTO__MASTER_KEY in production"
        );
    }
    Ok((settings, telemetry))
}
