//! Live state: one snapshot per request; a swapped snapshot affects only later requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use tollgate::config::Config;
use tollgate_mock::MockConfig;

#[tokio::test]
async fn in_flight_requests_keep_their_snapshot_across_a_swap() {
    let paced = MockConfig {
        tokens: 10,
        inter_token: Duration::from_millis(5),
        ..MockConfig::default()
    };
    let (mock, gw) = mock_and_gateway(paced).await;
    let old_version = gw.shared.live.load().version.clone();
    let mut body = open_stream(gw.api_addr, r#"{"model":"m","stream":true}"#).await;
    let first = next_chunk(&mut body).await.unwrap();
    assert!(first.starts_with(b"data: "));

    // Alias `m` now goes to the demo provider.
    let yaml = config(
        &mock.base_url(),
        "auth:\n  enabled: false\nroutes:\n  m:\n    provider: demo\n",
    );
    let snapshot = tollgate::snapshot::compile(
        &Config::from_yaml(&yaml).unwrap(),
        &yaml,
        &gw.shared.metrics,
    )
    .unwrap();
    assert_ne!(snapshot.version, old_version);
    gw.shared.live.store(Arc::new(snapshot));

    // The stream that began before the swap still comes from the mock, to its end.
    let rest: Vec<u8> = all_chunks(&mut body).await.concat();
    let text = String::from_utf8([first.to_vec(), rest].concat()).unwrap();
    assert!(text.contains("chatcmpl-mock-"), "{text}");
    assert_eq!(data_events(&text).len(), 11);

    // A new request sees the new snapshot.
    let (status, _, body) = chat(&gw, r#"{"model":"m"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        json(&body)["id"]
            .as_str()
            .unwrap()
            .starts_with("chatcmpl-demo-"),
        "{body}"
    );
    // Route series carry over: both requests count on the same `m` series.
    let metrics = metrics(&gw).await;
    assert_eq!(
        sample(
            &metrics,
            "tollgate_requests_total{route=\"m\",version=\"default\",tenant=\"anonymous\",status_class=\"2xx\",error_type=\"\"}"
        ),
        2.0
    );
    assert_eq!(mock.stats().requests(), 1);
}
