//! Tests of the Gemini -> OpenAI stream translation.

use super::*;
use serde_json::{Value, json};

/// Feeds `input` in pieces of `step` bytes, then ends it; returns the output text.
fn run(input: &[u8], step: usize) -> Result<String, String> {
    let mut translator = StreamTranslator::new("gemini-2.5-flash", 1_700_000_000);
    let mut out = BytesMut::new();
    for piece in input.chunks(step.max(1)) {
        translator.feed(piece, &mut out)?;
    }
    translator.finish(&mut out);
    Ok(String::from_utf8(out.to_vec()).unwrap())
}

/// The data of each event: JSON values, `[DONE]` as a string.
fn events(output: &str) -> Vec<Value> {
    output
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event.strip_prefix("data: ").expect(event);
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect()
}

fn sse(responses: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for response in responses {
        out.extend_from_slice(format!("data: {response}\r\n\r\n").as_bytes());
    }
    out
}

fn text_stream() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking", "thought": true}]}}],
               "usageMetadata": {"promptTokenCount": 7, "thoughtsTokenCount": 5}, "modelVersion": "gemini-2.5-flash-001", "responseId": "r9"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
               "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1, "thoughtsTokenCount": 5}, "responseId": "r9"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo \"[x]\""}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 5, "cachedContentTokenCount": 2},
               "modelVersion": "gemini-2.5-flash-001", "responseId": "r9"}),
    ]
}

fn delta(event: &Value) -> &Value {
    &event["choices"][0]["delta"]
}

#[test]
fn sse_text_stream_with_cumulative_usage() {
    let out = events(&run(&sse(&text_stream()), usize::MAX).unwrap());
    assert_eq!(out.len(), 6, "{out:?}");
    // The thought-only event opens the message with its role and no content.
    assert_eq!(delta(&out[0]), &json!({"role": "assistant"}));
    assert_eq!(delta(&out[1]), &json!({"content": "Hel"}));
    assert_eq!(delta(&out[2]), &json!({"content": "lo \"[x]\""}));
    assert_eq!(out[3]["choices"][0]["finish_reason"], "stop");
    for event in &out[..4] {
        assert_eq!(event["id"], "chatcmpl-r9");
        assert_eq!(event["object"], "chat.completion.chunk");
        assert_eq!(event["model"], "gemini-2.5-flash-001");
        assert_eq!(event["created"], 1_700_000_000u64);
        assert!(event.get("usage").is_none());
    }
    // The last usage, not a sum of the three.
    assert_eq!(out[4]["choices"], json!([]));
    assert_eq!(
        out[4]["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15,
               "prompt_tokens_details": {"cached_tokens": 2},
               "completion_tokens_details": {"reasoning_tokens": 5}})
    );
    assert_eq!(out[5], json!("[DONE]"));
}

#[test]
fn every_split_gives_the_same_stream() {
    let whole = run(&sse(&text_stream()), usize::MAX).unwrap();
    for step in [1, 2, 3, 7, 64] {
        assert_eq!(
            run(&sse(&text_stream()), step).unwrap(),
            whole,
            "step {step}"
        );
    }
    let array = serde_json::to_vec_pretty(&text_stream()).unwrap();
    for step in [1, 5, 13, usize::MAX] {
        assert_eq!(run(&array, step).unwrap(), whole, "array, step {step}");
    }
}

#[test]
fn streamed_tool_calls_have_stable_ids_and_running_indexes() {
    let stream = sse(&[
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]}}], "responseId": "t1"}),
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]},
               "finishReason": "STOP"}], "responseId": "t1"}),
    ]);
    let out = events(&run(&stream, 10).unwrap());
    assert_eq!(
        delta(&out[0]),
        &json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_t1_0", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    );
    assert_eq!(
        delta(&out[1])["tool_calls"],
        json!([{"index": 1, "id": "call_t1_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}])
    );
    assert_eq!(out[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out.last().unwrap(), &json!("[DONE]"));
}

#[test]
fn a_blocked_prompt_is_a_content_filter_refusal() {
    let stream = sse(&[json!({"promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 4}})]);
    let out = events(&run(&stream, usize::MAX).unwrap());
    assert_eq!(
        out[0]["choices"][0],
        json!({"index": 0, "delta": {"role": "assistant", "refusal": "the prompt was blocked (SAFETY)"},
               "finish_reason": "content_filter"})
    );
    assert_eq!(out[1]["usage"]["prompt_tokens"], 4);
    assert_eq!(out[2], json!("[DONE]"));
}

#[test]
fn errors_end_the_stream_in_openai_form() {
    let mut stream = sse(&text_stream()[..1]);
    stream.extend_from_slice(
        b"data: {\"error\":{\"code\":429,\"message\":\"slow down\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\n",
    );
    let out = events(&run(&stream, 4).unwrap());
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["error"]["code"], "resource_exhausted");
    assert_eq!(out[1]["error"]["message"], "Vertex AI: slow down");

    let array = br#"[{"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}]"#;
    let out = events(&run(array, 3).unwrap());
    assert_eq!(
        out,
        vec![
            json!({"error": {"message": "Vertex AI: boom", "type": "server_error",
        "param": null, "code": "internal"}})
        ]
    );
}

#[test]
fn a_stream_cut_before_its_finish_reason_gets_no_done() {
    let out = run(&sse(&text_stream()[..2]), 9).unwrap();
    assert!(!out.contains("[DONE]"));
    assert!(!out.contains("usage"));
    assert_eq!(events(&out).len(), 2);
}

#[test]
fn several_candidates_are_told_apart() {
    let stream = sse(&[json!({"candidates": [
        {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
        {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}
    ]})]);
    let out = events(&run(&stream, usize::MAX).unwrap());
    assert_eq!(out[2]["choices"][0]["index"], 1);
    assert_eq!(
        delta(&out[2]),
        &json!({"role": "assistant", "content": "b"})
    );
    assert_eq!(out[3]["choices"][0]["finish_reason"], "length");
    let too_many =
        sse(&[json!({"candidates": [{"index": 8, "content": {"parts": [{"text": "x"}]}}]})]);
    assert!(
        run(&too_many, usize::MAX)
            .unwrap_err()
            .contains("candidate 8")
    );
}

#[test]
fn broken_upstream_events_are_errors() {
    assert!(run(b"data: {not json}\r\n\r\n", usize::MAX).is_err());
    assert!(run(b"data: [1]\r\n\r\n", usize::MAX).is_err());
    let mut translator = StreamTranslator::new("m", 0);
    let mut out = BytesMut::new();
    let huge = vec![b'x'; MAX_EVENT_BYTES + 1];
    translator.feed(b"data: ", &mut out).unwrap();
    assert!(translator.feed(&huge, &mut out).is_err());
}

#[test]
fn a_stream_with_an_unfinished_candidate_gets_no_done() {
    let stream = sse(&[json!({"candidates": [
        {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
        {"index": 1, "content": {"parts": [{"text": "b"}]}}
    ]})]);
    let out = run(&stream, usize::MAX).unwrap();
    assert!(!out.contains("[DONE]"), "{out}");
}

#[test]
fn streamed_signed_calls_carry_their_signature() {
    let stream = sse(&[json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}]})]);
    let out = events(&run(&stream, usize::MAX).unwrap());
    assert_eq!(
        delta(&out[0])["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
        "c2ln"
    );
}
