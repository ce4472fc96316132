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
