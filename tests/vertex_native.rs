//! The Vertex-native surface end to end: Gemini requests from google-genai-style callers,
//! served by an OpenAI-compatible upstream or by Vertex AI itself, with Gemini answers,
//! streams (SSE and JSON array) and Google-format errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

const API_KEY: &str = "native-test-express-key";
const CLIENT_KEY: &str = "sk-native-client";

const PROJECT_PATH: &str = "/v1/projects/p/locations/us-central1/publishers/google/models";

/// A gateway with auth on: alias `llama` on the mock's OpenAI surface, `gemini` on its
/// Vertex surface, `quota` on a Vertex version that answers 429.
async fn native_gateway() -> (MockServer, Gateway) {
    let mock = MockServer::start(MockConfig {
        tokens: 5,
        ..MockConfig::default().with_vertex_api_key(API_KEY)
    })
    .await
    .unwrap();
    let hash = tollgate::auth::hash_key(CLIENT_KEY);
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n\
         tenants:\n  - name: genai\n    key_hashes: [\"{hash}\"]\n    models: [\"*\"]\n\
         providers:\n  vllm:\n    type: openai\n    base_url: {openai}\n  vertex:\n    type: vertex\n    base_url: {vertex}\n    credentials: {{type: api_key, file: {key}}}\n\
         routes:\n  llama:\n    provider: vllm\n  gemini:\n    provider: vertex\n    upstream_model: gemini-2.5-flash\n\
         \x20 tools:\n    versions:\n      v: {{provider: vertex, upstream_model: gemini-2.5-flash, headers: {{x-mock-gemini: \"tool_call=1\"}}}}\n\
         \x20 quota:\n    retry: {{max_attempts: 1}}\n    versions:\n      v: {{provider: vertex, upstream_model: gemini-2.5-flash, headers: {{x-mock-gemini: \"error=RESOURCE_EXHAUSTED:retry=2s\"}}}}\n",
        openai = mock.base_url(),
        vertex = mock.vertex_base_url(),
        key = temp_file("express-key", API_KEY).display(),
    );
    (mock, gateway(&yaml).await)
}

const HELLO: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Say hello"}]}],"generationConfig":{"maxOutputTokens":40}}"#;

async fn native(gw: &Gateway, path: &str, body: &str) -> (StatusCode, http::HeaderMap, String) {
    call(
        gw.api_addr,
        post(
            path,
            body,
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
        ),
    )
    .await
}

#[tokio::test]
async fn generate_content_served_by_an_openai_server_and_by_vertex() {
    let (mock, gw) = native_gateway().await;
    for (alias, model_version) in [("llama", "llama"), ("gemini", "gemini-2.5-flash-001")] {
        let (status, headers, body) = native(
            &gw,
            &format!("{PROJECT_PATH}/{alias}:generateContent"),
            HELLO,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{alias}: {body}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-tollgate-route"], alias);
        let answer = json(&body);
        let candidate = &answer["candidates"][0];
        assert_eq!(candidate["content"]["role"], "model");
        assert!(
            candidate["content"]["parts"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        assert_eq!(candidate["finishReason"], "STOP");
        assert_eq!(answer["modelVersion"], model_version, "{alias}");
        let usage = &answer["usageMetadata"];
        assert_eq!(
            usage["totalTokenCount"],
            usage["promptTokenCount"].as_u64().unwrap()
                + usage["candidatesTokenCount"].as_u64().unwrap()
        );
    }
    // The OpenAI server got an OpenAI request.
    let openai = mock
        .stats()
        .recorded()
        .into_iter()
        .find(|r| r.path_and_query == "/v1/chat/completions")
        .unwrap();
    let sent = json(std::str::from_utf8(&openai.body).unwrap());
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Say hello"}])
    );
    assert_eq!(sent["max_tokens"], 40);
}

#[tokio::test]
async fn streams_in_sse_and_json_array_framing() {
    let (_mock, gw) = native_gateway().await;
    for alias in ["llama", "gemini"] {
        let path =
            format!("/v1beta1/publishers/google/models/{alias}:streamGenerateContent?alt=sse");
        let (status, headers, body) = native(&gw, &path, HELLO).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "text/event-stream");
        assert!(!body.contains("[DONE]"));
        let events: Vec<Value> = body
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| json(e.strip_prefix("data: ").unwrap()))
            .collect();
        let text: String = events
            .iter()
            .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
            .collect();
        assert!(!text.is_empty(), "{body}");
        let last = events.last().unwrap();
        assert_eq!(
            last["candidates"][0]["finishReason"], "STOP",
            "{alias}: {body}"
        );
        assert!(last["usageMetadata"]["totalTokenCount"].as_u64().unwrap() > 0);

        let path = format!("/v1/publishers/google/models/{alias}:streamGenerateContent");
        let (status, headers, body) = native(&gw, &path, HELLO).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        let array: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert!(array.len() >= 2, "{body}");
        let last = array.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP", "{body}");
        assert!(last["usageMetadata"]["totalTokenCount"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn count_tokens_on_vertex_routes() {
    let (_mock, gw) = native_gateway().await;
    let (status, _, body) = native(&gw, &format!("{PROJECT_PATH}/gemini:countTokens"), HELLO).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(json(&body)["totalTokens"].as_u64().unwrap() > 0);
    let (status, _, body) = native(&gw, &format!("{PROJECT_PATH}/llama:countTokens"), HELLO).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_google_error(&body, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn errors_are_in_googles_format() {
    let (_mock, gw) = native_gateway().await;
    let path = format!("{PROJECT_PATH}/nope:generateContent");
    let (status, _, body) = native(&gw, &path, HELLO).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_google_error(&body, 404, "NOT_FOUND");

    let (status, _, body) = call(gw.api_addr, post(&path, HELLO, &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_google_error(&body, 401, "UNAUTHENTICATED");

    // Google's SDKs send their key as x-goog-api-key.
    let ok = format!("{PROJECT_PATH}/llama:generateContent");
    let (status, _, body) = call(
        gw.api_addr,
        post(&ok, HELLO, &[("x-goog-api-key", CLIENT_KEY)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, _, body) = native(&gw, &ok, "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_google_error(&body, 400, "INVALID_ARGUMENT");

    let (status, headers, body) =
        native(&gw, &format!("{PROJECT_PATH}/quota:generateContent"), HELLO).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], "2");
    assert_google_error(&body, 429, "RESOURCE_EXHAUSTED");

    // The OpenAI surface keeps OpenAI's format.
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"nope","messages":[]}"#,
            &[("authorization", &format!("Bearer {CLIENT_KEY}"))],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&body, "model_not_found");
}

#[tokio::test]
async fn function_calling_round_trip() {
    let (_mock, gw) = native_gateway().await;
    let tools = r#"[{"functionDeclarations":[{"name":"weather","parameters":{"type":"OBJECT","properties":{"city":{"type":"STRING"}}}}]}]"#;
    let ask = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"Weather in Paris?"}}]}}],"tools":{tools}}}"#
    );
    let (status, _, body) =
        native(&gw, &format!("{PROJECT_PATH}/tools:generateContent"), &ask).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = json(&body);
    let part = &answer["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "weather", "{body}");
    assert!(part["functionCall"]["args"].is_object());

    // The history goes back with the call and its answer; the model answers in text.
    let history = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [part]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"temp": 21}}}]},
        ],
        "tools": serde_json::from_str::<Value>(tools).unwrap(),
    });
    let (status, _, body) = native(
        &gw,
        &format!("{PROJECT_PATH}/gemini:generateContent"),
        &history.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        json(&body)["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .is_some()
    );
}
