//! Injected faults, driven by the `x-mock-fault` header or the server config.

// Test helpers outside #[test] fns are not covered by clippy.toml's test allowances;
// failing loudly is exactly what they should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{data_events, json, post, send, send_h2, text};
use http_body_util::BodyExt;
use tokio::time::timeout;
use tollgate_mock::{Fault, MockConfig, MockServer};

const STREAM: &str =
    r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
const UNARY: &str = r#"{"model":"m","messages":[]}"#;
const BOUND: Duration = Duration::from_secs(5);

async fn server() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

fn fault(spec: &str) -> [(&str, &str); 2] {
    [("x-mock-fault", spec), ("x-mock-tokens", "4")]
}

#[tokio::test]
async fn status_faults() {
    let server = server().await;
    let response = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &fault("status=503")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/json");
    let v = json(&text(response).await);
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("503"));

    let response = send(
        server.addr(),
        post(
            "/v1/chat/completions",
            STREAM,
            &fault("status=429;retry-after=7"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        json(&text(response).await)["error"]["code"],
        "rate_limit_exceeded"
    );

    let response = send(
        server.addr(),
        post(
            "/v1/chat/completions",
            UNARY,
            &fault("status=502;body=<html>bad gateway</html>"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(text(response).await, "<html>bad gateway</html>");
    // Error responses are not streams.
    assert_eq!(
        server.stats().streams_cancelled() + server.stats().streams_completed(),
        0
    );
}

#[tokio::test]
async fn config_fault_and_header_opt_out() {
    let config = MockConfig {
        fault: Some(Fault::Status {
            code: 500,
            retry_after: None,
            body: None,
        }),
        ..MockConfig::default()
    };
    let server = MockServer::start(config).await.unwrap();
    let failed = send(server.addr(), post("/v1/chat/completions", UNARY, &[]))
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    let ok = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &[("x-mock-fault", "none")]),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = send(
        server.addr(),
        post(
            "/v1/chat/completions",
            UNARY,
            &[("x-mock-fault", "explode")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn truncate_after_ends_cleanly_without_done() {
    let server = server().await;
    let response = send(
        server.addr(),
        post("/v1/chat/completions", STREAM, &fault("truncate-after=2")),
    )
    .await
    .unwrap();
    let body = text(response).await;
    let events = data_events(&body);
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| json(e)["choices"][0]["delta"]["content"].is_string())
    );
    assert!(!body.contains("[DONE]") && !body.contains("usage"));
    timeout(BOUND, server.stats().wait_streams_completed(1))
        .await
        .unwrap();

    let unary = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &fault("truncate-after=2")),
    )
    .await
    .unwrap();
    assert_eq!(unary.status(), 200);
    assert!(serde_json::from_str::<serde_json::Value>(&text(unary).await).is_err());
}

#[tokio::test]
async fn error_after_sends_error_event() {
    let server = server().await;
    let response = send(
        server.addr(),
        post("/v1/chat/completions", STREAM, &fault("error-after=1")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body = text(response).await;
    let events = data_events(&body);
    assert_eq!(events.len(), 2);
    assert!(json(events[0])["choices"].is_array());
    let error = json(events[1]);
    assert_eq!(error["error"]["message"], "mock mid-stream failure");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["code"], "mock_error");
    assert!(!body.contains("[DONE]"));

    let unary = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &fault("error-after=1")),
    )
    .await
    .unwrap();
    assert_eq!(unary.status(), 500);
}

/// Reads frames until the body fails; returns what arrived before, or `None` if it ended cleanly.
async fn read_until_error(response: http::Response<hyper::body::Incoming>) -> Option<String> {
    let mut body = response.into_body();
    let mut seen = Vec::new();
    loop {
        match timeout(BOUND, body.frame()).await.unwrap() {
            Some(Ok(frame)) => seen.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Some(Err(_)) => return Some(String::from_utf8(seen).unwrap()),
            None => return None,
        }
    }
}

#[tokio::test]
async fn reset_after_fails_the_body_read() {
    let server = server().await;
    for h2 in [false, true] {
        let req = post("/v1/chat/completions", STREAM, &fault("reset-after=2"));
        let response = if h2 {
            send_h2(server.addr(), req).await
        } else {
            send(server.addr(), req).await
        }
        .unwrap();
        assert_eq!(response.status(), 200);
        let seen = read_until_error(response).await.expect("body should fail");
        assert_eq!(data_events(&seen).len(), 2, "h2={h2}: {seen:?}");
    }
    for (path, body) in [
        ("/v1/chat/completions", UNARY),
        ("/v1/embeddings", r#"{"input":"x"}"#),
    ] {
        let response = send(server.addr(), post(path, body, &fault("reset-after=2")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(read_until_error(response).await.is_some(), "{path}");
    }
    // An injected reset is the server's doing, not a client cancel.
    assert_eq!(server.stats().streams_cancelled(), 0);
}

#[tokio::test]
async fn reset_before_headers_has_no_response() {
    let server = server().await;
    assert!(
        send(
            server.addr(),
            post(
                "/v1/chat/completions",
                STREAM,
                &fault("reset-before-headers")
            )
        )
        .await
        .is_err()
    );
    assert!(
        send_h2(
            server.addr(),
            post(
                "/v1/chat/completions",
                UNARY,
                &fault("reset-before-headers")
            )
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn stalled_stream_counts_cancel_on_disconnect() {
    let server = server().await;
    for send_fn in [false, true] {
        let req = post("/v1/chat/completions", STREAM, &fault("stall-after=1"));
        let response = if send_fn {
            send_h2(server.addr(), req).await
        } else {
            send(server.addr(), req).await
        }
        .unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.starts_with(b"data: {"));
        // Nothing more arrives while the stream is stalled.
        assert!(
            timeout(Duration::from_millis(100), body.frame())
                .await
                .is_err()
        );
        assert_eq!(server.stats().streams_cancelled(), u64::from(send_fn));
        drop(body);
    }
    // Dropping the body closes the client connection; hyper then drops the server body.
    timeout(BOUND, server.stats().wait_streams_cancelled(2))
        .await
        .unwrap();
    assert_eq!(server.stats().streams_completed(), 0);
}

#[tokio::test]
async fn stalled_unary_sends_headers_only() {
    let server = server().await;
    let response = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &fault("stall-after=0")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        timeout(Duration::from_millis(100), response.into_body().collect())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn malformed_and_wrong_content_type() {
    let server = server().await;
    let unary = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &fault("malformed")),
    )
    .await
    .unwrap();
    assert_eq!(unary.status(), 200);
    assert!(serde_json::from_str::<serde_json::Value>(&text(unary).await).is_err());

    let body = text(
        send(
            server.addr(),
            post("/v1/chat/completions", STREAM, &fault("malformed")),
        )
        .await
        .unwrap(),
    )
    .await;
    let events = data_events(&body);
    assert_eq!(events.len(), 4 + 2);
    assert!(serde_json::from_str::<serde_json::Value>(events[0]).is_err());
    assert!(
        events[1..5]
            .iter()
            .all(|e| serde_json::from_str::<serde_json::Value>(e).is_ok())
    );

    let wrong = send(
        server.addr(),
        post("/v1/chat/completions", STREAM, &fault("wrong-content-type")),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), 200);
    assert_eq!(wrong.headers()["content-type"], "text/plain");
    assert!(!text(wrong).await.contains("data:"));
}

#[tokio::test]
async fn slow_headers_delays_response() {
    let server = server().await;
    let started = Instant::now();
    let response = send(
        server.addr(),
        post("/v1/chat/completions", UNARY, &fault("slow-headers=80")),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(80));
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn shutdown_and_drop_end_connections() {
    let server = server().await;
    let addr = server.addr();
    let stats = server.stats().clone();
    let response = send(
        addr,
        post("/v1/chat/completions", STREAM, &fault("stall-after=1")),
    )
    .await
    .unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    timeout(BOUND, server.shutdown()).await.unwrap();
    // The stalled connection was closed by the server and its stream counted.
    assert_eq!(stats.streams_cancelled(), 1);
    assert!(timeout(BOUND, body.collect()).await.unwrap().is_err());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let dropped = MockServer::start(MockConfig::default()).await.unwrap();
    let stats = dropped.stats().clone();
    let response = send(
        dropped.addr(),
        post("/v1/chat/completions", STREAM, &fault("stall-after=0")),
    )
    .await
    .unwrap();
    drop(dropped);
    timeout(BOUND, stats.wait_streams_cancelled(1))
        .await
        .unwrap();
    assert!(
        timeout(BOUND, response.into_body().collect())
            .await
            .unwrap()
            .is_err()
    );
}
