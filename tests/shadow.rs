//! Shadow traffic: sampled copies go to the shadow version, are recorded, and never slow the
//! caller down or reach it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{Latency, MockConfig, MockServer};

async fn live_and_shadow(shadow_latency: Duration, rate: f64) -> (MockServer, MockServer, Gateway) {
    let live = MockServer::start(MockConfig::default()).await.unwrap();
    let shadow = MockServer::start(MockConfig {
        latency: Latency::Fixed(shadow_latency),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  live:\n    type: openai\n    base_url: {}\n  next:\n    type: openai\n    base_url: {}\n\
         routes:\n  m:\n    versions:\n      live: {{provider: live}}\n      candidate: {{provider: next, upstream_model: next-model, shadow: {rate}}}\n",
        live.base_url(),
        shadow.base_url()
    );
    let gw = gateway(&yaml).await;
    (live, shadow, gw)
}

/// Waits until the shadow version has recorded `n` successful answers.
async fn shadow_recorded(gw: &Gateway, n: f64) {
    let series = "tollgate_requests_total{route=\"m\",version=\"candidate\",tenant=\"anonymous\",status_class=\"2xx\",error_type=\"\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    while sample(&metrics(gw).await, series) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shadow answers never recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_slow_shadow_does_not_slow_the_caller() {
    let (live, shadow, gw) = live_and_shadow(Duration::from_millis(1500), 1.0).await;
    for stream in [false, true, false] {
        let body = format!(
            r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let started = Instant::now();
        let (status, headers, text) = chat(&gw, &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["x-tollgate-route-version"], "live",
            "the caller gets the live answer"
        );
        assert!(text.contains("chat.completion"), "{text}");
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "shadow latency leaked: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(live.stats().requests(), 3);
    shadow_recorded(&gw, 3.0).await;
    let sent = shadow.stats().last_request().unwrap();
    assert_eq!(
        json(std::str::from_utf8(&sent.body).unwrap())["model"],
        "next-model"
    );
    // Tracing is off and the caller sent no trace: the copy makes none up.
    assert!(sent.headers.get("traceparent").is_none());
}

#[tokio::test]
async fn shadows_follow_their_sample_rate() {
    let (_live, shadow, gw) = live_and_shadow(Duration::ZERO, 0.5).await;
    let total = 200;
    for _ in 0..total {
        let (status, _, _) = chat(&gw, r#"{"model":"m","messages":[]}"#).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Settled: every copy the shadow upstream received has also been recorded.
    let series = "tollgate_requests_total{route=\"m\",version=\"candidate\",tenant=\"anonymous\",status_class=\"2xx\",error_type=\"\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    while sample(&metrics(&gw).await, series) != shadow.stats().requests() as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shadow copies never settled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let copies = shadow.stats().requests();
    // 100 expected; the standard deviation is about 7.1, so +-28 is four of them.
    assert!((72..=128).contains(&copies), "{copies} of {total}");
}

#[tokio::test]
async fn a_shadow_version_cannot_be_pinned() {
    let (_live, shadow, gw) = live_and_shadow(Duration::ZERO, 1.0).await;
    let (status, _, body) = chat(&gw, r#"{"model":"m@candidate","messages":[]}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&body, "version_not_found");
    assert_eq!(shadow.stats().requests(), 0, "refused before any copy");
}
