//! Recording a finished request's metrics takes no allocation (and, by construction, no
//! lock: relaxed atomic adds on handles the snapshot resolved). Counted with a counting
//! global allocator, on this thread only, in a test binary of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use tollgate::config::Config;
use tollgate::error::ErrorKind;
use tollgate::exchange::Exchange;
use tollgate::telemetry::access_log::record_metrics;
use tollgate::telemetry::metrics::{Metrics, Operation};
use tollgate::telemetry::trace::TraceContext;
use tollgate::upstream::openai_view::Usage;
use tollgate::upstream::stats::ExchangeStats;

const YAML: &str = "auth:\n  enabled: false\nproviders:\n  up:\n    type: openai\n    base_url: http://127.0.0.1:9/v1\nroutes:\n  m:\n    provider: up\n";

#[test]
fn recording_request_metrics_does_not_allocate() {
    let config = Config::from_yaml(YAML).unwrap();
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(tollgate::snapshot::compile(&config, YAML, &metrics).unwrap());
    let routed = Exchange::traced(
        Method::POST,
        "/v1/chat/completions",
        TraceContext::from_headers(&HeaderMap::new(), 0.0),
        None,
    );
    routed.snapshot.set(snapshot.clone()).unwrap();
    routed.tenant.set(snapshot.anonymous.clone()).unwrap();
    routed.route.set(snapshot.routes["m"].clone()).unwrap();
    routed.operation.set(Operation::Chat).unwrap();
    routed.start_attempt(0);
    let unrouted = Exchange::new(Method::POST, "/v1/chat/completions");
    let stream = ExchangeStats {
        stream: true,
        ttft: Some(Duration::from_millis(50)),
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 20,
            total_tokens: 30,
            ..Usage::default()
        }),
        ..ExchangeStats::default()
    };
    let failed = ExchangeStats {
        error: Some(ErrorKind::UpstreamTimeout),
        ..ExchangeStats::default()
    };
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            record_metrics(&routed, &metrics, 200, &stream, Duration::from_millis(500));
            record_metrics(&routed, &metrics, 504, &failed, Duration::from_secs(30));
            record_metrics(&unrouted, &metrics, 401, &failed, Duration::from_micros(20));
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    // And it recorded: the counters moved.
    let text = metrics.encode();
    assert!(
        text.contains("status_class=\"2xx\",error_type=\"\"} 100\n"),
        "{text}"
    );
    assert!(
        text.contains("error_type=\"upstream_timeout\"} 100\n"),
        "{text}"
    );
}

/// A sampled request: its steps and attempt recorded, its answer's id and model kept, its
/// spans encoded into the export queue. Once the queue's buffers have grown (the first
/// batches), none of it allocates.
#[test]
fn recording_and_encoding_a_sampled_request_does_not_allocate() {
    use tollgate::telemetry::trace::{StepKind, Tracer, lock_shard};
    use tollgate::upstream::openai_view::AnswerView;

    let yaml = format!(
        "{YAML}tracing:\n  otlp:\n    endpoint: http://127.0.0.1:9\n  sampling_ratio: 1.0\n"
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(tollgate::snapshot::compile(&config, &yaml, &metrics).unwrap());
    let (tracer, _exporter) = Tracer::new(config.tracing.as_ref().unwrap(), 1, metrics).unwrap();
    let answer = br#"{"id":"chatcmpl-9a8b7c6d5e","model":"llama-3.1-8b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
    let view = AnswerView::parse(answer).unwrap();
    const REQUESTS: usize = 200;
    let exchanges: Vec<Exchange> = (0..2 * REQUESTS)
        .map(|_| {
            let exchange = Exchange::traced(
                Method::POST,
                "/v1/chat/completions",
                tracer.context(&HeaderMap::new()),
                Some(&tracer),
            );
            exchange.snapshot.set(snapshot.clone()).unwrap();
            exchange.tenant.set(snapshot.anonymous.clone()).unwrap();
            exchange.route.set(snapshot.routes["m"].clone()).unwrap();
            exchange.operation.set(Operation::Chat).unwrap();
            exchange
        })
        .collect();
    let mut stats: Vec<ExchangeStats> = exchanges
        .iter()
        .map(|exchange| ExchangeStats::for_exchange(exchange, false))
        .collect();
    let run = |exchange: &Exchange, stats: &mut ExchangeStats| {
        exchange.step(StepKind::Auth, 0, false);
        exchange.step(StepKind::Route, 100, false);
        exchange.start_attempt(0);
        exchange.attempt_endpoint(0);
        stats.capture_from(&view);
        stats.upstream_status = Some(200);
        tollgate::telemetry::access_log::submit_spans(exchange, 200, stats, true);
    };
    // The first half grows the queue's buffers; emptied, they keep their capacity.
    for (exchange, stats) in exchanges[..REQUESTS].iter().zip(&mut stats[..REQUESTS]) {
        run(exchange, stats);
    }
    let shard_bytes = lock_shard(&tracer.shards()[0]).bytes.len();
    assert!(shard_bytes > 1000 * REQUESTS, "{shard_bytes}");
    lock_shard(&tracer.shards()[0]).clear();
    let info = allocation_counter::measure(|| {
        for (exchange, stats) in exchanges[REQUESTS..].iter().zip(&mut stats[REQUESTS..]) {
            run(exchange, stats);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    // And it recorded: every request's four spans are queued, ids included.
    let shard = lock_shard(&tracer.shards()[0]);
    assert_eq!(shard.spans, 4 * REQUESTS);
    assert_eq!(shard.bytes.len(), shard_bytes);
    let id = b"chatcmpl-9a8b7c6d5e";
    assert_eq!(
        shard.bytes.windows(id.len()).filter(|w| w == id).count(),
        REQUESTS
    );
}
