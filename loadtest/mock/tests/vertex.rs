//! The Vertex AI (Gemini) surface, black-box: paths, answers, both stream framings, outcomes
//! on demand, Google errors, countTokens and the transport faults on these paths.

// Test helpers outside #[test] fns are not covered by clippy.toml's test allowances;
// failing loudly is exactly what they should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{json, post, send, text};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::timeout;
use tollgate_mock::{MockConfig, MockServer};

const MODEL: &str =
    "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash";
const PROMPT: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}],"labels":{"tenant":"acme","prompt_version":"v3"}}"#;
const TOOLS: &str = r#""tools":[{"functionDeclarations":[{"name":"get_weather","parameters":{"type":"OBJECT","properties":{"city":{"type":"STRING"}}}},{"name":"get_time"}]}]"#;
const BOUND: Duration = Duration::from_secs(5);

async fn server() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

async fn call(
    server: &MockServer,
    method: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> http::Response<Incoming> {
    send(
        server.addr(),
        post(&format!("{MODEL}:{method}"), body, headers),
    )
    .await
    .unwrap()
}

/// Status and parsed JSON body.
async fn call_json(
    server: &MockServer,
    method: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let response = call(server, method, body, headers).await;
    let status = response.status().as_u16();
    (status, json(&text(response).await))
}

/// Splits a CRLF SSE body into its `data:` payloads, checking the framing on the way.
fn crlf_events(body: &str) -> Vec<serde_json::Value> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    assert!(
        body.match_indices('\n')
            .all(|(i, _)| i > 0 && body.as_bytes()[i - 1] == b'\r'),
        "a line ends without CR: {body:?}"
    );
    assert!(!body.contains("[DONE]"));
    body.split("\r\n\r\n")
        .filter(|event| !event.is_empty())
        .map(|event| json(event.strip_prefix("data: ").unwrap()))
        .collect()
}

/// The body's frames as they arrived.
async fn frames(response: http::Response<Incoming>) -> Vec<String> {
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = timeout(BOUND, body.frame()).await.unwrap() {
        let data = frame.unwrap().into_data().unwrap();
        frames.push(String::from_utf8(data.to_vec()).unwrap());
    }
    frames
}

fn texts(event: &serde_json::Value) -> String {
    event["candidates"][0]["content"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p.get("thought").is_none())
                .filter_map(|p| p["text"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn unary_answer_shape_and_recording() {
    let server = server().await;
    let (status, v) = call_json(&server, "generateContent", PROMPT, &[]).await;
    assert_eq!(status, 200);
    let candidate = &v["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(texts(&v).split_whitespace().count(), 16);
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["index"], 0);
    let usage = &v["usageMetadata"];
    assert_eq!(usage["candidatesTokenCount"], 16);
    assert!(usage.get("thoughtsTokenCount").is_none());
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap() + 16
    );
    assert_eq!(v["modelVersion"], "gemini-2.5-flash-001");
    let (_, again) = call_json(&server, "generateContent", PROMPT, &[]).await;
    assert_ne!(v["responseId"], again["responseId"]);

    let recorded = server.stats().last_request().unwrap();
    assert_eq!(recorded.path_and_query, format!("{MODEL}:generateContent"));
    assert_eq!(
        json(std::str::from_utf8(&recorded.body).unwrap())["labels"]["tenant"],
        "acme"
    );
    assert_eq!(server.stats().requests(), 2);
}

#[tokio::test]
async fn every_path_form_answers() {
    let server = server().await;
    for path in [
        "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.0-flash-001:generateContent",
        "/v1/publishers/google/models/gemini-2.5-pro:generateContent",
        "/v1beta1/publishers/google/models/gemini-2.5-pro:generateContent",
        "/v1/projects/p/locations/europe-west4/endpoints/1234567890:generateContent",
    ] {
        let response = send(server.addr(), post(path, PROMPT, &[])).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let v = json(&text(response).await);
        assert_eq!(v["candidates"][0]["finishReason"], "STOP", "{path}");
    }
    let predict = send(
        server.addr(),
        post(
            "/v1/projects/p/locations/l/endpoints/1:predict",
            PROMPT,
            &[],
        ),
    )
    .await
    .unwrap();
    assert_eq!(predict.status(), 404);
    assert_eq!(json(&text(predict).await)["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn caps_candidates_and_thinking() {
    let server = server().await;
    let capped = r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"maxOutputTokens":3,"candidateCount":3}}"#;
    let (_, v) = call_json(&server, "generateContent", capped, &[]).await;
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    for (i, c) in candidates.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finishReason"], "MAX_TOKENS");
    }
    assert_eq!(texts(&v), "the mock model ");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 9);

    let thinking = |budget: i64, include: bool| {
        format!(
            r#"{{"contents":[{{"parts":[{{"text":"x"}}]}}],"generationConfig":{{"thinkingConfig":{{"thinkingBudget":{budget},"includeThoughts":{include}}}}}}}"#
        )
    };
    let (_, v) = call_json(&server, "generateContent", &thinking(1024, false), &[]).await;
    let usage = &v["usageMetadata"];
    assert_eq!(usage["thoughtsTokenCount"], 8);
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap() + 16 + 8
    );
    assert_eq!(
        v["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, v) = call_json(&server, "generateContent", &thinking(3, true), &[]).await;
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 3);
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["thought"], true);
    let (_, v) = call_json(&server, "generateContent", &thinking(0, true), &[]).await;
    assert!(v["usageMetadata"].get("thoughtsTokenCount").is_none());
    let (_, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "thoughts=21, cached=3")],
    )
    .await;
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 21);
    assert_eq!(v["usageMetadata"]["cachedContentTokenCount"], 3);
}

#[tokio::test]
async fn sse_stream_is_crlf_cumulative_and_ends_without_done() {
    let server = server().await;
    let (_, unary) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-tokens", "10")],
    )
    .await;
    let response = send(
        server.addr(),
        post(
            &format!("{MODEL}:streamGenerateContent?alt=sse"),
            PROMPT,
            &[("x-mock-tokens", "10")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = crlf_events(&text(response).await);
    // 10 tokens, 4 per event.
    assert_eq!(events.len(), 3);
    let counts: Vec<u64> = events
        .iter()
        .map(|e| e["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [4, 8, 10]);
    assert!(
        events[..2]
            .iter()
            .all(|e| e["candidates"][0].get("finishReason").is_none())
    );
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"], unary["usageMetadata"]);
    assert_eq!(events.iter().map(texts).collect::<String>(), texts(&unary));
    let ids: Vec<_> = events.iter().map(|e| e["responseId"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    server.stats().wait_streams_completed(1).await;
    assert_eq!(
        server.stats().last_request().unwrap().path_and_query,
        format!("{MODEL}:streamGenerateContent?alt=sse")
    );
}

#[tokio::test]
async fn json_array_stream_arrives_element_by_element() {
    let server = server().await;
    let response = call(
        &server,
        "streamGenerateContent",
        PROMPT,
        &[("x-mock-tokens", "9")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=UTF-8"
    );
    let frames = frames(response).await;
    assert_eq!(frames.len(), 3 + 1, "{frames:?}");
    assert!(frames[0].starts_with("[{"));
    assert!(frames[1].starts_with(",\r\n{") && frames[2].starts_with(",\r\n{"));
    assert_eq!(frames[3], "]");
    let array = json(&frames.concat());
    let elements = array.as_array().unwrap();
    assert_eq!(elements.len(), 3);
    assert_eq!(elements[2]["usageMetadata"]["candidatesTokenCount"], 9);
    assert_eq!(elements[2]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn streams_are_paced() {
    let server = server().await;
    let headers = [
        ("x-mock-tokens", "8"),
        ("x-mock-ttft-ms", "40"),
        ("x-mock-inter-token-ms", "10"),
    ];
    let started = Instant::now();
    let response = call(&server, "streamGenerateContent", PROMPT, &headers).await;
    assert_eq!(frames(response).await.len(), 3);
    // ttft, then 4 tokens x 10ms before the second event.
    assert!(started.elapsed() >= Duration::from_millis(80));
}

#[tokio::test]
async fn tool_calls() {
    let server = server().await;
    let any = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"weather?"}}]}}],{TOOLS},"toolConfig":{{"functionCallingConfig":{{"mode":"ANY","allowedFunctionNames":["get_time"]}}}}}}"#
    );
    let (_, v) = call_json(&server, "generateContent", &any, &[]).await;
    let part = &v["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_time");
    assert_eq!(part["functionCall"]["args"], serde_json::json!({}));
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let auto =
        format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"weather?"}}]}}],{TOOLS}}}"#);
    let (_, v) = call_json(&server, "generateContent", &auto, &[]).await;
    assert!(texts(&v).starts_with("the mock"));
    let (_, v) = call_json(
        &server,
        "generateContent",
        &auto,
        &[("x-mock-gemini", "tool_call=2")],
    )
    .await;
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[0]["functionCall"]["name"], "get_weather");
    assert_eq!(parts[0]["functionCall"]["args"]["city"], "mock");
    assert_eq!(parts[1]["functionCall"]["name"], "get_time");

    let answered = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"weather?"}}]}},{{"role":"model","parts":[{{"functionCall":{{"name":"get_weather","args":{{"city":"Oslo"}}}}}}]}},{{"role":"user","parts":[{{"functionResponse":{{"name":"get_weather","response":{{"temp":3}}}}}}]}}],{TOOLS},"toolConfig":{{"functionCallingConfig":{{"mode":"ANY"}}}}}}"#
    );
    let (_, v) = call_json(&server, "generateContent", &answered, &[]).await;
    assert!(texts(&v).starts_with("the mock"));

    let streamed = send(
        server.addr(),
        post(
            &format!("{MODEL}:streamGenerateContent?alt=sse"),
            &auto,
            &[("x-mock-gemini", "tool_call=2")],
        ),
    )
    .await
    .unwrap();
    let events = crlf_events(&text(streamed).await);
    assert_eq!(events.len(), 2);
    for (event, name) in events.iter().zip(["get_weather", "get_time"]) {
        assert_eq!(
            event["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            name
        );
    }
    assert_eq!(events[1]["candidates"][0]["finishReason"], "STOP");

    let (status, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "tool_call")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn blocked_prompts_and_safety_finishes() {
    let server = server().await;
    let (status, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "blocked")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(v.get("candidates").is_none());
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v["promptFeedback"]["blockReasonMessage"].is_string());
    let sse = send(
        server.addr(),
        post(
            &format!("{MODEL}:streamGenerateContent?alt=sse"),
            PROMPT,
            &[("x-mock-gemini", "blocked=PROHIBITED_CONTENT")],
        ),
    )
    .await
    .unwrap();
    let events = crlf_events(&text(sse).await);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["promptFeedback"]["blockReason"],
        "PROHIBITED_CONTENT"
    );

    let (_, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "safety")],
    )
    .await;
    assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
    assert!(v["candidates"][0].get("content").is_none());
    let (_, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "max_tokens")],
    )
    .await;
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    let array = text(
        call(
            &server,
            "streamGenerateContent",
            PROMPT,
            &[("x-mock-gemini", "finish=RECITATION")],
        )
        .await,
    )
    .await;
    let elements = json(&array);
    let last = elements.as_array().unwrap().last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "RECITATION");
}

#[tokio::test]
async fn injected_errors_in_google_format() {
    let server = server().await;
    let limited = [("x-mock-gemini", "error=RESOURCE_EXHAUSTED:retry=1.5s")];
    let (status, v) = call_json(&server, "generateContent", PROMPT, &limited).await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["code"], 429);
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let detail = &v["error"]["details"][0];
    assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.RetryInfo");
    assert_eq!(detail["retryDelay"], "1.500s");

    // The JSON-array stream endpoint wraps errors in an array; SSE does not.
    let (status, v) = call_json(&server, "streamGenerateContent", PROMPT, &limited).await;
    assert_eq!(status, 429);
    assert_eq!(v[0]["error"]["status"], "RESOURCE_EXHAUSTED");
    let sse = send(
        server.addr(),
        post(
            &format!("{MODEL}:streamGenerateContent?alt=sse"),
            PROMPT,
            &limited,
        ),
    )
    .await
    .unwrap();
    assert_eq!(sse.status(), 429);
    assert_eq!(json(&text(sse).await)["error"]["code"], 429);

    for (status_name, code) in [
        ("INVALID_ARGUMENT", 400),
        ("FAILED_PRECONDITION", 400),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
        ("NOT_FOUND", 404),
        ("ABORTED", 409),
        ("CANCELLED", 499),
        ("INTERNAL", 500),
        ("UNIMPLEMENTED", 501),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
    ] {
        let header = format!("error={status_name}");
        let (status, v) = call_json(
            &server,
            "generateContent",
            PROMPT,
            &[("x-mock-gemini", &header)],
        )
        .await;
        assert_eq!(status, code, "{status_name}");
        assert_eq!(v["error"]["status"], status_name);
        assert!(v["error"].get("details").is_none());
    }

    let (status, v) = call_json(&server, "generateContent", "{not json", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    let (status, v) = call_json(&server, "generateContent", r#"{"labels":{}}"#, &[]).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("contents"));
    let (status, v) = call_json(&server, "streamGenerateContent", r#"{"contents":[]}"#, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(v[0]["error"]["status"], "INVALID_ARGUMENT");
    let (status, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "explode")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("explode"));
}

#[tokio::test]
async fn mid_stream_errors_after_some_events() {
    let server = server().await;
    let headers = [
        ("x-mock-tokens", "12"),
        ("x-mock-gemini", "error=UNAVAILABLE:after=2"),
    ];
    let sse = send(
        server.addr(),
        post(
            &format!("{MODEL}:streamGenerateContent?alt=sse"),
            PROMPT,
            &headers,
        ),
    )
    .await
    .unwrap();
    assert_eq!(sse.status(), 200);
    let events = crlf_events(&text(sse).await);
    assert_eq!(events.len(), 3);
    assert!(events[1]["candidates"].is_array());
    assert_eq!(events[2]["error"]["code"], 503);
    assert_eq!(events[2]["error"]["status"], "UNAVAILABLE");

    let array = call(&server, "streamGenerateContent", PROMPT, &headers).await;
    assert_eq!(array.status(), 200);
    let v = json(&text(array).await);
    let elements = v.as_array().unwrap();
    assert_eq!(elements.len(), 3);
    assert_eq!(elements[2]["error"]["status"], "UNAVAILABLE");

    // `after` means nothing to a unary call: the error is the answer.
    let (status, _) = call_json(&server, "generateContent", PROMPT, &headers).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn transport_faults_apply_to_vertex_paths() {
    let server = server().await;
    let fault = |spec| [("x-mock-fault", spec), ("x-mock-tokens", "12")];
    let (status, v) = call_json(&server, "generateContent", PROMPT, &fault("status=503")).await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["status"], "UNAVAILABLE");
    // A code no status maps to keeps its HTTP code.
    let (status, v) = call_json(&server, "generateContent", PROMPT, &fault("status=502")).await;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["code"], 502);
    assert_eq!(v["error"]["status"], "INTERNAL");
    let (_, v) = call_json(
        &server,
        "streamGenerateContent",
        PROMPT,
        &fault("status=500"),
    )
    .await;
    assert_eq!(v[0]["error"]["status"], "INTERNAL");

    // error-after renders a Google error event.
    let sse = send(
        server.addr(),
        post(
            &format!("{MODEL}:streamGenerateContent?alt=sse"),
            PROMPT,
            &fault("error-after=1"),
        ),
    )
    .await
    .unwrap();
    let events = crlf_events(&text(sse).await);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["error"]["status"], "INTERNAL");

    // A truncated array never closes.
    let cut = text(
        call(
            &server,
            "streamGenerateContent",
            PROMPT,
            &fault("truncate-after=2"),
        )
        .await,
    )
    .await;
    assert!(cut.starts_with("[{") && !cut.ends_with(']'));
    assert!(serde_json::from_str::<serde_json::Value>(&cut).is_err());

    let reset = call(
        &server,
        "streamGenerateContent",
        PROMPT,
        &fault("reset-after=1"),
    )
    .await;
    assert_eq!(reset.status(), 200);
    let mut body = reset.into_body();
    let mut failed = false;
    while let Some(frame) = timeout(BOUND, body.frame()).await.unwrap() {
        if frame.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed);
    assert!(
        send(
            server.addr(),
            post(
                &format!("{MODEL}:generateContent"),
                PROMPT,
                &fault("reset-before-headers")
            )
        )
        .await
        .is_err()
    );
    let started = Instant::now();
    let (status, _) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &fault("slow-headers=60"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn configured_outcome_and_header_opt_out() {
    let config = MockConfig::default().with_gemini_outcome("blocked=OTHER".parse().unwrap());
    let server = MockServer::start(config).await.unwrap();
    let (_, v) = call_json(&server, "generateContent", PROMPT, &[]).await;
    assert_eq!(v["promptFeedback"]["blockReason"], "OTHER");
    let (_, v) = call_json(
        &server,
        "generateContent",
        PROMPT,
        &[("x-mock-gemini", "none")],
    )
    .await;
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn count_tokens_matches_prompt_tokens() {
    let server = server().await;
    let (_, generated) = call_json(&server, "generateContent", PROMPT, &[]).await;
    let count_body = r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}"#;
    let (status, v) = call_json(&server, "countTokens", count_body, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["totalTokens"],
        generated["usageMetadata"]["promptTokenCount"]
    );
    assert_eq!(v["promptTokensDetails"][0]["tokenCount"], v["totalTokens"]);
    let (status, _) = call_json(&server, "countTokens", "{}", &[]).await;
    assert_eq!(status, 400);
    let unavailable = [("x-mock-gemini", "error=UNAVAILABLE")];
    let (status, v) = call_json(&server, "countTokens", count_body, &unavailable).await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["status"], "UNAVAILABLE");
}
