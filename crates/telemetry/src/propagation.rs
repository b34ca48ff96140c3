//! W3C trace context in and out of message headers, so that one create is one trace across
//! the gateway, the broker and the worker. Only strings cross this boundary: callers put them
//! in HTTP or AMQP headers without depending on OpenTelemetry themselves.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The headers that carry a trace context.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The trace context of `span` as header pairs (`traceparent`, and `tracestate` when it has
/// one). Empty when traces are not exported.
pub fn trace_context(span: &tracing::Span) -> Vec<(&'static str, String)> {
    struct Collect(Vec<(&'static str, String)>);
    impl Injector for Collect {
        fn set(&mut self, key: &str, value: String) {
            let known = TRACE_HEADERS.into_iter().find(|h| *h == key);
            if let Some(known) = known.filter(|_| !value.is_empty()) {
                self.0.push((known, value));
            }
        }
    }
    let mut out = Collect(Vec::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    out.0
}

/// Makes `span` (not yet entered) a child of the trace context that `header` finds, so work
/// another process started continues its trace. Without a valid context nothing changes.
pub fn continue_trace<'a>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'a str>) {
    struct Found<'a>([Option<&'a str>; 2]);
    impl Extractor for Found<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            let i = TRACE_HEADERS
                .iter()
                .position(|h| key.eq_ignore_ascii_case(h))?;
            self.0[i]
        }
        fn keys(&self) -> Vec<&str> {
            TRACE_HEADERS.to_vec()
        }
    }
    let found = Found(TRACE_HEADERS.map(&header));
    if found.0[0].is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&found);
    // Only fails for a span already entered, which callers do not pass.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_exporter_means_no_headers_and_no_panic() {
        let span = tracing::info_span!("job");
        assert!(trace_context(&span).is_empty());
        continue_trace(&span, |h| {
            (h == "traceparent")
                .then_some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        });
        continue_trace(&span, |_| Some("garbage"));
    }

    #[test]
    fn a_context_survives_the_trip_through_headers() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::prelude::*;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let publish = tracing::info_span!("publish");
            let sent = trace_context(&publish);
            assert_eq!(sent.len(), 1, "{sent:?}");
            let (name, parent) = &sent[0];
            assert_eq!(*name, "traceparent");
            let parts: Vec<_> = parent.split('-').collect();
            assert_eq!(
                (parts.len(), parts[0], parts[3]),
                (4, "00", "01"),
                "{parent}"
            );

            let job = tracing::info_span!("job");
            continue_trace(&job, |h| (h == "traceparent").then_some(parent.as_str()));
            let received = trace_context(&job);
            let child: Vec<_> = received[0].1.split('-').collect();
            assert_eq!(child[1], parts[1], "same trace");
            assert_ne!(child[2], parts[2], "a span of its own");
        });
    }
}
