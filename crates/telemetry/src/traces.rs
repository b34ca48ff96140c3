//! The OTLP span exporter.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};

/// A provider that batches spans on the SDK's own thread and posts them as OTLP/HTTP protobuf
/// to `url`. New traces are sampled at `ratio`; a trace that arrives with a request or a job
/// keeps the decision its first process made, so a trace is never cut in half.
pub(crate) fn provider(
    url: &str,
    service: &'static str,
    ratio: f64,
) -> Result<SdkTracerProvider, ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_batch_exporter(exporter)
        .build())
}

/// Renames the exported span of `span`, for a name known only once the span has started (an
/// HTTP route is known after routing). Does nothing when traces are not exported.
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().update_name(name);
}
