//! Vertex AI routes end to end: OpenAI requests in, Gemini calls to the mock Vertex out, and
//! the answers, streams, errors and billing labels the client and Google each see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

const API_KEY: &str = "test-express-key-0123";

/// A gateway in front of a mock Vertex that wants the express key, with one route per
/// mock outcome (set by the version's `x-mock-gemini` header, since client headers are not
/// forwarded): `g` plain, `tools`, `blocked`, `quota` (429 with RetryInfo, no retries),
/// `broken` (an error after two stream events), `lenient` (unsupported parameters dropped).
async fn vertex_gateway() -> (MockServer, Gateway) {
    let key_file = temp_file("express-key", &format!("{API_KEY}\n"));
    let mock = MockServer::start(MockConfig::default().with_vertex_api_key(API_KEY))
        .await
        .unwrap();
    let version = |outcome: &str| {
        let headers = if outcome.is_empty() {
            String::new()
        } else {
            format!(", headers: {{x-mock-gemini: \"{outcome}\"}}")
        };
        format!("{{provider: gemini, upstream_model: gemini-2.5-flash{headers}}}")
    };
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  gemini:\n    type: vertex\n    project: tollgate-mock-project\n    location: us-central1\n    base_url: {base}\n    credentials: {{type: api_key, file: {key_file}}}\n\
         routes:\n  g:\n    versions:\n      flash: {plain}\n  tools:\n    versions:\n      flash: {tools}\n\
         \x20 blocked:\n    versions:\n      flash: {blocked}\n\
         \x20 quota:\n    retry: {{max_attempts: 1}}\n    versions:\n      flash: {quota}\n\
         \x20 broken:\n    versions:\n      flash: {broken}\n\
         \x20 lenient:\n    unsupported_params: drop\n    versions:\n      flash: {plain}\n",
        base = mock.vertex_base_url(),
        key_file = key_file.display(),
        plain = version(""),
        tools = version("tool_call=2"),
        blocked = version("blocked=PROHIBITED_CONTENT"),
        quota = version("error=RESOURCE_EXHAUSTED:retry=1.5s"),
        broken = version("error=UNAVAILABLE:after=2"),
    );
    (mock, gateway(&yaml).await)
}

#[tokio::test]
async fn chat_reaches_gemini_and_comes_back_as_a_chat_completion() {
    let (mock, gw) = vertex_gateway().await;
    let (status, headers, body) = chat(
        &gw,
        r#"{"model":"g","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":50,"temperature":0.2}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-tollgate-route"], "g");
    let answer = json(&body);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gemini-2.5-flash-001");
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &answer["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // What Google saw: the project path, the key, Gemini's format, the billing labels.
    let sent = mock.stats().last_request().unwrap();
    assert_eq!(
        sent.path_and_query,
        "/v1/projects/tollgate-mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(sent.headers["x-goog-api-key"], API_KEY);
    assert!(sent.headers.get("authorization").is_none());
    let gemini = json(std::str::from_utf8(&sent.body).unwrap());
    assert_eq!(gemini["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(gemini["contents"][0]["role"], "user");
    assert_eq!(gemini["generationConfig"]["maxOutputTokens"], 50);
    assert_eq!(
        gemini["labels"],
        serde_json::json!({"tollgate_tenant": "anonymous", "tollgate_route": "g", "tollgate_version": "flash"})
    );
}

#[tokio::test]
async fn streams_become_openai_chunks_with_done() {
    let (mock, gw) = vertex_gateway().await;
    let mut body = open_stream(
        gw.api_addr,
        r#"{"model":"g","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me more"}]}"#,
    )
    .await;
    let text = String::from_utf8(all_chunks(&mut body).await.concat()).unwrap();
    let events = data_events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| json(e)).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.is_empty());
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    // One usage chunk, the last one, with Gemini's final (cumulative) counts.
    let usage: Vec<_> = chunks.iter().filter(|c| c.get("usage").is_some()).collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["choices"], serde_json::json!([]));
    assert!(usage[0]["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let sent = mock.stats().last_request().unwrap();
    assert!(
        sent.path_and_query
            .ends_with(":streamGenerateContent?alt=sse")
    );

    // Without include_usage the usage chunk is removed again.
    let mut body = open_stream(
        gw.api_addr,
        r#"{"model":"g","stream":true,"messages":[{"role":"user","content":"Again"}]}"#,
    )
    .await;
    let text = String::from_utf8(all_chunks(&mut body).await.concat()).unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn function_calls_become_tool_calls_unary_and_streamed() {
    let (_mock, gw) = vertex_gateway().await;
    let request = |stream: bool| {
        format!(
            r#"{{"model":"tools","stream":{stream},"messages":[{{"role":"user","content":"Weather?"}}],
            "tools":[{{"type":"function","function":{{"name":"weather","parameters":{{"type":"object","properties":{{"city":{{"type":"string"}}}}}}}}}}]}}"#
        )
    };
    let (status, _, body) = chat(&gw, &request(false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choice = &json(&body)["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "weather");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    serde_json::from_str::<serde_json::Value>(calls[0]["function"]["arguments"].as_str().unwrap())
        .unwrap();

    let mut body = open_stream(gw.api_addr, &request(true)).await;
    let text = String::from_utf8(all_chunks(&mut body).await.concat()).unwrap();
    let deltas: Vec<serde_json::Value> = data_events(&text)
        .iter()
        .filter(|e| **e != "[DONE]")
        .map(|e| json(e))
        .collect();
    let calls: Vec<&serde_json::Value> = deltas
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 2, "{text}");
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[1]["index"], 1);
    assert!(
        deltas
            .iter()
            .any(|d| d["choices"][0]["finish_reason"] == "tool_calls")
    );
}

#[tokio::test]
async fn a_blocked_prompt_is_a_content_filter_answer() {
    let (_mock, gw) = vertex_gateway().await;
    let (status, _, body) = chat(
        &gw,
        r#"{"model":"blocked","messages":[{"role":"user","content":"something bad"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choice = &json(&body)["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert!(
        choice["message"]["refusal"]
            .as_str()
            .unwrap()
            .contains("PROHIBITED_CONTENT")
    );
    let metrics = metrics(&gw).await;
    assert_eq!(
        sample(
            &metrics,
            "tollgate_finish_reasons_total{route=\"blocked\",version=\"flash\",reason=\"content_filter\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn google_errors_reach_openai_clients_with_status_and_retry_after() {
    let (_mock, gw) = vertex_gateway().await;
    let (status, headers, body) = chat(
        &gw,
        r#"{"model":"quota","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["x-tollgate-error-source"], "upstream");
    let error = assert_openai_error(&body, "resource_exhausted");
    assert_eq!(error["error"]["type"], "rate_limit_error");

    // An error inside a started stream ends it with the terminal error event.
    let mut body = open_stream(
        gw.api_addr,
        r#"{"model":"broken","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let text = String::from_utf8(all_chunks(&mut body).await.concat()).unwrap();
    let events = data_events(&text);
    let last = json(events.last().unwrap());
    assert_eq!(last["error"]["code"], "unavailable", "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn unsupported_parameters_are_refused_or_dropped_per_route() {
    let (mock, gw) = vertex_gateway().await;
    let body = r#"{"model":"MODEL","logit_bias":{"50256":-100},"messages":[{"role":"user","content":"hi"}]}"#;
    let before = mock.stats().requests();
    let (status, _, answer) = chat(&gw, &body.replace("MODEL", "g")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = assert_openai_error(&answer, "unsupported_parameter");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logit_bias")
    );
    assert_eq!(mock.stats().requests(), before, "nothing reached Google");

    let (status, _, answer) = chat(&gw, &body.replace("MODEL", "lenient")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // Vertex routes serve chat only.
    let (status, _, answer) = call(
        gw.api_addr,
        post("/v1/completions", r#"{"model":"g","prompt":"hi"}"#, &[]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&answer, "unsupported_parameter");
}

#[tokio::test]
async fn bad_vertex_configs_are_refused_with_their_key() {
    let base =
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n";
    let err = start_error(&format!(
        "{base}providers:\n  v:\n    type: vertex\n    credentials: {{type: metadata_server}}\n"
    ))
    .await;
    assert!(err.contains("providers.v.project"), "{err}");
    let err = start_error(&format!(
        "{base}providers:\n  v:\n    type: vertex\n    project: p\n    api_version: v2\n    credentials: {{type: metadata_server}}\n"
    ))
    .await;
    assert!(err.contains("providers.v.api_version"), "{err}");
    let err = start_error(&format!(
        "{base}providers:\n  v:\n    type: vertex\n    project: p\n    credentials: {{type: metadata_server}}\n\
         routes:\n  r:\n    provider: v\n    upstream_model: publishers/google/gemini\n"
    ))
    .await;
    assert!(err.contains("routes.r.upstream_model"), "{err}");
}

/// A gateway whose `g` route goes to a `vertex_openai` provider with `provider_extra`.
async fn openai_compatible_gateway(mock: &MockServer, provider_extra: &str) -> Gateway {
    let key_file = temp_file("express-key", &format!("{API_KEY}\n"));
    gateway(&format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  vo:\n    type: vertex_openai\n    project: tollgate-mock-project\n    location: us-east5\n    base_url: {base}\n    credentials: {{type: api_key, file: {key}}}\n{provider_extra}\
         routes:\n  g:\n    provider: vo\n    upstream_model: google/gemini-2.5-flash\n",
        base = mock.vertex_base_url(),
        key = key_file.display(),
    ))
    .await
}

#[tokio::test]
async fn the_openai_compatible_endpoint_gets_openai_bodies() {
    let mock = MockServer::start(MockConfig::default().with_vertex_api_key(API_KEY))
        .await
        .unwrap();
    let gw = openai_compatible_gateway(&mock, "").await;
    let (status, _, body) = chat(
        &gw,
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":1}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["object"], "chat.completion");
    let sent = mock.stats().last_request().unwrap();
    assert_eq!(
        sent.path_and_query,
        "/v1/projects/tollgate-mock-project/locations/us-east5/endpoints/openapi/chat/completions"
    );
    assert_eq!(sent.headers["x-goog-api-key"], API_KEY);
    let forwarded = json(std::str::from_utf8(&sent.body).unwrap());
    // OpenAI's format, unknown parameters and all; the model is the upstream one.
    assert_eq!(forwarded["model"], "google/gemini-2.5-flash");
    assert_eq!(forwarded["logit_bias"]["1"], 1);

    let mut stream = open_stream(
        gw.api_addr,
        r#"{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let text = String::from_utf8(all_chunks(&mut stream).await.concat()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_deployed_model_is_called_by_raw_predict() {
    let mock = MockServer::start(MockConfig::default().with_vertex_api_key(API_KEY))
        .await
        .unwrap();
    let gw =
        openai_compatible_gateway(&mock, "    endpoint: \"4242\"\n    raw_predict: true\n").await;
    let (status, _, body) = chat(
        &gw,
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let prefix = "/v1/projects/tollgate-mock-project/locations/us-east5/endpoints/4242";
    assert_eq!(
        mock.stats().last_request().unwrap().path_and_query,
        format!("{prefix}:rawPredict")
    );
    let mut stream = open_stream(
        gw.api_addr,
        r#"{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    all_chunks(&mut stream).await;
    assert_eq!(
        mock.stats().last_request().unwrap().path_and_query,
        format!("{prefix}:streamRawPredict")
    );
}

#[tokio::test]
async fn openai_compatible_settings_are_checked() {
    let base = "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\nproviders:\n  v:\n";
    for (provider, key) in [
        (
            "    type: vertex\n    project: p\n    endpoint: openapi\n",
            "providers.v.endpoint",
        ),
        (
            "    type: vertex_openai\n    project: p\n    raw_predict: true\n",
            "providers.v.raw_predict",
        ),
        (
            "    type: vertex_openai\n    project: p\n    endpoint: \"12ab\"\n",
            "providers.v.endpoint",
        ),
        ("    type: vertex_openai\n", "providers.v.project"),
    ] {
        let err = start_error(&format!(
            "{base}{provider}    credentials: {{type: metadata_server}}\n"
        ))
        .await;
        assert!(err.contains(key), "{provider}: {err}");
    }
}

#[tokio::test]
async fn a_retry_delay_ejects_the_endpoint_and_moves_to_the_fallback() {
    let mock = MockServer::start(MockConfig::default().with_vertex_api_key(API_KEY))
        .await
        .unwrap();
    let key_file = temp_file("express-key", &format!("{API_KEY}\n"));
    let gw = gateway(&format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  gemini:\n    type: vertex\n    base_url: {base}\n    credentials: {{type: api_key, file: {key}}}\n    ejection: {{consecutive_failures: 1}}\n\
         \x20 demo:\n    type: demo\n    ttft: 0ms\n    inter_token: 0ms\n\
         routes:\n  g:\n    fallbacks: [spare]\n    retry: {{max_attempts: 2, max_backoff: 500ms}}\n    versions:\n\
         \x20     flash: {{provider: gemini, upstream_model: gemini-2.5-flash, headers: {{x-mock-gemini: \"error=RESOURCE_EXHAUSTED:retry=3s\"}}}}\n\
         \x20     spare: {{provider: demo, weight: 0}}\n",
        base = mock.vertex_base_url(),
        key = key_file.display(),
    ))
    .await;
    let (status, headers, body) = chat(
        &gw,
        r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    // Google's 3 s is longer than the route waits between attempts: the fallback serves.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-tollgate-route-version"], "spare");
    let metrics = metrics(&gw).await;
    let label = format!("provider=\"gemini\",endpoint=\"{}\"", mock.addr());
    assert_eq!(
        sample(&metrics, &format!("tollgate_endpoint_ejected{{{label}}}")),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_upstream_retries_total{route=\"g\",version=\"flash\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_client_span_names_vertex_and_the_model_gemini_answered_with() {
    use common::otlp::*;
    let Some(receiver) = Receiver::start(&[]) else {
        return;
    };
    let mock = MockServer::start(MockConfig::default().with_vertex_api_key(API_KEY))
        .await
        .unwrap();
    let key_file = temp_file("express-key", &format!("{API_KEY}\n"));
    let gw = gateway(&format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n{tracing}\
         providers:\n  gemini:\n    type: vertex\n    base_url: {base}\n    credentials: {{type: api_key, file: {key}}}\n\
         routes:\n  g:\n    provider: gemini\n    upstream_model: gemini-2.5-flash\n",
        tracing = tracing_section(&receiver.grpc, "grpc", ""),
        base = mock.vertex_base_url(),
        key = key_file.display(),
    ))
    .await;
    let parent = traceparent(INBOUND_TRACE, INBOUND_PARENT, "01");
    chat_ok(
        &gw,
        r#"{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        &[("traceparent", &parent)],
    )
    .await;
    let spans = receiver.spans_of(INBOUND_TRACE, 4);
    let client = &by_name(&spans, "chat gemini-2.5-flash")["attributes"];
    assert_eq!(client["gen_ai.provider.name"], "gcp.vertex_ai");
    assert_eq!(client["gen_ai.request.model"], "gemini-2.5-flash");
    // The model Gemini says answered (`modelVersion`), not the one asked for.
    assert_eq!(client["gen_ai.response.model"], "gemini-2.5-flash-001");
    assert_eq!(
        client["gen_ai.response.finish_reasons"],
        serde_json::json!(["stop"])
    );
    assert!(client["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0);
    assert_eq!(client["server.address"], "127.0.0.1");
    // The upstream hop carried the trace on to Google.
    let sent = mock.stats().last_request().unwrap();
    let upstream_parent = sent.headers["traceparent"].to_str().unwrap();
    assert!(upstream_parent.starts_with(&format!("00-{INBOUND_TRACE}-")));
}
