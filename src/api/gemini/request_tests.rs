//! Tests of the Gemini -> OpenAI request translation.

use super::*;
use serde_json::json;

fn translate(request: Value, stream: bool) -> Result<Value, GatewayError> {
    let body = serde_json::to_vec(&request).unwrap();
    chat_request(&body, "llama", stream, UnsupportedParams::Reject)
        .map(|out| serde_json::from_slice(&out).unwrap())
}

#[test]
fn contents_and_system_instruction_become_messages() {
    let out = translate(
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use French."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "thinking...", "thought": true}, {"text": "Bonjour"}]},
                {"role": "user", "parts": [{"text": "Look: "},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/cat.jpg"}}]},
            ],
            "labels": {"team": "search"}
        }),
        false,
    )
    .unwrap();
    assert_eq!(out["model"], "llama");
    assert!(out.get("stream").is_none());
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "Be brief.\nUse French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": [
                {"type": "text", "text": "Look: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "gs://b/cat.jpg"}},
            ]},
        ])
    );
}

#[test]
fn generation_config_becomes_openai_parameters() {
    let out = translate(
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "generationConfig": {"temperature": 0.3, "topP": 0.8, "topK": 40, "maxOutputTokens": 99,
                "stopSequences": ["END"], "seed": 5, "candidateCount": 2, "presencePenalty": 0.1,
                "frequencyPenalty": 0.2, "responseMimeType": "application/json",
                "responseSchema": {"type": "object"}, "thinkingConfig": {"thinkingBudget": 1024}}}),
        true,
    )
    .unwrap();
    for (name, value) in [
        ("temperature", json!(0.3)),
        ("top_p", json!(0.8)),
        ("top_k", json!(40)),
        ("max_tokens", json!(99)),
        ("stop", json!(["END"])),
        ("seed", json!(5)),
        ("n", json!(2)),
        ("presence_penalty", json!(0.1)),
        ("frequency_penalty", json!(0.2)),
        ("reasoning_effort", json!("low")),
        ("stream", json!(true)),
        ("stream_options", json!({"include_usage": true})),
    ] {
        assert_eq!(out[name], value, "{name}");
    }
    assert_eq!(
        out["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}})
    );
    let json_only = translate(
        json!({"contents": [], "generationConfig": {"responseMimeType": "application/json"}}),
        false,
    )
    .unwrap();
    assert_eq!(json_only["response_format"], json!({"type": "json_object"}));
}

#[test]
fn function_calls_and_responses_pair_up() {
    let out = translate(
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"id": "g7", "name": "weather", "args": {"city": "Rome"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"id": "g7", "name": "weather", "response": {"temp": 18}}},
                    {"functionResponse": {"name": "weather", "response": {"temp": 21}}}]},
            ],
            "tools": [{"functionDeclarations": [{"name": "weather", "description": "now",
                "parametersJsonSchema": {"type": "object"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
        }),
        false,
    )
    .unwrap();
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(
        messages[1]["tool_calls"],
        json!([
            {"id": "call_1_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "g7", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
        ])
    );
    assert!(messages[1]["content"].is_null());
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "g7", "content": "{\"temp\":18}"})
    );
    assert_eq!(messages[3]["tool_call_id"], "call_1_0");
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {"name": "weather", "description": "now", "parameters": {"type": "object"}}}])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "function", "function": {"name": "weather"}})
    );
}

#[test]
fn tool_config_modes() {
    let choice = |mode: &str| {
        translate(
            json!({"contents": [], "toolConfig": {"functionCallingConfig": {"mode": mode}}}),
            false,
        )
        .unwrap()["tool_choice"]
            .clone()
    };
    assert_eq!(choice("NONE"), json!("none"));
    assert_eq!(choice("AUTO"), json!("auto"));
    assert_eq!(choice("ANY"), json!("required"));
    assert!(choice("MODE_UNSPECIFIED").is_null());
}

#[test]
fn bad_requests_are_refused_clearly() {
    let orphan = json!({"contents": [{"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {}}}]}]});
    assert!(
        translate(orphan, false)
            .unwrap_err()
            .message
            .contains("answers no earlier")
    );
    let role = json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]});
    assert!(
        translate(role, false)
            .unwrap_err()
            .message
            .contains("role `system`")
    );
    let unsupported = json!({"contents": [], "safetySettings": [{"category": "X", "threshold": "Y"}],
        "cachedContent": "projects/p/cachedContents/c"});
    let err = translate(unsupported.clone(), false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedParameter);
    assert!(
        err.message.contains("cachedContent, safetySettings"),
        "{}",
        err.message
    );
    let body = serde_json::to_vec(&unsupported).unwrap();
    assert!(chat_request(&body, "m", false, UnsupportedParams::Drop).is_ok());
    assert_eq!(
        translate(json!([1]), false).unwrap_err().kind,
        ErrorKind::InvalidField
    );
    assert_eq!(
        translate(json!([]), false).unwrap_err().kind,
        ErrorKind::InvalidField
    );
}

#[test]
fn tool_turns_signatures_and_the_latest_call_by_name() {
    let out = translate(
        json!({"contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {}}}]},
            {"role": "user", "parts": [{"text": "never mind; and now?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {}}, "thoughtSignature": "U0lH"}]},
            {"role": "tool", "parts": [{"functionResponse": {"name": "w", "response": {"t": 1}}}]},
        ]}),
        false,
    )
    .unwrap();
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(
        messages[3]["tool_calls"][0]["extra_content"],
        json!({"google": {"thought_signature": "U0lH"}})
    );
    // The answer pairs with the call just made, not the one left unanswered.
    assert_eq!(
        messages[4],
        json!({"role": "tool", "tool_call_id": "call_3_0", "content": "{\"t\":1}"})
    );
}

#[test]
fn thinking_budgets_vllm_can_take() {
    let effort = |budget: i64| {
        translate(
            json!({"contents": [], "generationConfig": {"thinkingConfig": {"thinkingBudget": budget}}}),
            false,
        )
        .unwrap()
        .get("reasoning_effort")
        .cloned()
    };
    assert_eq!(effort(0), None);
    assert_eq!(effort(-1), None);
    assert_eq!(effort(100), Some(json!("low")));
    assert_eq!(effort(8192), Some(json!("medium")));
    assert_eq!(effort(30000), Some(json!("high")));
}

#[test]
fn nested_fields_and_too_many_candidates_are_refused() {
    let err = translate(
        json!({"contents": [], "tools": [{"googleSearch": {}}]}),
        false,
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedParameter);
    assert!(
        err.message.contains("tools[0].googleSearch"),
        "{}",
        err.message
    );
    let err = translate(
        json!({"contents": [], "generationConfig": {"candidateCount": 9}}),
        false,
    )
    .unwrap_err();
    assert!(err.message.contains("candidateCount"));
    // Gemini's schema dialect becomes JSON Schema on the way.
    let out = translate(
        json!({"contents": [], "generationConfig": {"responseSchema": {"type": "OBJECT"}}}),
        false,
    )
    .unwrap();
    assert_eq!(
        out["response_format"]["json_schema"]["schema"],
        json!({"type": "object"})
    );
}
