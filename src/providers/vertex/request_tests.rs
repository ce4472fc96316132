//! Tests of the OpenAI -> Gemini request translation.

use super::*;
use serde_json::{Value, json};

fn translate(request: Value) -> Result<Value, GatewayError> {
    translate_with(request, UnsupportedParams::Reject, &[])
}

fn translate_with(
    request: Value,
    unsupported: UnsupportedParams,
    labels: &[(&str, &str)],
) -> Result<Value, GatewayError> {
    let body = serde_json::to_vec(&request).unwrap();
    generate_content(&body, unsupported, labels).map(|out| serde_json::from_slice(&out).unwrap())
}

#[test]
fn system_and_developer_messages_become_the_system_instruction() {
    let out = translate(json!({
        "model": "gemini", "stream": true, "user": "u1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Again \"quoted\""},
        ]
    }))
    .unwrap();
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}, {"text": "Use French."}]})
    );
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Bonjour"}]},
            {"role": "user", "parts": [{"text": "Again \"quoted\""}]},
        ])
    );
    assert_eq!(out["generationConfig"], json!({}));
    assert!(out.get("labels").is_none() && out.get("tools").is_none());
}

#[test]
fn generation_parameters() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 50,
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "stop": ["END", "STOP"],
        "seed": 7, "n": 2, "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    }))
    .unwrap();
    assert_eq!(
        out["generationConfig"],
        json!({
            "temperature": 0.5, "topP": 0.9, "maxOutputTokens": 50, "presencePenalty": 0.1,
            "frequencyPenalty": 0.2, "stopSequences": ["END", "STOP"], "seed": 7,
            "candidateCount": 2, "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"}, "thinkingConfig": {"thinkingBudget": 1024}
        })
    );
    let out = translate(json!({
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 100, "stop": "END", "response_format": {"type": "json_object"}
    }))
    .unwrap();
    assert_eq!(
        out["generationConfig"],
        json!({"maxOutputTokens": 100, "stopSequences": ["END"], "responseMimeType": "application/json"})
    );
}

#[test]
fn every_reasoning_effort_has_a_budget_and_others_are_refused() {
    for (effort, budget) in [
        ("none", 0),
        ("minimal", 128),
        ("low", 1024),
        ("medium", 8192),
        ("high", 24576),
    ] {
        assert_eq!(thinking_budget(effort), Some(budget));
    }
    let err = translate(json!({"messages": [], "reasoning_effort": "max"})).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidField);
    assert_eq!(err.param.as_deref(), Some("reasoning_effort"));
}

#[test]
fn images_as_inline_data_and_file_references() {
    let out = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.JPG", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.webp?x=1"}},
    ]}]}))
    .unwrap();
    assert_eq!(
        out["contents"][0]["parts"],
        json!([
            {"text": "What is this?"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.JPG"}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a.webp?x=1"}},
        ])
    );
}

#[test]
fn content_gemini_cannot_take_is_refused_clearly() {
    let unknown_type = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/picture"}}]}]});
    let err = translate(unknown_type).unwrap_err();
    assert!(err.message.contains("media type"), "{}", err.message);
    let not_base64 = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]});
    assert!(
        translate(not_base64)
            .unwrap_err()
            .message
            .contains("base64")
    );
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]});
    let err = translate(audio).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedParameter);
    assert!(err.message.contains("input_audio"));
    let role = json!({"messages": [{"role": "function", "content": "x"}]});
    assert!(
        translate(role)
            .unwrap_err()
            .message
            .contains("role `function`")
    );
    assert_eq!(
        translate(json!({"messages": "hi"})).unwrap_err().kind,
        ErrorKind::InvalidField
    );
}

#[test]
fn tools_calls_and_answers_round_trip() {
    let out = translate(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\":21}"},
            {"role": "tool", "tool_call_id": "call_b", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required"
    }))
    .unwrap();
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}
            ]},
            // Both answers in one turn, as Gemini wants them.
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "weather", "response": {"content": "sunny"}}}
            ]},
        ])
    );
    assert_eq!(
        out["tools"],
        json!([{"functionDeclarations": [{"name": "weather", "description": "Weather now",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}])
    );
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
}

#[test]
fn tool_choice_modes() {
    let config = |choice: Value| {
        translate(json!({"messages": [], "tool_choice": choice}))
            .map(|out| out["toolConfig"].clone())
    };
    assert_eq!(
        config(json!("none")).unwrap()["functionCallingConfig"]["mode"],
        "NONE"
    );
    assert_eq!(
        config(json!("auto")).unwrap()["functionCallingConfig"]["mode"],
        "AUTO"
    );
    assert_eq!(
        config(json!({"type": "function", "function": {"name": "weather"}})).unwrap(),
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
    );
    assert_eq!(
        config(json!("sometimes")).unwrap_err().param.as_deref(),
        Some("tool_choice")
    );
}

#[test]
fn broken_tool_history_is_refused() {
    let unknown_id =
        json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]});
    assert!(
        translate(unknown_id)
            .unwrap_err()
            .message
            .contains("matches no earlier")
    );
    let no_id = json!({"messages": [{"role": "tool", "content": "x"}]});
    assert!(
        translate(no_id)
            .unwrap_err()
            .message
            .contains("tool_call_id")
    );
    let bad_args = json!({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]});
    assert!(
        translate(bad_args)
            .unwrap_err()
            .message
            .contains("not a JSON object")
    );
}

#[test]
fn unsupported_parameters_are_refused_or_dropped_per_route() {
    let request = json!({"messages": [{"role": "user", "content": "x"}],
        "logit_bias": {"1": 5}, "logprobs": true, "stream_options": {"include_usage": true}});
    let err = translate(request.clone()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedParameter);
    assert!(
        err.message.contains("logit_bias, logprobs"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("stream_options"));
    let out = translate_with(request, UnsupportedParams::Drop, &[]).unwrap();
    assert_eq!(out["contents"][0]["parts"][0]["text"], "x");
    assert!(out.get("logit_bias").is_none());
}

#[test]
fn labels_are_an_object() {
    let out = translate_with(
        json!({"messages": []}),
        UnsupportedParams::Reject,
        &[("tollgate_tenant", "acme"), ("tollgate_version", "v2")],
    )
    .unwrap();
    assert_eq!(
        out["labels"],
        json!({"tollgate_tenant": "acme", "tollgate_version": "v2"})
    );
}

#[test]
fn strict_json_schemas_pass_whole() {
    let schema = json!({"type": "object", "properties": {"q": {"type": "string", "const": "x"}},
        "required": ["q"], "additionalProperties": false, "$defs": {}});
    let out = translate(json!({"messages": [],
        "tools": [{"type": "function", "function": {"name": "search", "strict": true, "parameters": schema}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": schema}}
    }))
    .unwrap();
    assert_eq!(
        out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
        schema
    );
    assert_eq!(out["generationConfig"]["responseJsonSchema"], schema);
}

#[test]
fn empty_text_and_empty_turns_are_left_out() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "assistant", "content": null},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "more"}]},
    ]}))
    .unwrap();
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "f", "response": {"content": "ok"}}},
                {"text": "more"}
            ]},
        ])
    );
}

#[test]
fn a_reused_tool_call_id_answers_the_nearest_call() {
    let call = |name: &str| {
        json!({"role": "assistant", "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}]})
    };
    let out = translate(json!({"messages": [
        {"role": "user", "content": "x"},
        call("search"),
        {"role": "tool", "tool_call_id": "call_0", "content": "found"},
        call("fetch"),
        {"role": "tool", "tool_call_id": "call_0", "content": "fetched"},
    ]}))
    .unwrap();
    let last = &out["contents"][4]["parts"][0]["functionResponse"];
    assert_eq!(last["name"], "fetch");
    assert_eq!(
        out["contents"][2]["parts"][0]["functionResponse"]["name"],
        "search"
    );
}

#[test]
fn thought_signatures_come_back_with_their_calls() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"},
             "extra_content": {"google": {"thought_signature": "c2lnbmVk"}}}]},
    ]}))
    .unwrap();
    assert_eq!(
        out["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2lnbmVk"})
    );
}

#[test]
fn parameters_that_ask_for_nothing_are_not_refused() {
    let out = translate(json!({"messages": [{"role": "user", "content": "x"}],
        "logprobs": false, "parallel_tool_calls": true, "store": false, "logit_bias": null,
        "temperature": null}));
    assert!(out.is_ok(), "{:?}", out.err().map(|e| e.message));
    let err = translate(json!({"messages": [], "parallel_tool_calls": false})).unwrap_err();
    assert!(err.message.contains("parallel_tool_calls"));
}
