//! Token budgets and requests in flight end to end: the estimate reserved before the call,
//! trued up to the upstream's usage after it (whole answers, streams, streams cut short by the
//! upstream or the client), requests too large for a budget, input and output budgets, the
//! output reservation cap, and `concurrent` held until a stream ends.
//!
//! The demo provider reports 1 prompt token for [`chat_body`] (one word) and
//! `min(max_tokens, 5)` completion tokens; the gateway estimates [`INPUT_ESTIMATE`] input tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::limits::*;
use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

/// Auth off; providers `mock`, `demo` (5 tokens at once) and `slow` (20 tokens, 200 ms apart);
/// then `rest` (routes, rate_limits).
async fn start(rest: &str) -> (MockServer, Gateway) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  header_read_timeout: 1s\nadmin:\n  listen: 127.0.0.1:0\n\
         auth:\n  enabled: false\nproviders:\n  mock:\n    type: openai\n    base_url: {}\n  \
         demo:\n    type: demo\n    ttft: 0ms\n    inter_token: 0ms\n    tokens: 5\n  \
         slow:\n    type: demo\n    ttft: 0ms\n    inter_token: 200ms\n    tokens: 20\n{rest}",
        mock.base_url()
    );
    let gw = gateway(&yaml).await;
    (mock, gw)
}

/// Sends a chat request and returns the response head, the body left unread.
async fn head(gw: &Gateway, body: &str) -> (http::HeaderMap, hyper::body::Incoming) {
    let response = send(gw.api_addr, post("/v1/chat/completions", body, &[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (parts, body) = response.into_parts();
    (parts.headers, body)
}

fn assert_too_large(status: StatusCode, headers: &http::HeaderMap, body: &str, of: &str) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error = assert_openai_error(body, "rate_limit_exceeded");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("too large") && message.contains(of),
        "{message}"
    );
    assert!(
        !headers.contains_key("retry-after"),
        "waiting never helps: {headers:?}"
    );
}

#[tokio::test]
async fn the_estimate_is_reserved_then_trued_up_to_the_usage() {
    let routes = "routes:\n  d:\n    provider: demo\n    \
                  limits: {tokens_per_day: 1000, requests_per_minute: 100}\n";
    let (_mock, gw) = start(routes).await;
    let max_200 = chat_body("d", r#","max_tokens":200"#);
    let reserved = INPUT_ESTIMATE + 200;
    // Reserved before the call: the input estimate and all 200 output tokens.
    let (status, headers, body) = chat(&gw, &max_200).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - reserved));
    assert_eq!(standing(&headers, "requests"), (100, 99));
    // A day's 1000 tokens: each takes 86.4 s of the window.
    let reset = reset(&headers, "tokens").as_secs_f64();
    assert!((reset - reserved as f64 * 86.4).abs() < 5.0, "{reset}");
    let usage = &json(&body)["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(1), Some(5))
    );
    let used = 6;
    // After the answer only its true usage stays charged: the next reservation shows it.
    let (_, headers, _) = chat(&gw, &max_200).await;
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - used - reserved));
    assert_eq!(standing(&headers, "requests"), (100, 98));
    // A stream too: trued up when it ends.
    let (headers, mut stream) =
        head(&gw, &chat_body("d", r#","max_tokens":200,"stream":true"#)).await;
    assert_eq!(
        standing(&headers, "tokens"),
        (1000, 1000 - 2 * used - reserved)
    );
    let text: Vec<u8> = all_chunks(&mut stream).await.concat();
    assert!(
        String::from_utf8(text)
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );
    let (_, headers, _) = chat(&gw, &max_200).await;
    assert_eq!(
        standing(&headers, "tokens"),
        (1000, 1000 - 3 * used - reserved)
    );

    // More than the whole day's budget at once: refused without waiting, nothing taken.
    let (status, headers, body) = chat(&gw, &chat_body("d", r#","max_tokens":995"#)).await;
    assert_too_large(status, &headers, &body, "tokens_per_day of route:d");
    let (_, headers, _) = chat(&gw, &max_200).await;
    assert_eq!(
        standing(&headers, "tokens"),
        (1000, 1000 - 4 * used - reserved)
    );
    assert_eq!(standing(&headers, "requests"), (100, 95));
    let text = metrics(&gw).await;
    assert_eq!(
        sample(
            &text,
            "tollgate_ratelimit_rejections_total{limit=\"route:d\",rule=\"tokens_per_day\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn input_budgets_count_input_tokens_only() {
    let (_mock, gw) =
        start("routes:\n  i:\n    provider: demo\n    limits: {input_tokens_per_hour: 40}\n").await;
    // A large max_tokens costs this budget nothing.
    let body = chat_body("i", r#","max_tokens":1000"#);
    let (status, headers, text) = chat(&gw, &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(standing(&headers, "tokens"), (40, 40 - INPUT_ESTIMATE));
    // The demo counted 1 prompt token: the rest of the estimate came back.
    let (_, headers, _) = chat(&gw, &body).await;
    assert_eq!(standing(&headers, "tokens"), (40, 40 - 1 - INPUT_ESTIMATE));
    // 160 characters: 40 tokens of text and 7 of format, more than the hour allows.
    let long = format!(
        r#"{{"model":"i","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "abcd".repeat(40)
    );
    let (status, headers, text) = chat(&gw, &long).await;
    assert_too_large(status, &headers, &text, "input_tokens_per_hour of route:i");
    let (_, headers, _) = chat(&gw, &body).await;
    assert_eq!(standing(&headers, "tokens"), (40, 40 - 2 - INPUT_ESTIMATE));
}

#[tokio::test]
async fn output_budgets_count_output_tokens_reserved_up_to_the_cap() {
    let rest = "rate_limits:\n  max_output_reservation: 30\n\
                routes:\n  o:\n    provider: demo\n    limits: {output_tokens_per_hour: 100}\n";
    let (_mock, gw) = start(rest).await;
    // max_tokens 60 reserves only the cap, 30; the demo answers 5.
    let (status, headers, text) = chat(&gw, &chat_body("o", r#","max_tokens":60"#)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(standing(&headers, "tokens"), (100, 70));
    // No max_tokens: the cap; the 25 unused of the first came back.
    let (_, headers, _) = chat(&gw, &chat_body("o", "")).await;
    assert_eq!(standing(&headers, "tokens"), (100, 100 - 5 - 30));
    // A smaller max_tokens reserves just that; the demo answers 3.
    let (_, headers, _) = chat(&gw, &chat_body("o", r#","max_tokens":3"#)).await;
    assert_eq!(standing(&headers, "tokens"), (100, 100 - 10 - 3));
    // Input, however long, costs this budget nothing.
    let long = format!(
        r#"{{"model":"o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "abcd".repeat(200)
    );
    let (status, headers, text) = chat(&gw, &long).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(standing(&headers, "tokens"), (100, 100 - 13 - 30));
}

/// Reads a stream until it has carried `n` data events (frames may join or split events).
async fn read_events(body: &mut hyper::body::Incoming, n: usize) {
    let mut text = String::new();
    while text.matches("data: ").count() < n {
        let chunk = next_chunk(body).await.expect("the stream ended early");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn a_stream_cut_short_is_charged_what_it_produced() {
    let routes = "routes:\n  cut:\n    limits: {tokens_per_day: 1000}\n    versions:\n      \
                  v: {provider: mock, headers: {x-mock-fault: \"reset-after=3\"}}\n  \
                  hang:\n    limits: {tokens_per_day: 1000}\n    versions:\n      \
                  v: {provider: mock, headers: {x-mock-fault: \"stall-after=2\"}}\n";
    let (mock, gw) = start(routes).await;
    let reserved = INPUT_ESTIMATE + 100;
    // The upstream breaks off after 3 tokens: the input estimate and those 3 are charged.
    let stream = chat_body("cut", r#","max_tokens":100,"stream":true"#);
    let (status, headers, body) = chat(&gw, &stream).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - reserved));
    let events = data_events(&body);
    assert_eq!(events.len(), 4, "{body}");
    assert!(events[3].contains("upstream_stream_interrupted"), "{body}");
    let (_, headers, _) = chat(&gw, &stream).await;
    assert_eq!(
        standing(&headers, "tokens"),
        (1000, 1000 - (INPUT_ESTIMATE + 3) - reserved)
    );

    // The client goes away after 2 tokens: those 2 are charged.
    let stream = chat_body("hang", r#","max_tokens":100,"stream":true"#);
    let (headers, mut body) = head(&gw, &stream).await;
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - reserved));
    read_events(&mut body, 2).await;
    drop(body);
    tokio::time::timeout(WAIT, mock.stats().wait_streams_cancelled(1))
        .await
        .expect("the upstream saw the client leave");
    recorded(&gw, &[("route", "hang")], 1.0).await;
    let (headers, body) = head(&gw, &stream).await;
    assert_eq!(
        standing(&headers, "tokens"),
        (1000, 1000 - (INPUT_ESTIMATE + 2) - reserved)
    );
    drop(body);
}

#[tokio::test]
async fn a_place_in_flight_is_held_until_the_stream_ends() {
    let (_mock, gw) =
        start("routes:\n  c:\n    provider: slow\n    limits: {concurrent: 2}\n").await;
    // `short` ends 200 ms after its first token; `long` streams for about 4 s.
    let short = chat_body("c", r#","max_tokens":2,"stream":true"#);
    let long = chat_body("c", r#","stream":true"#);
    let (headers, mut a) = head(&gw, &short).await;
    assert_no_ratelimit_headers(&headers);
    next_chunk(&mut a).await.unwrap();
    let (_, mut b) = head(&gw, &long).await;
    next_chunk(&mut b).await.unwrap();
    // Two streams open: a third must wait.
    let (status, headers, body) = chat(&gw, &long).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error = assert_openai_error(&body, "rate_limit_exceeded");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent of route:c"),
        "{body}"
    );
    assert_eq!(retry_after(&headers), 1);
    assert_no_ratelimit_headers(&headers);
    // `a` ends: its place is free again while `b` still streams.
    all_chunks(&mut a).await;
    let (_, mut d) = head(&gw, &long).await;
    next_chunk(&mut d).await.unwrap();
    let (status, _, _) = chat(&gw, &long).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "b and d hold both places"
    );
    // Clients that go away give their places back too.
    drop((b, d));
    recorded(&gw, &[("route", "c"), ("status_class", "2xx")], 3.0).await;
    let (_, mut e) = head(&gw, &short).await;
    let (_, mut f) = head(&gw, &short).await;
    all_chunks(&mut e).await;
    all_chunks(&mut f).await;
    let text = metrics(&gw).await;
    assert_eq!(
        sample(
            &text,
            "tollgate_ratelimit_rejections_total{limit=\"route:c\",rule=\"concurrent\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn other_surfaces_reserve_what_they_may_produce() {
    let routes = "routes:\n  d:\n    provider: demo\n    limits: {tokens_per_day: 1000}\n  \
                  e:\n    provider: mock\n    limits: {tokens_per_day: 1000}\n";
    let (_mock, gw) = start(routes).await;
    // Gemini's maxOutputTokens is the reservation; "Say hello" is 3 tokens of text and 7 of
    // format. The demo counts 2 prompt words and answers 5 tokens.
    let path = "/v1/publishers/google/models/d:generateContent";
    let native = r#"{"contents":[{"role":"user","parts":[{"text":"Say hello"}]}],"generationConfig":{"maxOutputTokens":40}}"#;
    let (status, headers, body) = call(gw.api_addr, post(path, native, &[])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - 50));
    let (_, headers, _) = call(gw.api_addr, post(path, native, &[])).await;
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - 7 - 50));
    // Embeddings produce no output: only the input (8 characters, 2 tokens) is reserved, then
    // trued up to the prompt tokens the upstream reports.
    let embed = r#"{"model":"e","input":"abcdefgh"}"#;
    let (status, headers, body) = call(gw.api_addr, post("/v1/embeddings", embed, &[])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(standing(&headers, "tokens"), (1000, 998));
    let used = json(&body)["usage"]["prompt_tokens"].as_u64().unwrap();
    let (_, headers, _) = call(gw.api_addr, post("/v1/embeddings", embed, &[])).await;
    assert_eq!(standing(&headers, "tokens"), (1000, 1000 - used - 2));
}

#[tokio::test]
async fn a_call_that_fails_before_answering_costs_no_tokens() {
    let routes = "routes:\n  f:\n    limits: {tokens_per_day: 1000}\n    retry: {max_attempts: 1}\n    versions:\n      \
                  v: {provider: mock, headers: {x-mock-fault: \"status=503\"}}\n";
    let (_mock, gw) = start(routes).await;
    let body = chat_body("f", r#","max_tokens":100"#);
    for _ in 0..2 {
        let (status, headers, _) = chat(&gw, &body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            standing(&headers, "tokens"),
            (1000, 1000 - INPUT_ESTIMATE - 100)
        );
    }
}
