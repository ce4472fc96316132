//! Tests of the Gemini -> OpenAI response translation.

use super::*;
use serde_json::{Value, json};

fn completion(gemini: Value) -> Value {
    let body = serde_json::to_vec(&gemini).unwrap();
    serde_json::from_slice(&chat_completion(&body, "gemini-2.5-flash", 1_700_000_000).unwrap())
        .unwrap()
}

#[test]
fn text_answer_with_usage_and_model_version() {
    let out = completion(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me think", "thought": true},
            {"text": "Hello, "}, {"text": "world"}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4,
            "thoughtsTokenCount": 6, "totalTokenCount": 20, "cachedContentTokenCount": 3},
        "modelVersion": "gemini-2.5-flash-001", "responseId": "r1"
    }));
    assert_eq!(
        out,
        json!({
            "id": "chatcmpl-r1", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "gemini-2.5-flash-001",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello, world"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 3},
                "completion_tokens_details": {"reasoning_tokens": 6}}
        })
    );
}

#[test]
fn function_calls_become_tool_calls() {
    let out = completion(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
            {"functionCall": {"id": "g-7", "name": "time", "args": {}}},
            {"functionCall": {"name": "noargs"}}
        ]}, "finishReason": "STOP"}],
        "responseId": "r2"
    }));
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id": "call_r2_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "g-7", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            {"id": "call_r2_2", "type": "function", "function": {"name": "noargs", "arguments": "{}"}}
        ])
    );
    assert!(out.get("usage").is_none());
    assert_eq!(out["model"], "gemini-2.5-flash");
}

#[test]
fn every_finish_reason() {
    let table = [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MODEL_ARMOR", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ];
    for (gemini, openai) in table {
        let out = completion(
            json!({"candidates": [{"content": {"parts": [{"text": "x"}]},
            "finishReason": gemini}]}),
        );
        assert_eq!(out["choices"][0]["finish_reason"], openai, "{gemini}");
    }
    // A safety stop outranks the tool calls made before it.
    assert_eq!(finish_reason("SAFETY", true), "content_filter");
    assert_eq!(finish_reason("MAX_TOKENS", true), "length");
}

#[test]
fn several_candidates_keep_their_indexes() {
    let out = completion(json!({"candidates": [
        {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}
    ]}));
    assert_eq!(out["choices"][1]["index"], 1);
    assert_eq!(out["choices"][1]["message"]["content"], "b");
    assert_eq!(out["choices"][1]["finish_reason"], "length");
}

#[test]
fn a_blocked_prompt_is_a_content_filter_refusal() {
    let out = completion(json!({
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "not allowed"},
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}
    }));
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["refusal"],
        "the prompt was blocked (PROHIBITED_CONTENT): not allowed"
    );
    assert_eq!(out["usage"]["prompt_tokens"], 5);
    assert_eq!(out["usage"]["completion_tokens"], 0);
}

#[test]
fn a_candidate_without_content_is_an_empty_answer() {
    let out = completion(json!({"candidates": [{"finishReason": "SAFETY"}]}));
    assert!(out["choices"][0]["message"]["content"].is_null());
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn a_body_that_is_not_a_response_is_an_upstream_protocol_error() {
    let err = chat_completion(b"[1,2]", "m", 0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
}

#[test]
fn signed_calls_carry_their_signature_and_ids_never_repeat() {
    let gemini = json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}]});
    let first = completion(gemini.clone());
    let call = &first["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        call["extra_content"],
        json!({"google": {"thought_signature": "c2ln"}})
    );
    // Without a responseId the ids are random, so a later turn's call_..._0 is another id.
    let second = completion(gemini);
    assert_ne!(
        call["id"],
        second["choices"][0]["message"]["tool_calls"][0]["id"]
    );
}

#[test]
fn huge_token_counts_saturate() {
    let out = completion(json!({"candidates": [], "usageMetadata": {
        "promptTokenCount": u64::MAX, "candidatesTokenCount": 5, "thoughtsTokenCount": u64::MAX}}));
    assert_eq!(out["usage"]["completion_tokens"], u64::MAX);
    assert_eq!(out["usage"]["total_tokens"], u64::MAX);
}
