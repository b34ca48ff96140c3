//! Every info-level span's wall time as a Prometheus histogram,
//! `hepdb_span_duration_seconds{span="<name>"}`: what an OpenTelemetry collector's span-metrics
//! connector derives from the traces, without needing one. `cargo xtask load` reads it to break
//! a create or a rotate down by step; operators read it to see which step slowed down.

use std::time::Instant;

use tracing::{Subscriber, span};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

pub struct SpanMetrics;

/// When the span was opened (its wall time includes the awaits inside it).
struct Opened(Instant);

impl<S> Layer<S> for SpanMetrics
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        metrics::histogram!("hepdb_span_duration_seconds", "span" => span.name())
            .record(opened.elapsed().as_secs_f64());
    }
}
