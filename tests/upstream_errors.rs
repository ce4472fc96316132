//! Upstream failures before the answer starts: passed through when they are the upstream's
//! answer, otherwise a clean gateway error that says the upstream was at fault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate_mock::{Fault, MockConfig};

const CHAT: &str = r#"{"model":"m","messages":[]}"#;
const STREAM: &str = r#"{"model":"m","stream":true,"messages":[]}"#;

fn faulty(fault: Fault) -> MockConfig {
    MockConfig {
        fault: Some(fault),
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn json_error_answers_pass_through_with_their_status() {
    let (_mock, gw) = mock_and_gateway(faulty("status=503".parse().unwrap())).await;
    for body in [CHAT, STREAM] {
        let (status, headers, text) = chat(&gw, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert_eq!(headers["x-tollgate-error-source"], "upstream");
        assert_eq!(
            json(&text)["error"]["type"],
            "server_error",
            "the mock's own body"
        );
    }
    let metrics = metrics(&gw).await;
    assert_eq!(
        sample(
            &metrics,
            "tollgate_requests_total{route=\"m\",version=\"default\",tenant=\"anonymous\",status_class=\"5xx\",error_type=\"upstream_error_status\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn rate_limited_upstream_keeps_429_and_retry_after() {
    let (_mock, gw) = mock_and_gateway(faulty("status=429;retry-after=7".parse().unwrap())).await;
    let (status, headers, text) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(headers["retry-after"], "7");

    let (_mock, gw) = mock_and_gateway(faulty(
        "status=429;retry-after=3;body=slow down".parse().unwrap(),
    ))
    .await;
    let (status, headers, text) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "3");
    assert_openai_error(&text, "upstream_rate_limited");
}

#[tokio::test]
async fn non_json_error_bodies_become_gateway_errors() {
    let (_mock, gw) =
        mock_and_gateway(faulty("status=500;body=<html>oops</html>".parse().unwrap())).await;
    let (status, headers, text) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-tollgate-error-source"], "upstream");
    let error = assert_openai_error(&text, "upstream_bad_response");
    assert!(error["error"]["message"].as_str().unwrap().contains("500"));
}

#[tokio::test]
async fn broken_non_stream_answers_are_bad_gateway() {
    for fault in [
        Fault::Malformed,
        Fault::TruncateAfter(1),
        Fault::ResetBeforeHeaders,
        Fault::ResetAfter(1),
    ] {
        let (_mock, gw) = mock_and_gateway(faulty(fault.clone())).await;
        let (status, _, text) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{fault:?}: {text}");
        let code = json(&text)["error"]["code"].as_str().unwrap().to_owned();
        assert!(code.starts_with("upstream_"), "{fault:?}: {code}");
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502_naming_no_address() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let gw = gateway(&config(&format!("http://127.0.0.1:{port}/v1"), OPEN_ROUTES)).await;
    let (status, _, text) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = assert_openai_error(&text, "upstream_unreachable");
    assert!(
        !error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&port.to_string())
    );
}

#[tokio::test]
async fn oversized_upstream_answer_is_refused() {
    let mock = tollgate_mock::MockServer::start(MockConfig {
        tokens: 4000,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let yaml = config(&mock.base_url(), OPEN_ROUTES).replace(
        "  header_read_timeout: 1s\n",
        "  header_read_timeout: 1s\n  max_response_bytes: 4096\n",
    );
    let gw = gateway(&yaml).await;
    let (status, _, text) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_openai_error(&text, "upstream_response_too_large");
}
