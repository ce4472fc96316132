//! Bad client input: each gets a clear OpenAI-format error and a metric, never a panic or hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_mock::MockConfig;

const SMALL_LIMITS: &str = "auth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n";

async fn small_gateway() -> (tollgate_mock::MockServer, tollgate::server::Gateway) {
    let mock = tollgate_mock::MockServer::start(MockConfig::default())
        .await
        .unwrap();
    let yaml = config(&mock.base_url(), SMALL_LIMITS).replace(
        "  header_read_timeout: 1s\n",
        "  header_read_timeout: 1s\n  max_body_bytes: 1024\n  body_read_timeout: 300ms\n  max_header_bytes: 16384\n",
    );
    (mock, gateway(&yaml).await)
}

#[tokio::test]
async fn each_kind_of_bad_body_gets_its_status_and_code() {
    let (mock, gw) = small_gateway().await;
    let cases: [(&str, &str, StatusCode, &str); 7] = [
        (
            "/v1/chat/completions",
            "{not json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/v1/chat/completions",
            "[1]",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[]}"#,
            StatusCode::BAD_REQUEST,
            "missing_model",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":42}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"nope"}"#,
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"m","model":"m"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "/v1/nothing",
            r#"{"model":"m"}"#,
            StatusCode::NOT_FOUND,
            "unknown_url",
        ),
    ];
    let client_errors = cases.len() + 5;
    for (path, body, status, code) in cases {
        let (got, headers, text) = call(gw.api_addr, post(path, body, &[])).await;
        assert_eq!(got, status, "{body}: {text}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-tollgate-error-source"], "client");
        assert_openai_error(&text, code);
    }
    let deep = format!(
        r#"{{"model":"m","x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let (got, _, text) = call(gw.api_addr, post("/v1/chat/completions", &deep, &[])).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert_openai_error(&text, "malformed_json");

    let mut invalid_utf8 = post("/v1/chat/completions", "", &[]);
    *invalid_utf8.body_mut() =
        http_body_util::Full::new(bytes::Bytes::from_static(b"{\"model\":\"\xff\"}"));
    let (got, _, text) = call(gw.api_addr, invalid_utf8).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert_openai_error(&text, "malformed_json");

    let (got, _, text) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"m"}"#,
            &[("content-type", "text/plain")],
        ),
    )
    .await;
    assert_eq!(got, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_openai_error(&text, "unsupported_media_type");

    let (got, _, text) = call(gw.api_addr, get("/v1/chat/completions", &[])).await;
    assert_eq!(got, StatusCode::METHOD_NOT_ALLOWED);
    assert_openai_error(&text, "method_not_allowed");

    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(2048));
    let (got, _, text) = call(gw.api_addr, post("/v1/chat/completions", &big, &[])).await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&text, "body_too_large");

    assert_eq!(
        mock.stats().requests(),
        0,
        "no bad request reached the upstream"
    );
    let metrics = metrics(&gw).await;
    assert_eq!(
        sample(
            &metrics,
            "tollgate_request_errors_total{code=\"malformed_json\",fault=\"client\"}"
        ),
        4.0
    );
    // Every case above (and the five after them) is a client error that found no route.
    assert_eq!(
        sum_where(
            &metrics,
            "tollgate_requests_total",
            &[("route", ""), ("status_class", "4xx")]
        ),
        client_errors as f64
    );
    assert_eq!(
        sum_where(
            &metrics,
            "tollgate_requests_total",
            &[("status_class", "2xx")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_requests_total{route=\"\",version=\"\",tenant=\"anonymous\",status_class=\"4xx\",error_type=\"body_too_large\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let (_mock, gw) = small_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    let chunk = "x".repeat(800);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (_mock, gw) = small_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    let request = format!(
        "GET /v1/models HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[tokio::test]
async fn slow_header_client_is_cut_off() {
    let (_mock, gw) = small_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off by the 1 s header timeout"
    );
}

#[tokio::test]
async fn slow_body_client_gets_408() {
    let (_mock, gw) = small_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("body_read_timeout"), "{answer:?}");
}
