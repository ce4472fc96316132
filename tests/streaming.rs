//! Streaming through the tee: event-by-event forwarding, usage handling, faults mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tollgate_mock::{Fault, LineEnding, MockConfig};

const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM_USAGE: &str =
    r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;

fn paced(tokens: usize, gap_ms: u64) -> MockConfig {
    MockConfig {
        tokens,
        inter_token: Duration::from_millis(gap_ms),
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn each_upstream_event_reaches_the_client_as_its_own_chunk() {
    let (_mock, gw) = mock_and_gateway(paced(32, 5)).await;
    let response = send(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.into_body();
    let chunks = all_chunks(&mut body).await;
    // 32 content events arrive 5 ms apart: each must come on its own, not coalesced. The
    // usage chunk (not asked for by the client) is gone; [DONE] follows the last content.
    let events: Vec<String> = chunks
        .iter()
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let content_chunks = events
        .iter()
        .filter(|e| e.contains("chat.completion.chunk"))
        .count();
    assert_eq!(content_chunks, 32);
    for event in &events[..31] {
        assert_eq!(
            data_events(event).len(),
            1,
            "one event per chunk: {event:?}"
        );
    }
    let all = events.concat();
    assert!(all.ends_with("data: [DONE]\n\n"));
    assert!(
        !all.contains("\"usage\""),
        "usage chunk must be stripped: {all}"
    );
    streams_drained(&gw).await;
}

#[tokio::test]
async fn usage_is_requested_upstream_and_kept_only_when_the_client_asked() {
    let (mock, gw) = mock_and_gateway(paced(3, 0)).await;
    let (_, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    let upstream = json(std::str::from_utf8(&mock.stats().last_request().unwrap().body).unwrap());
    assert_eq!(
        upstream["stream_options"]["include_usage"], true,
        "gateway asks for usage"
    );
    assert!(!body.contains("\"usage\""));
    assert_eq!(data_events(&body).len(), 4); // 3 content + [DONE]

    let (_, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM_USAGE, &[])).await;
    let events = data_events(&body);
    assert_eq!(events.len(), 5); // 3 content + usage + [DONE]
    let usage = json(events[3]);
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 3);

    let metrics = metrics(&gw).await;
    let output = [
        ("route", "m"),
        ("version", "default"),
        ("gen_ai_token_type", "output"),
    ];
    assert_eq!(
        sum_where(&metrics, "gen_ai_client_token_usage_sum", &output),
        6.0
    );
    assert_eq!(
        sum_where(&metrics, "gen_ai_client_token_usage_count", &output),
        2.0
    );
    // Both streams ran to the end with three tokens: two time-per-token observations.
    assert_eq!(
        sum_where(
            &metrics,
            "gen_ai_server_time_per_output_token_count",
            &[("route", "m")]
        ),
        2.0
    );
}

#[tokio::test]
async fn lf_crlf_cr_and_comment_lines_pass_through_verbatim() {
    for (ending, sep) in [
        (LineEnding::Lf, "\n"),
        (LineEnding::CrLf, "\r\n"),
        (LineEnding::Cr, "\r"),
    ] {
        let config = MockConfig {
            tokens: 4,
            line_ending: ending,
            keepalive_comments: true,
            ..MockConfig::default()
        };
        let (_mock, gw) = mock_and_gateway(config).await;
        let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
        assert_eq!(status, StatusCode::OK);
        let events: Vec<&str> = body
            .split(&format!("{sep}{sep}"))
            .filter(|e| !e.is_empty())
            .collect();
        assert!(
            events.iter().any(|e| e.starts_with(": keep-alive")),
            "{ending:?}: comments kept"
        );
        let data: Vec<&&str> = events.iter().filter(|e| e.starts_with("data: ")).collect();
        assert_eq!(
            data.len(),
            5,
            "{ending:?}: 4 content events + [DONE], usage stripped: {body:?}"
        );
        assert_eq!(*data[4], "data: [DONE]");
    }
}

#[tokio::test]
async fn upstream_error_event_is_forwarded_and_ends_the_stream() {
    let config = MockConfig {
        tokens: 5,
        fault: Some(Fault::ErrorAfter(2)),
        ..MockConfig::default()
    };
    let (_mock, gw) = mock_and_gateway(config).await;
    let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    assert_eq!(status, StatusCode::OK);
    let events = data_events(&body);
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(json(events[2])["error"]["code"], "mock_error");
    let metrics = metrics(&gw).await;
    assert_eq!(
        sample(
            &metrics,
            "tollgate_request_errors_total{code=\"upstream_stream_interrupted\",fault=\"upstream\"}"
        ),
        1.0
    );
}

/// Faults that end a stream after it began: the client gets a terminal error event.
#[tokio::test]
async fn broken_streams_end_with_a_terminal_error_event() {
    let cases = [
        (Fault::ResetAfter(2), "upstream_stream_interrupted"),
        (Fault::TruncateAfter(2), "upstream_stream_truncated"),
        (Fault::Malformed, "upstream_bad_response"),
    ];
    for (fault, code) in cases {
        let config = MockConfig {
            tokens: 5,
            fault: Some(fault.clone()),
            ..MockConfig::default()
        };
        let (_mock, gw) = mock_and_gateway(config).await;
        let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
        assert_eq!(status, StatusCode::OK, "{fault:?}");
        let events = data_events(&body);
        let last = events
            .last()
            .unwrap_or_else(|| panic!("{fault:?}: no events in {body:?}"));
        assert_openai_error(last, code);
        assert!(
            !events.contains(&"[DONE]"),
            "{fault:?}: must not look like success: {body}"
        );
        let metrics = metrics(&gw).await;
        assert_eq!(
            sample(
                &metrics,
                &format!("tollgate_request_errors_total{{code=\"{code}\",fault=\"upstream\"}}")
            ),
            1.0,
            "{fault:?}"
        );
        streams_drained(&gw).await;
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let config = MockConfig {
        tokens: 5,
        fault: Some(Fault::StallAfter(1)),
        ..MockConfig::default()
    };
    let (mock, gw) = mock_and_gateway(config).await;
    let mut body = open_stream(gw.api_addr, STREAM).await;
    let first = next_chunk(&mut body).await.unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body); // the client goes away mid-stream
    tokio::time::timeout(WAIT, mock.stats().wait_streams_cancelled(1))
        .await
        .expect("upstream saw the close");
    streams_drained(&gw).await;
}

const FAST_TIMEOUTS: &str = "auth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n    timeouts: {first_token: 300ms, idle: 300ms, total: 5s}\n";

#[tokio::test]
async fn slow_first_token_gives_504_in_openai_format() {
    let config = MockConfig {
        fault: Some(Fault::SlowHeaders(Duration::from_secs(3))),
        ..MockConfig::default()
    };
    let (_mock, gw) = mock_and_gateway_with(config, FAST_TIMEOUTS).await;
    let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_openai_error(&body, "upstream_timeout");
    let (status, _, _) = chat(&gw, r#"{"model":"m"}"#).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn stall_mid_stream_ends_with_a_timeout_event_and_releases_upstream() {
    let config = MockConfig {
        tokens: 5,
        fault: Some(Fault::StallAfter(2)),
        ..MockConfig::default()
    };
    let (mock, gw) = mock_and_gateway_with(config, FAST_TIMEOUTS).await;
    let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    assert_eq!(status, StatusCode::OK);
    let events = data_events(&body);
    assert_eq!(events.len(), 3, "{body}");
    assert_openai_error(events[2], "upstream_timeout");
    tokio::time::timeout(WAIT, mock.stats().wait_streams_cancelled(1))
        .await
        .expect("upstream released");
}

#[tokio::test]
async fn streaming_request_answered_without_sse_is_a_bad_gateway() {
    let config = MockConfig {
        fault: Some(Fault::WrongContentType),
        ..MockConfig::default()
    };
    let (_mock, gw) = mock_and_gateway(config).await;
    let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_openai_error(&body, "upstream_bad_response");
}

#[tokio::test]
async fn demo_streams_through_the_same_tee() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let (status, headers, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"d","stream":true}"#,
            &[],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-accel-buffering"], "no");
    let events = data_events(&body);
    assert_eq!(events.len(), 7, "5 words + finish + [DONE]: {body}");
    assert!(!body.contains("\"usage\""));
    let (_, _, body) = call(
        gw.api_addr,
        post(
            "/v1/completions",
            r#"{"model":"d","prompt":"x","stream":true,"stream_options":{"include_usage":true}}"#,
            &[],
        ),
    )
    .await;
    let events = data_events(&body);
    assert_eq!(
        json(events[events.len() - 2])["usage"]["completion_tokens"],
        5
    );
}

#[tokio::test]
async fn total_timeout_cuts_a_stream_that_keeps_going() {
    let config = paced(200, 10);
    let routes = "auth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n    timeouts: {first_token: 5s, idle: 5s, total: 300ms}\n";
    let (mock, gw) = mock_and_gateway_with(config, routes).await;
    let (status, _, body) = call(gw.api_addr, post("/v1/chat/completions", STREAM, &[])).await;
    assert_eq!(status, StatusCode::OK);
    let events = data_events(&body);
    assert!(
        events.len() < 100,
        "cut well before the 200 events: {}",
        events.len()
    );
    assert_openai_error(events.last().unwrap(), "upstream_timeout");
    tokio::time::timeout(WAIT, mock.stats().wait_streams_cancelled(1))
        .await
        .expect("upstream released");
}

#[tokio::test]
async fn demo_honours_its_ttft_and_token_cadence() {
    let mock = tollgate_mock::MockServer::start(MockConfig::default())
        .await
        .unwrap();
    let yaml = config(&mock.base_url(), OPEN_ROUTES).replace(
        "    ttft: 0ms\n    inter_token: 0ms\n",
        "    ttft: 120ms\n    inter_token: 30ms\n",
    );
    let gw = gateway(&yaml).await;
    let started = std::time::Instant::now();
    let response = send(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"d","stream":true}"#,
            &[],
        ),
    )
    .await;
    let mut body = response.into_body();
    next_chunk(&mut body).await.unwrap();
    let ttft = started.elapsed();
    assert!(
        ttft >= Duration::from_millis(120),
        "first token after the configured TTFT: {ttft:?}"
    );
    let mut arrivals = vec![std::time::Instant::now()];
    while next_chunk(&mut body).await.is_some() {
        arrivals.push(std::time::Instant::now());
    }
    // 5 words (4 gaps of at least the cadence), then the finish/usage/[DONE] event.
    assert_eq!(arrivals.len(), 6);
    for pair in arrivals[..5].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(25),
            "cadence kept: {:?}",
            pair[1] - pair[0]
        );
    }
}
