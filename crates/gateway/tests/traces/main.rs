//! OpenTelemetry end to end: the gateway (in this process) and a `hepdb-worker` process both
//! export over OTLP/HTTP to a collector this test runs, and one create arrives as one trace:
//! HTTP -> metadata -> publish -> consume -> engine DDL -> reply. A caller's `traceparent` is
//! continued, and no secret is in any span.
//!
//! Its own test binary, because the tracing subscriber is global to a process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use hepdb_core::settings::{LogFormat, TelemetrySettings};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::span::SpanKind,
};
use prost::Message;
use serde_json::json;

use hepdb_testkit::*;

/// A span as the collector received it, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
    /// Every string the span carries: attributes and event attributes and names.
    text: Vec<String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), string(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP collector on a free port: decodes every export and keeps the spans.
async fn collector() -> (String, Spans) {
    let spans = Spans::default();
    let sink = spans.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let sink = sink.clone();
                async move {
                    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
                        return HttpResponse::BadRequest().finish();
                    };
                    let mut sink = sink.lock().unwrap();
                    for resource in export.resource_spans {
                        let service = resource
                            .resource
                            .as_ref()
                            .map(|r| attributes(&r.attributes))
                            .and_then(|a| a.get("service.name").cloned())
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            let attributes = attributes(&span.attributes);
                            let mut text: Vec<String> = attributes.values().cloned().collect();
                            for event in &span.events {
                                text.push(event.name.clone());
                                text.extend(event.attributes.iter().map(|kv| string(&kv.value)));
                            }
                            sink.push(Received {
                                service: service.clone(),
                                kind: span.kind(),
                                name: span.name,
                                trace: hex(&span.trace_id),
                                id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                attributes,
                                text,
                            });
                        }
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), spans)
}

/// The spans of `trace`, once `done` holds for them (spans arrive in batches, per process).
async fn wait_for_trace(
    spans: &Spans,
    trace: &str,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let found: Vec<Received> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        if done(&found) {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "trace {trace} never completed; got {:#?}",
            found
                .iter()
                .map(|s| (&s.service, &s.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn named<'a>(spans: &'a [Received], service: &str, name: &str) -> Option<&'a Received> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

/// Whether `ancestor` is on the parent chain of `span`.
fn descends(spans: &[Received], span: &Received, ancestor: &Received) -> bool {
    let mut at = span;
    for _ in 0..spans.len() {
        if at.parent == ancestor.id {
            return true;
        }
        match spans.iter().find(|s| s.id == at.parent) {
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_create_is_one_trace_across_gateway_broker_and_worker() {
    let (endpoint, spans) = collector().await;
    let telemetry = hepdb_telemetry::init(
        &TelemetrySettings {
            log_format: LogFormat::Compact,
            log_filter: "info".into(),
            otlp_endpoint: Some(endpoint.clone()),
            trace_sample_ratio: 1.0,
        },
        "hepdb-gateway",
    );
    assert!(telemetry.exports_traces());
    let app = spawn_app_with(
        Options {
            no_worker: true,
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let worker = WorkerProcess::start_with(
        &app,
        &[
            ("HEPDB__TELEMETRY__OTLP_ENDPOINT", &endpoint),
            // The worker logs at `warn` only (WorkerProcess); its spans are exported all the
            // same, in batches every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert!(worker.wait_ready(Duration::from_secs(30)).await);
    let queue = hepdb_queue::Topology::from_settings(&app.settings.amqp).jobs_queue();

    // A create without a caller trace: the gateway starts one.
    let res = app
        .client
        .post(format!("{}/api/v1/db/databases", app.address))
        .bearer_auth(&app.key)
        .json(&json!({ "name": "traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = res.json().await.unwrap();
    let password = body["data"]["password"].as_str().unwrap().to_owned();
    telemetry.flush();

    let server = {
        let started = Instant::now();
        loop {
            let found = spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| {
                    s.kind == SpanKind::Server
                        && s.attributes.get("request_id") == Some(&request_id)
                })
                .cloned();
            if let Some(found) = found {
                break found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no server span"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(server.service, "hepdb-gateway");
    assert_eq!(server.name, "POST /api/v1/db/databases");
    assert_eq!(server.attributes["http.response.status_code"], "201");
    assert!(server.parent.is_empty(), "a root span: {}", server.parent);

    let process = format!("{queue} process");
    let trace = wait_for_trace(&spans, &server.trace, |s| {
        named(s, "hepdb-worker", "reply publish").is_some()
            && named(s, "hepdb-worker", &process).is_some()
            && named(s, "hepdb-worker", "mariadb create").is_some()
    })
    .await;
    let publish =
        named(&trace, "hepdb-gateway", &format!("{queue} publish")).expect("a publish span");
    let reserve =
        named(&trace, "hepdb-gateway", "metadata.reserve_create").expect("a metadata span");
    let consume = named(&trace, "hepdb-worker", &process).unwrap();
    let ddl = named(&trace, "hepdb-worker", "mariadb create").unwrap();
    let claim = named(&trace, "hepdb-worker", "metadata.claim_job").expect("worker metadata");
    let reply = named(&trace, "hepdb-worker", "reply publish").unwrap();

    assert_eq!(publish.kind, SpanKind::Producer);
    assert_eq!(consume.kind, SpanKind::Consumer);
    assert_eq!(ddl.kind, SpanKind::Client);
    assert_eq!(reply.kind, SpanKind::Producer);
    for (span, ancestor) in [
        (reserve, &server),
        (publish, &server),
        (consume, publish),
        (claim, consume),
        (ddl, consume),
        (reply, consume),
    ] {
        assert!(
            descends(&trace, span, ancestor),
            "{} should descend from {}",
            span.name,
            ancestor.name
        );
    }
    assert_eq!(consume.parent, publish.id, "the job continues the publish");
    assert_eq!(consume.attributes["request_id"], request_id);

    // A rotate inside a caller's trace continues it.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let id = body["data"]["id"].as_str().unwrap();
    let res = app
        .client
        .post(format!("{}/api/v1/db/databases/{id}/rotate", app.address))
        .bearer_auth(&app.key)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rotated: serde_json::Value = res.json().await.unwrap();
    let new_password = rotated["data"]["password"].as_str().unwrap().to_owned();
    telemetry.flush();
    let trace = wait_for_trace(&spans, caller_trace, |s| {
        named(s, "hepdb-worker", "mariadb rotate").is_some()
            && named(s, "hepdb-gateway", "POST /api/v1/db/databases/{id}/rotate").is_some()
    })
    .await;
    let server = named(
        &trace,
        "hepdb-gateway",
        "POST /api/v1/db/databases/{id}/rotate",
    )
    .unwrap();
    assert_eq!(server.parent, caller_span);

    // Each step's duration is also a histogram on both processes' /metrics, by span name:
    // every span `cargo xtask load` breaks a create down with (hepdb-load's `steps::aligned`).
    let gateway = format!("{}/metrics", app.metrics_address);
    let worker_metrics = format!("http://127.0.0.1:{}/metrics", worker.admin_port());
    let wanted = [
        (&gateway, "request"),
        (&gateway, "metadata.find_key"),
        (&gateway, "metadata.reserve_create"),
        (&gateway, "metadata.audit"),
        (&worker_metrics, "metadata.claim_job"),
        (&worker_metrics, "metadata.hold"),
        (&worker_metrics, "metadata.run_locked"),
        (&worker_metrics, "engine"),
        // The background passes (a fresh worker runs both at once), which hepdb-load waits
        // for before it measures.
        (&worker_metrics, "reconcile.pass"),
        (&worker_metrics, "quota.pass"),
    ];
    for (url, span) in wanted {
        let text = reqwest::get(url.as_str())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let want = format!("hepdb_span_duration_seconds_count{{span=\"{span}\"}}");
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(count >= Some(1.0), "{url}: no {want}");
    }

    // Nothing secret in any span of the run.
    let all = spans.lock().unwrap().clone();
    for secret in [&password, &new_password, &app.key] {
        for span in &all {
            assert!(
                !span.text.iter().any(|t| t.contains(secret.as_str())),
                "a secret in span {} of {}",
                span.name,
                span.service
            );
        }
    }
    telemetry.shutdown();
}
