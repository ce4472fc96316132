//! Several replicas behind one provider: the less loaded one wins, a failing one is ejected
//! and comes back, and when all are out the error says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{Latency, MockConfig, MockServer};

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// A loopback address nothing listens on (yet).
fn closed_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn replicas(urls: &[String], provider_extra: &str, route_extra: &str) -> Gateway {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  p:\n    type: openai\n    endpoints: [{}]\n{provider_extra}\
         routes:\n  m:\n    provider: p\n{route_extra}",
        list.join(", ")
    );
    gateway(&yaml).await
}

fn ejected_series(addr: &str) -> String {
    format!("tollgate_endpoint_ejected{{provider=\"p\",endpoint=\"{addr}\"}}")
}

fn authority(mock: &MockServer) -> String {
    mock.base_url()
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned()
}

#[tokio::test]
async fn a_failing_replica_is_ejected_and_the_others_take_the_traffic() {
    let bad = mock_failing_with(503).await;
    let good = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = replicas(
        &[bad.base_url(), good.base_url()],
        "    ejection: {consecutive_failures: 1, base: 30s, max: 60s}\n",
        "    retry: {max_attempts: 2, backoff: 1ms, max_backoff: 5ms}\n",
    )
    .await;
    for _ in 0..30 {
        let (status, _, body) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(bad.stats().requests(), 1, "its failure ejects it for 30 s");
    assert_eq!(good.stats().requests(), 30);
    let text = metrics(&gw).await;
    assert_eq!(sample(&text, &ejected_series(&authority(&bad))), 1.0);
    assert_eq!(sample(&text, &ejected_series(&authority(&good))), 0.0);
}

#[tokio::test]
async fn an_ejected_replica_comes_back_after_its_period() {
    let revived = closed_addr();
    let good = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = replicas(
        &[format!("http://{revived}/v1"), good.base_url()],
        "    connect_timeout: 1s\n    ejection: {consecutive_failures: 1, base: 300ms, max: 300ms}\n",
        "    retry: {max_attempts: 3, backoff: 1ms, max_backoff: 5ms}\n",
    )
    .await;
    // Until the dead replica has been tried once, it may be picked; then it is out.
    let series = ejected_series(&revived.to_string());
    let deadline = tokio::time::Instant::now() + WAIT;
    while sample(&metrics(&gw).await, &series) < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never ejected");
        let (status, _, _) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK);
    }
    let back = MockServer::start_on(revived, MockConfig::default())
        .await
        .unwrap();
    // Its period runs out (the gauge says so), and then it takes requests again.
    while sample(&metrics(&gw).await, &series) > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..50 {
        let (status, _, _) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK);
        if back.stats().requests() > 0 {
            return;
        }
    }
    panic!("the revived replica got no traffic in 50 requests");
}

#[tokio::test]
async fn the_less_loaded_replica_takes_most_of_the_traffic() {
    // 250 ms, far above what the fast replica takes even when parallel tests load the
    // machine: a scheduling stall of tens of ms on the fast one must not pass for load.
    let slow = MockServer::start(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(250)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let fast = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = replicas(&[slow.base_url(), fast.base_url()], "", "").await;
    for _ in 0..40 {
        let (status, _, _) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        slow.stats().requests() <= 4,
        "slow got {} of 40",
        slow.stats().requests()
    );
}

#[tokio::test]
async fn when_every_replica_is_ejected_one_is_still_tried_and_the_error_says_so() {
    let (a, b) = (closed_addr(), closed_addr());
    let gw = replicas(
        &[format!("http://{a}/v1"), format!("http://{b}/v1")],
        "    ejection: {consecutive_failures: 1, base: 30s, max: 60s}\n",
        "",
    )
    .await;
    let mut messages = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        messages.push(
            assert_openai_error(&body, "upstream_unreachable")["error"]["message"].to_string(),
        );
    }
    assert!(!messages[0].contains("every endpoint"), "{messages:?}");
    assert!(
        messages[2].contains("every endpoint of provider `p` is ejected"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn check_refuses_ambiguous_endpoint_lists() {
    let two = "http://127.0.0.1:1/v1";
    let err = start_error(&format!(
        "auth:\n  enabled: false\nproviders:\n  p:\n    type: openai\n    endpoints: [\"{two}\", \"{two}\"]\nroutes:\n  m:\n    provider: p\n"
    ))
    .await;
    assert!(
        err.contains("providers.p.endpoints[1]") && err.contains("listed twice"),
        "{err}"
    );
    let err = start_error(&format!(
        "auth:\n  enabled: false\nproviders:\n  p:\n    type: openai\n    base_url: {two}\n    endpoints: [\"{two}\"]\nroutes:\n  m:\n    provider: p\n"
    ))
    .await;
    assert!(err.contains("providers.p.endpoints"), "{err}");
    let err = start_error(
        "auth:\n  enabled: false\nproviders:\n  p:\n    type: openai\n    endpoints: [\"http://user:secret@127.0.0.1:1/v1\"]\nroutes:\n  m:\n    provider: p\n",
    )
    .await;
    assert!(
        err.contains("must not carry credentials") && !err.contains("secret"),
        "{err}"
    );
}
