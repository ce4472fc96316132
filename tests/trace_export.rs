//! Span export when the collector misbehaves: slow, absent, refusing, or back after an
//! outage. Spans are dropped and counted; requests are never held; a collector that keeps
//! failing gets probes instead of spans until it answers, and then spans again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::otlp::*;
use common::*;
use http::StatusCode;

#[tokio::test]
async fn a_slow_collector_drops_spans_and_never_holds_requests() {
    // The collector takes a minute to answer each export; the queue holds one request.
    let Some(receiver) = Receiver::start(&["--delay-ms", "60000"]) else {
        return;
    };
    let (_upstream, gw) = traced_gateway(
        &tracing_section(
            &receiver.grpc,
            "grpc",
            "  queue_size: 1\n  max_batch_spans: 4\n",
        )
        .replace("timeout: 2s", "timeout: 120s"),
        "",
    )
    .await;
    for _ in 0..20 {
        let (status, _, _) = chat(&gw, r#"{"model":"m"}"#).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Every request was answered while the first export is still waiting on the collector.
    let text = metrics(&gw).await;
    assert!(
        sample(
            &text,
            "tollgate_trace_spans_dropped_total{reason=\"queue_full\"}"
        ) > 0.0,
        "{text}"
    );
    assert_eq!(sample(&text, "tollgate_trace_spans_exported_total"), 0.0);
    drop(receiver);
}

#[tokio::test]
async fn an_absent_collector_costs_spans_not_requests() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_upstream, gw) =
        traced_gateway(&tracing_section(&endpoint, "http/protobuf", ""), "").await;
    for _ in 0..5 {
        let (status, _, _) = chat(&gw, r#"{"model":"m"}"#).await;
        assert_eq!(status, StatusCode::OK);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics(&gw).await;
        let failed = sample(
            &text,
            "tollgate_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if failed >= 20.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drops not counted: {text}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn spans_still_queued_at_shutdown_are_sent_before_the_gateway_stops() {
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    // Nothing would be exported for a minute: only the shutdown can send these spans.
    let (_upstream, gw) = traced_gateway(
        &tracing_section(&receiver.http, "http/protobuf", "")
            .replace("export_interval: 20ms", "export_interval: 60s"),
        "",
    )
    .await;
    let parent = traceparent(INBOUND_TRACE, INBOUND_PARENT, "01");
    chat_ok(&gw, r#"{"model":"m"}"#, &[("traceparent", &parent)]).await;
    let metrics = gw.shared.metrics.clone();
    // The exporter is woken by the shutdown, not left to its minute-long interval.
    tokio::time::timeout(WAIT, gw.shutdown())
        .await
        .expect("shutdown in time");
    let spans = receiver.spans_of(INBOUND_TRACE, 4);
    assert!(spans.iter().any(|s| s["kind"] == "SERVER"));
    assert_eq!(
        metrics
            .traces
            .exported
            .load(std::sync::atomic::Ordering::Relaxed),
        4,
        "sent and acknowledged before the gateway stopped"
    );
}

/// The next line the receiver prints for an export call (`{"export": ..., "spans": N}`).
fn next_export(receiver: &Receiver) -> serde_json::Value {
    loop {
        let line = receiver
            .lines
            .recv_timeout(WAIT)
            .expect("an export in time");
        if line.get("export").is_some() {
            return line;
        }
    }
}

/// Waits until the gateway has counted `n` spans dropped for failed exports.
async fn export_failed_drops(gw: &tollgate::server::Gateway, n: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics(gw).await;
        let dropped = sample(
            &text,
            "tollgate_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if dropped >= n {
            assert_eq!(dropped, n, "{text}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_collector_that_keeps_refusing_gets_probes_instead_of_spans() {
    // Every export is answered 503; the receiver still prints each call.
    let Some(receiver) = Receiver::start(&["--http-status", "503"]) else {
        return;
    };
    let (_upstream, gw) =
        traced_gateway(&tracing_section(&receiver.http, "http/protobuf", ""), "").await;
    // One request per export call: three calls carry spans and are refused...
    for refused in 1..=3 {
        chat_ok(&gw, r#"{"model":"m"}"#, &[]).await;
        assert_eq!(next_export(&receiver)["spans"], 4);
        export_failed_drops(&gw, 4.0 * f64::from(refused)).await;
    }
    // ...then the collector counts as down: requests' spans are dropped at once, and the
    // exporter only probes it with empty exports.
    for later in 1..=5 {
        chat_ok(&gw, r#"{"model":"m"}"#, &[]).await;
        export_failed_drops(&gw, 12.0 + 4.0 * f64::from(later)).await;
    }
    for _ in 0..5 {
        assert_eq!(next_export(&receiver)["spans"], 0);
    }
    let text = metrics(&gw).await;
    assert_eq!(sample(&text, "tollgate_trace_spans_exported_total"), 0.0);
}

#[tokio::test]
async fn a_collector_that_comes_back_gets_spans_again() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap();
    drop(port);
    let (_upstream, gw) = traced_gateway(
        &tracing_section(&format!("http://{addr}"), "http/protobuf", ""),
        "",
    )
    .await;
    // Three refused calls, one request each: the collector counts as down.
    for refused in 1..=3 {
        chat_ok(&gw, r#"{"model":"m"}"#, &[]).await;
        export_failed_drops(&gw, 4.0 * f64::from(refused)).await;
    }
    // The collector comes up on that address; a probe finds it and spans flow again.
    let Some(receiver) = Receiver::start(&["--http", &addr.to_string()]) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        chat_ok(&gw, r#"{"model":"m"}"#, &[]).await;
        if let Ok(line) = receiver
            .lines
            .recv_timeout(std::time::Duration::from_millis(100))
            && line.get("trace_id").is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span after the collector came back"
        );
    }
    assert!(exported_at_least(&gw.shared.metrics, 4).await >= 4);
}
