//! The OpenAI surfaces without faults: shapes, counts, line endings, timing.

// Test helpers outside #[test] fns are not covered by clippy.toml's test allowances;
// failing loudly is exactly what they should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{data_events, get, json, post, send, send_h2, text};
use tollgate_mock::{LineEnding, MockConfig, MockServer};

const CHAT: &str = r#"{"model":"m-1","messages":[{"role":"user","content":"hi"}]}"#;

async fn server() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

#[tokio::test]
async fn non_stream_chat_shape_and_usage() {
    let server = server().await;
    let response = send(server.addr(), post("/v1/chat/completions", CHAT, &[]))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let v = json(&text(response).await);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 0);
    assert_eq!(v["model"], "m-1");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.split_whitespace().count(), 16);
    let usage = &v["usage"];
    assert_eq!(usage["completion_tokens"], 16);
    assert_eq!(usage["prompt_tokens"], (CHAT.len() / 4) as u64);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + 16
    );

    let recorded = server.stats().last_request().unwrap();
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path_and_query, "/v1/chat/completions");
    assert_eq!(&recorded.body[..], CHAT.as_bytes());
    assert_eq!(server.stats().requests(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn max_tokens_caps_with_length() {
    let server = server().await;
    let body = r#"{"model":"m","messages":[],"max_tokens":3}"#;
    let v = json(
        &text(
            send(server.addr(), post("/v1/chat/completions", body, &[]))
                .await
                .unwrap(),
        )
        .await,
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["message"]["content"], "the mock model ");
}

#[tokio::test]
async fn stream_event_counts() {
    let server = server().await;
    for include_usage in [false, true] {
        let body = format!(
            r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":{include_usage}}},"messages":[]}}"#
        );
        let response = send(
            server.addr(),
            post("/v1/chat/completions", &body, &[("x-mock-tokens", "5")]),
        )
        .await
        .unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body_text = text(response).await;
        let events = data_events(&body_text);
        assert_eq!(events.len(), 5 + usize::from(include_usage) + 1);
        assert_eq!(*events.last().unwrap(), "[DONE]");
        let mut joined = String::new();
        for (i, event) in events[..5].iter().enumerate() {
            let v = json(event);
            assert_eq!(v["object"], "chat.completion.chunk");
            assert_eq!(v["model"], "m");
            joined.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap());
            assert_eq!(v["choices"][0]["delta"].get("role").is_some(), i == 0);
            let finish = &v["choices"][0]["finish_reason"];
            if i == 4 {
                assert_eq!(finish, "stop")
            } else {
                assert!(finish.is_null())
            }
        }
        assert_eq!(joined.split_whitespace().count(), 5);
        if include_usage {
            let usage = json(events[5]);
            assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
            assert_eq!(usage["usage"]["completion_tokens"], 5);
            assert_eq!(usage["usage"]["prompt_tokens"], (body.len() / 4) as u64);
        }
    }
    server.stats().wait_streams_completed(2).await;
    assert_eq!(server.stats().streams_cancelled(), 0);
}

#[tokio::test]
async fn text_completion_stream_and_unary() {
    let server = server().await;
    let body = r#"{"model":"m","prompt":"x","stream":true,"max_tokens":2}"#;
    let body_text = text(
        send(server.addr(), post("/v1/completions", body, &[]))
            .await
            .unwrap(),
    )
    .await;
    let events = data_events(&body_text);
    assert_eq!(events.len(), 3);
    let last = json(events[1]);
    assert_eq!(last["object"], "text_completion");
    assert_eq!(last["choices"][0]["text"], "mock ");
    assert_eq!(last["choices"][0]["finish_reason"], "length");

    let unary = r#"{"model":"m","prompt":"x"}"#;
    let v = json(
        &text(
            send(server.addr(), post("/v1/completions", unary, &[]))
                .await
                .unwrap(),
        )
        .await,
    );
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-mock-"));
    assert_eq!(v["usage"]["completion_tokens"], 16);
}

#[tokio::test]
async fn line_ending_variants() {
    let server = server().await;
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    for (name, eol) in [("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")] {
        let headers = [
            ("x-mock-line-ending", name),
            ("x-mock-tokens", "3"),
            ("x-mock-keepalive", "1"),
        ];
        let raw = text(
            send(server.addr(), post("/v1/chat/completions", body, &headers))
                .await
                .unwrap(),
        )
        .await;
        let separator = format!("{eol}{eol}");
        let events: Vec<&str> = raw
            .split(separator.as_str())
            .filter(|e| !e.is_empty())
            .collect();
        // 3 content + [DONE], each preceded by a keep-alive comment.
        assert_eq!(events.len(), 8, "{name}: {raw:?}");
        for pair in events.chunks(2) {
            assert_eq!(pair[0], ": keep-alive");
            assert!(pair[1].starts_with("data: "));
            assert!(!pair[1].contains(['\r', '\n']), "{name}: stray terminator");
        }
        assert!(raw.ends_with(&format!("data: [DONE]{separator}")));
    }

    let crlf = MockServer::start(MockConfig {
        line_ending: LineEnding::CrLf,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let raw = text(
        send(crlf.addr(), post("/v1/chat/completions", body, &[]))
            .await
            .unwrap(),
    )
    .await;
    assert!(raw.ends_with("data: [DONE]\r\n\r\n"));
}

#[tokio::test]
async fn embeddings_models_and_errors() {
    let server = server().await;
    let v = json(
        &text(
            send(
                server.addr(),
                post(
                    "/v1/embeddings",
                    r#"{"model":"e","input":["a","b","c"]}"#,
                    &[],
                ),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "e");
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][2]["index"], 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);
    let single = json(
        &text(
            send(
                server.addr(),
                post("/v1/embeddings", r#"{"input":"a"}"#, &[]),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert_eq!(single["data"].as_array().unwrap().len(), 1);
    assert_eq!(single["data"][0]["embedding"], v["data"][0]["embedding"]);

    let models = json(&text(send(server.addr(), get("/v1/models")).await.unwrap()).await);
    assert_eq!(models["data"][0]["id"], "mock-model");
    assert_eq!(models["data"][0]["owned_by"], "tollgate-mock");

    let missing = send(server.addr(), get("/v2/nothing")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let v = json(&text(missing).await);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "not_found");
    assert!(v["error"]["param"].is_null());

    let bad = send(
        server.addr(),
        post("/v1/chat/completions", "{not json", &[]),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        json(&text(bad).await)["error"]["type"],
        "invalid_request_error"
    );
    assert_eq!(server.stats().requests(), 5);
    assert_eq!(server.stats().recorded().len(), 5);
}

#[tokio::test]
async fn h2c_stream_and_pacing() {
    let server = server().await;
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let headers = [
        ("x-mock-tokens", "3"),
        ("x-mock-ttft-ms", "60"),
        ("x-mock-inter-token-ms", "20"),
    ];
    let started = Instant::now();
    let response = send_h2(server.addr(), post("/v1/chat/completions", body, &headers))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let raw = text(response).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(data_events(&raw).len(), 4);
    server.stats().wait_streams_completed(1).await;
}
