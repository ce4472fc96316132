//! The OpenAI surfaces through the gateway: chat, completions, embeddings, models; pass-through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate_mock::MockConfig;

#[tokio::test]
async fn chat_non_stream_passes_body_and_answer_through() {
    let (mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let request = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"x_vendor_field":{"keep":[1,2,3]}}"#;
    let (status, headers, body) = chat(&gw, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-tollgate-route"], "m");
    assert_eq!(headers["x-tollgate-request-id"].len(), 16);
    let answer = json(&body);
    assert!(
        answer["id"].as_str().unwrap().starts_with("chatcmpl-mock-"),
        "answer comes from the mock verbatim"
    );
    let usage = &answer["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // Non-streaming bodies go upstream byte for byte.
    let seen = mock.stats().last_request().unwrap();
    assert_eq!(seen.path_and_query, "/v1/chat/completions");
    assert_eq!(seen.body, request.as_bytes());
}

#[tokio::test]
async fn completions_and_embeddings_reach_their_upstream_paths() {
    let (mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let (status, _, body) = call(
        gw.api_addr,
        post("/v1/completions", r#"{"model":"m","prompt":"say hi"}"#, &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["object"], "text_completion");
    assert_eq!(
        mock.stats().last_request().unwrap().path_and_query,
        "/v1/completions"
    );

    let (status, _, body) = call(
        gw.api_addr,
        post("/v1/embeddings", r#"{"model":"m","input":["a","b"]}"#, &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        mock.stats().last_request().unwrap().path_and_query,
        "/v1/embeddings"
    );
}

#[tokio::test]
async fn models_lists_the_callers_aliases() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let (status, _, body) = call(gw.api_addr, get("/v1/models", &[])).await;
    assert_eq!(status, StatusCode::OK);
    let list = json(&body);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d", "m"]);
    assert_eq!(list["data"][0]["object"], "model");
}

#[tokio::test]
async fn provider_rewrites_model_and_adds_key_and_static_headers() {
    let mock = tollgate_mock::MockServer::start(MockConfig::default())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, "sk-upstream-secret\n").unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  tgi:\n    type: openai\n    base_url: {}\n    api_key_file: {}\n    headers:\n      x-team: search\n\
         routes:\n  llama:\n    provider: tgi\n    upstream_model: tgi\n",
        mock.base_url(),
        key_file.display()
    );
    let gw = gateway(&yaml).await;
    let (status, _, body) = chat(&gw, r#"{"model":"llama","messages":[]}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = mock.stats().last_request().unwrap();
    assert_eq!(
        json(std::str::from_utf8(&seen.body).unwrap())["model"],
        "tgi"
    );
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-secret");
    assert_eq!(seen.headers["x-team"], "search");
    // Embeddings never stream: a stray `stream: true` neither skips the rewrite nor gets
    // `stream_options` added.
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/embeddings",
            r#"{"model":"llama","input":"x","stream":true}"#,
            &[],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = json(std::str::from_utf8(&mock.stats().last_request().unwrap().body).unwrap());
    assert_eq!(seen["model"], "tgi");
    assert!(seen.get("stream_options").is_none(), "{seen}");
    // The gateway's own client key never travels upstream.
    let (_, _, _) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"llama"}"#,
            &[("authorization", "Bearer client-key")],
        ),
    )
    .await;
    assert_eq!(
        mock.stats().last_request().unwrap().headers["authorization"],
        "Bearer sk-upstream-secret"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn missing_api_key_env_fails_start_naming_the_key() {
    let yaml = "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n\
                providers:\n  p:\n    type: openai\n    base_url: http://127.0.0.1:1/v1\n    api_key_env: TOLLGATE_TEST_UNSET_VAR\n";
    let err = start_error(yaml).await;
    assert!(err.contains("providers.p.api_key_env"), "{err}");
}

#[tokio::test]
async fn demo_provider_answers_deterministically_with_usage_that_adds_up() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let request = r#"{"model":"d","messages":[{"role":"user","content":"one two three"}]}"#;
    let (status, _, first) = chat(&gw, request).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, _, second) = chat(&gw, request).await;
    let (first, second) = (json(&first), json(&second));
    assert_eq!(first["choices"], second["choices"]);
    assert_eq!(first["usage"]["prompt_tokens"], 3);
    assert_eq!(first["usage"]["completion_tokens"], 5);
    assert_eq!(first["usage"]["total_tokens"], 8);

    let (status, _, body) = call(
        gw.api_addr,
        post("/v1/embeddings", r#"{"model":"d","input":"x"}"#, &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        json(&body)["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
}
