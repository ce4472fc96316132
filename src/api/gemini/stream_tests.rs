//! Tests of the OpenAI -> Gemini stream translation.

use super::*;

fn run(input: &str, step: usize) -> String {
    let mut translator = ToGemini::new(true);
    let mut out = BytesMut::new();
    for piece in input.as_bytes().chunks(step.max(1)) {
        translator.feed(piece, &mut out);
    }
    String::from_utf8(out.to_vec()).unwrap()
}

/// The data of each event, as JSON.
fn events(output: &str) -> Vec<Value> {
    output
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

fn openai(chunks: &[Value]) -> String {
    let mut out = String::new();
    for chunk in chunks {
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn content(text: &str) -> Value {
    json!({"id": "chatcmpl-9", "model": "llama-3", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

#[test]
fn text_stream_with_usage_on_the_last_event() {
    let input = openai(&[
        json!({"id": "chatcmpl-9", "model": "llama-3", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
        content("Hel"),
        content("lo"),
        json!({"id": "chatcmpl-9", "model": "llama-3", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        json!({"id": "chatcmpl-9", "model": "llama-3", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
    ]);
    let out = events(&run(&input, usize::MAX));
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        out[0]["candidates"][0]["content"]["parts"][0]["text"],
        "Hel"
    );
    assert_eq!(out[1]["candidates"][0]["content"]["parts"][0]["text"], "lo");
    assert_eq!(out[0]["modelVersion"], "llama-3");
    assert_eq!(out[0]["responseId"], "chatcmpl-9");
    assert_eq!(out[2]["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(
        out[2]["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7})
    );
    for step in [1, 3, 17] {
        assert_eq!(run(&input, step), run(&input, usize::MAX), "step {step}");
    }
}

#[test]
fn tool_call_deltas_are_sent_whole_with_the_finish() {
    let call = |delta: Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]});
    let input = openai(&[
        call(
            json!({"index": 0, "id": "c1", "type": "function", "function": {"name": "weather", "arguments": ""}}),
        ),
        call(json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
        call(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})),
        call(json!({"index": 1, "id": "c2", "function": {"name": "time", "arguments": "{}"}})),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ]);
    let out = events(&run(&input, 7));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0]["candidates"][0],
        json!({"content": {"role": "model", "parts": [
            {"functionCall": {"id": "c1", "name": "weather", "args": {"city": "Paris"}}},
            {"functionCall": {"id": "c2", "name": "time", "args": {}}}]},
            "finishReason": "STOP", "index": 0})
    );
}

#[test]
fn an_error_event_ends_the_stream_in_googles_format() {
    let input = format!(
        "data: {}\n\ndata: {{\"error\":{{\"message\":\"upstream stream was cut\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_stream_truncated\"}}}}\n\n",
        content("Hi")
    );
    let out = events(&run(&input, 5));
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1],
        json!({"error": {"code": 502, "message": "upstream stream was cut", "status": "UNAVAILABLE"}})
    );
}

#[test]
fn keep_alives_and_a_missing_done_send_nothing_extra() {
    let out = run(&format!(": keep-alive\n\ndata: {}\n\n", content("x")), 4);
    assert_eq!(events(&out).len(), 1);
}

#[test]
fn the_json_array_framing() {
    let input = openai(&[
        content("a"),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ]);
    let mut translator = ToGemini::new(false);
    let mut out = BytesMut::new();
    for piece in input.as_bytes().chunks(5) {
        translator.feed(piece, &mut out);
    }
    translator.finish(&mut out);
    let array: Vec<Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(array.len(), 2);
    assert_eq!(array[1]["candidates"][0]["finishReason"], "STOP");
    let mut empty = BytesMut::new();
    ToGemini::new(false).finish(&mut empty);
    assert_eq!(&empty[..], b"[]");
}

#[test]
fn nulls_do_not_lose_text_and_an_error_does_not_lose_finished_calls() {
    let input = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\",\"tool_calls\":null}}]}\n\n";
    let out = events(&run(input, usize::MAX));
    assert_eq!(
        out[0]["candidates"][0]["content"]["parts"][0]["text"],
        "Hello"
    );

    let input = format!(
        "data: {}\n\ndata: {}\n\ndata: {{\"error\":{{\"message\":\"cut\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_stream_truncated\"}}}}\n\n",
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1",
            "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": "U0lH"}}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    );
    let out = events(&run(&input, 9));
    assert_eq!(out.len(), 2, "{out:?}");
    let part = &out[0]["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "f");
    assert_eq!(part["thoughtSignature"], "U0lH");
    assert_eq!(out[1]["error"]["status"], "UNAVAILABLE");
}

#[test]
fn a_tool_call_larger_than_an_event_ends_the_stream() {
    let piece = "x".repeat(1024 * 1024);
    let mut input = String::new();
    for _ in 0..9 {
        let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": piece}}]}}]});
        input.push_str(&format!("data: {chunk}\n\n"));
    }
    let out = events(&run(&input, usize::MAX));
    assert_eq!(out.len(), 1);
    assert!(
        out[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );
}
