//! Criterion benches of telemetry on the request path: recording a finished request's metrics
//! (lock-free, allocation-free: see tests/hot_path_allocations.rs), recording a sampled
//! request's spans, reading trace context, and encoding a request's spans for OTLP export.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use tollgate::config::Config;
use tollgate::exchange::Exchange;
use tollgate::telemetry::access_log::record_metrics;
use tollgate::telemetry::metrics::{Metrics, Operation};
use tollgate::telemetry::trace::{AnswerFacts, Finished, StepKind, TraceContext, Tracer, spans};
use tollgate::upstream::openai_view::Usage;
use tollgate::upstream::stats::ExchangeStats;

const YAML: &str = "auth:\n  enabled: false\nproviders:\n  up:\n    type: openai\n    base_url: http://127.0.0.1:9/v1\nroutes:\n  m:\n    versions:\n      stable: {provider: up, weight: 9}\n      canary: {provider: up, upstream_model: next, weight: 1}\ntracing:\n  otlp:\n    endpoint: http://127.0.0.1:9\n";

/// An exchange that went through auth and routing to version 0 of route `m`.
fn routed_exchange(
    snapshot: &Arc<tollgate::snapshot::Snapshot>,
    tracer: Option<&Arc<Tracer>>,
    trace: TraceContext,
) -> Exchange {
    let exchange = Exchange::traced(Method::POST, "/v1/chat/completions", trace, tracer);
    exchange.snapshot.set(snapshot.clone()).unwrap();
    exchange.tenant.set(snapshot.anonymous.clone()).unwrap();
    exchange.route.set(snapshot.routes["m"].clone()).unwrap();
    exchange.operation.set(Operation::Chat).unwrap();
    exchange
}

fn stream_stats() -> ExchangeStats {
    ExchangeStats {
        stream: true,
        upstream_status: Some(200),
        ttft: Some(Duration::from_millis(80)),
        events: 64,
        usage: Some(Usage {
            prompt_tokens: 120,
            completion_tokens: 64,
            total_tokens: 184,
            ..Usage::default()
        }),
        ..ExchangeStats::default()
    }
}

fn telemetry(c: &mut Criterion) {
    let config = Config::from_yaml(YAML).unwrap();
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(tollgate::snapshot::compile(&config, YAML, &metrics).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let (tracer, exporter) =
        Tracer::new(config.tracing.as_ref().unwrap(), 1, metrics.clone()).unwrap();
    let mut group = c.benchmark_group("telemetry");

    let exchange = routed_exchange(
        &snapshot,
        None,
        TraceContext::from_headers(&HeaderMap::new(), 0.0),
    );
    exchange.start_attempt(0);
    let stats = stream_stats();
    group.bench_function("record_request_metrics", |b| {
        b.iter(|| {
            record_metrics(
                black_box(&exchange),
                &metrics,
                200,
                &stats,
                Duration::from_millis(900),
            )
        })
    });

    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    headers.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    group.bench_function("trace_context_from_headers", |b| {
        b.iter(|| TraceContext::from_headers(black_box(&headers), 1.0))
    });

    // What a sampled request adds on its own thread: the span log, two steps, one attempt,
    // the upstream traceparent, handing the log over.
    group.bench_function("record_sampled_request_spans", |b| {
        b.iter(|| {
            let trace = tracer.context(&headers);
            let exchange = routed_exchange(&snapshot, Some(&tracer), trace);
            exchange.step(StepKind::Auth, 0, true);
            exchange.step(StepKind::Route, 10, false);
            exchange.start_attempt(0);
            exchange.attempt_endpoint(0);
            black_box(exchange.upstream_traceparent());
            black_box(exchange.take_spans().map(|(log, _)| log))
        })
    });

    // What encoding a request's four spans costs (on its own thread, as it ends), with every
    // attribute of a streamed answer.
    let exchange = routed_exchange(&snapshot, Some(&tracer), tracer.context(&headers));
    exchange.step(StepKind::Auth, 1_000, true);
    exchange.step(StepKind::Route, 12_000, false);
    exchange.start_attempt(0);
    exchange.attempt_endpoint(0);
    let (log, _) = exchange.take_spans().unwrap();
    let reason = tollgate::upstream::openai_view::FinishReason::Stop;
    let finished = Finished {
        exchange: &exchange,
        spans: &log,
        answer: AnswerFacts {
            status: 200,
            upstream_status: Some(200),
            stream: true,
            ttft: Some(Duration::from_millis(80)),
            usage: stream_stats().usage,
            finish_reason: Some(&reason),
            response_id: Some("chatcmpl-9a8b7c6d5e"),
            response_model: Some("m"),
            completed: true,
            ..AnswerFacts::default()
        },
        end: 900_000_000,
    };
    let mut out = Vec::with_capacity(8192);
    group.bench_function("encode_request_spans", |b| {
        b.iter(|| {
            out.clear();
            spans::encode(&mut out, 2, black_box(&finished));
            black_box(out.len())
        })
    });
    group.finish();
    drop((tracer, exporter));
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
