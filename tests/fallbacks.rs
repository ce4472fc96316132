//! Retries and fallbacks against faulty mock upstreams: each retryable failure moves to the
//! fallback, client errors do not, nothing is retried once the client has bytes, and
//! `retry-after` is honoured within the route's budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{Fault, Latency, MockConfig, MockServer};

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Route `m`: `primary` at `primary_url` takes all unpinned traffic, `backup` (the healthy
/// mock) only fallbacks.
async fn gateway_with_fallback(primary_url: &str, good: &MockServer, route_extra: &str) -> Gateway {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  bad:\n    type: openai\n    base_url: {primary_url}\n  good:\n    type: openai\n    base_url: {}\n\
         routes:\n  m:\n    versions:\n      primary: {{provider: bad, weight: 1, timeouts: {{first_token: 300ms}}}}\n      backup: {{provider: good, weight: 0}}\n\
         {route_extra}",
        good.base_url()
    );
    gateway(&yaml).await
}

const FALLBACK: &str = "    fallbacks: [backup]\n    retry: {backoff: 1ms, max_backoff: 50ms}\n";

async fn faulty(fault: Option<Fault>, latency: Duration) -> MockServer {
    MockServer::start(MockConfig {
        fault,
        latency: Latency::Fixed(latency),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn status(code: u16, body: Option<&str>) -> Option<Fault> {
    Some(Fault::Status {
        code,
        retry_after: None,
        body: body.map(str::to_owned),
    })
}

#[tokio::test]
async fn each_retryable_failure_moves_to_the_fallback() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", listener.local_addr().unwrap())
    };
    let cases: Vec<(&str, Option<Fault>, Duration)> = vec![
        ("429", status(429, None), Duration::ZERO),
        ("500", status(500, None), Duration::ZERO),
        ("502", status(502, None), Duration::ZERO),
        ("503", status(503, None), Duration::ZERO),
        ("504", status(504, None), Duration::ZERO),
        (
            "503 without a JSON body",
            status(503, Some("overloaded")),
            Duration::ZERO,
        ),
        ("first-token timeout", None, Duration::from_secs(5)),
    ];
    for (what, fault, latency) in cases {
        let bad = faulty(fault, latency).await;
        let good = faulty(None, Duration::ZERO).await;
        let gw = gateway_with_fallback(&bad.base_url(), &good, FALLBACK).await;
        let (code, headers, body) = chat(&gw, CHAT).await;
        assert_eq!(code, StatusCode::OK, "{what}: {body}");
        assert_eq!(headers["x-tollgate-route-version"], "backup", "{what}");
        assert_eq!(
            (bad.stats().requests(), good.stats().requests()),
            (1, 1),
            "{what}"
        );
        let text = metrics(&gw).await;
        assert_eq!(
            sample(
                &text,
                "tollgate_upstream_retries_total{route=\"m\",version=\"primary\"}"
            ),
            1.0,
            "{what}"
        );
    }
    // Nothing listens at all: a connect error.
    let good = faulty(None, Duration::ZERO).await;
    let gw = gateway_with_fallback(&closed, &good, FALLBACK).await;
    let (code, headers, _) = chat(&gw, CHAT).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers["x-tollgate-route-version"], "backup");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for code in [400, 404, 422] {
        let bad = faulty(status(code, None), Duration::ZERO).await;
        let good = faulty(None, Duration::ZERO).await;
        let gw = gateway_with_fallback(&bad.base_url(), &good, FALLBACK).await;
        let (got, headers, _) = chat(&gw, CHAT).await;
        assert_eq!(got.as_u16(), code);
        assert_eq!(headers["x-tollgate-route-version"], "primary");
        assert_eq!(good.stats().requests(), 0, "{code} is the caller's problem");
    }
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_bytes_is_not_retried() {
    let bad = faulty(Some(Fault::ResetAfter(2)), Duration::ZERO).await;
    let good = faulty(None, Duration::ZERO).await;
    let gw = gateway_with_fallback(&bad.base_url(), &good, FALLBACK).await;
    let (code, headers, body) = chat(&gw, STREAM).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers["x-tollgate-route-version"], "primary");
    let events = data_events(&body);
    assert!(events.len() >= 3, "{body}");
    assert!(
        events
            .last()
            .unwrap()
            .contains("upstream_stream_interrupted"),
        "{body}"
    );
    assert_eq!(good.stats().requests(), 0);
}

#[tokio::test]
async fn the_same_version_is_retried_up_to_the_budget() {
    let bad = faulty(status(503, None), Duration::ZERO).await;
    let good = faulty(None, Duration::ZERO).await;
    let retry = "    retry: {max_attempts: 3, backoff: 1ms, max_backoff: 50ms}\n";
    let gw = gateway_with_fallback(&bad.base_url(), &good, retry).await;
    let (code, _, _) = chat(&gw, CHAT).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(bad.stats().requests(), 3);
    assert_eq!(good.stats().requests(), 0);
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_is_not_waited_out() {
    let bad = faulty(
        Some(Fault::Status {
            code: 429,
            retry_after: Some(30),
            body: None,
        }),
        Duration::ZERO,
    )
    .await;
    let good = faulty(None, Duration::ZERO).await;
    let retry = "    retry: {max_attempts: 3, backoff: 1ms, max_backoff: 50ms}\n";
    let gw = gateway_with_fallback(&bad.base_url(), &good, retry).await;
    let started = std::time::Instant::now();
    let (code, headers, _) = chat(&gw, CHAT).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        headers["retry-after"], "30",
        "the caller learns when to come back"
    );
    assert_eq!(
        bad.stats().requests(),
        1,
        "asked to wait 30 s: no retry within a 50 ms budget"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // With a fallback, the other version answers at once.
    let gw = gateway_with_fallback(&bad.base_url(), &good, FALLBACK).await;
    let (code, headers, _) = chat(&gw, CHAT).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers["x-tollgate-route-version"], "backup");
}

#[tokio::test]
async fn a_pinned_version_is_never_replaced_by_a_fallback() {
    let bad = faulty(status(503, None), Duration::ZERO).await;
    let good = faulty(None, Duration::ZERO).await;
    let gw = gateway_with_fallback(&bad.base_url(), &good, FALLBACK).await;
    let (code, headers, _) = chat(&gw, r#"{"model":"m@primary","messages":[]}"#).await;
    assert_eq!(
        code,
        StatusCode::SERVICE_UNAVAILABLE,
        "the caller asked for primary's answer"
    );
    assert_eq!(headers["x-tollgate-route-version"], "primary");
    assert_eq!(good.stats().requests(), 0);
}
