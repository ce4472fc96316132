//! An OpenAI chat completion as a Gemini `GenerateContentResponse`: choices to candidates,
//! tool calls to function calls, finish reasons and usage to Gemini's terms.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::{ErrorKind, GatewayError};

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(borrow, default)]
    model: Option<&'a str>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a str>,
}

/// A field's value, with JSON `null` read as its default: servers write `"tool_calls":
/// null` or `"name": null` where OpenAI leaves the field out.
pub(super) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(borrow, default)]
    pub(super) content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub(super) tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCall<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) function: Function<'a>,
    /// Gemini 3's signature of the call, as Tollgate's Vertex translation hands it out.
    #[serde(default)]
    pub(super) extra_content: Option<Value>,
}

impl ToolCall<'_> {
    pub(super) fn thought_signature(&self) -> Option<&str> {
        self.extra_content.as_ref()?["google"]["thought_signature"].as_str()
    }
}

#[derive(Deserialize)]
pub(super) struct Function<'a> {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) name: std::borrow::Cow<'a, str>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) arguments: std::borrow::Cow<'a, str>,
}

/// OpenAI's usage, with the details Gemini reports apart.
#[derive(Clone, Copy, Default, Deserialize)]
pub(super) struct Usage {
    #[serde(default, deserialize_with = "null_as_default")]
    prompt_tokens: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Clone, Copy, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Clone, Copy, Default, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

/// Gemini's `finishReason` for an OpenAI `finish_reason`.
pub fn finish_reason(openai: &str) -> &'static str {
    match openai {
        "stop" | "tool_calls" | "function_call" => "STOP",
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        _ => "OTHER",
    }
}

/// Gemini's `usageMetadata` for OpenAI's usage: reasoning tokens are thoughts, reported
/// apart from the candidates' tokens.
pub(super) fn usage_metadata(usage: &Usage) -> Value {
    let thoughts = usage
        .completion_tokens_details
        .map_or(0, |d| d.reasoning_tokens)
        .min(usage.completion_tokens);
    let mut out = json!({
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": usage.completion_tokens - thoughts,
        "totalTokenCount": usage.prompt_tokens.saturating_add(usage.completion_tokens),
    });
    if thoughts > 0 {
        out["thoughtsTokenCount"] = json!(thoughts);
    }
    if let Some(cached) = usage.prompt_tokens_details.map(|d| d.cached_tokens)
        && cached > 0
    {
        out["cachedContentTokenCount"] = json!(cached);
    }
    out
}

/// Gemini's function-call part for an OpenAI tool call: arguments must be an object.
pub(super) fn function_call_part(call: &ToolCall<'_>) -> Value {
    let args: Value = serde_json::from_str::<&RawValue>(&call.function.arguments)
        .ok()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut call_json = json!({"name": call.function.name, "args": args});
    if let Some(id) = &call.id {
        call_json["id"] = json!(id);
    }
    let mut part = json!({"functionCall": call_json});
    if let Some(signature) = call.thought_signature() {
        part["thoughtSignature"] = json!(signature);
    }
    part
}

/// The parts of an assistant message: its text (or refusal) and its tool calls.
pub(super) fn message_parts(message: &Message<'_>) -> Vec<Value> {
    let mut parts = Vec::new();
    let text = message.content.as_deref().or(message.refusal.as_deref());
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        parts.push(json!({"text": text}));
    }
    parts.extend(message.tool_calls.iter().map(function_call_part));
    parts
}

/// Gemini's `promptFeedback` for an answer that is only a content-filter refusal (what the
/// Vertex translation makes of a blocked prompt): a blocked prompt has no candidates.
fn prompt_block(completion: &Completion<'_>) -> Option<Value> {
    let [choice] = completion.choices.as_slice() else {
        return None;
    };
    let message = choice.message.as_ref()?;
    let refused = choice.finish_reason == Some("content_filter")
        && message.content.as_deref().is_none_or(str::is_empty)
        && message.tool_calls.is_empty();
    let why = message.refusal.as_deref().filter(|_| refused)?;
    let reason = why
        .strip_prefix("the prompt was blocked (")
        .and_then(|rest| rest.split_once(')'))
        .map_or("OTHER", |(reason, _)| reason);
    Some(json!({"blockReason": reason, "blockReasonMessage": why}))
}

/// The Gemini response for a whole OpenAI chat completion `body`.
pub fn generate_content_response(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let not_a_completion = |why: String| {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!("upstream answered with a body that is not a chat completion: {why}"),
        )
    };
    if !super::is_object(body) {
        return Err(not_a_completion("not a JSON object".into()));
    }
    let completion: Completion<'_> =
        serde_json::from_slice(body).map_err(|err| not_a_completion(err.to_string()))?;
    let candidates: Vec<Value> = completion
        .choices
        .iter()
        .map(|choice| {
            let parts = choice
                .message
                .as_ref()
                .map(message_parts)
                .unwrap_or_default();
            json!({
                "content": {"role": "model", "parts": parts},
                "finishReason": finish_reason(choice.finish_reason.unwrap_or("stop")),
                "index": choice.index,
            })
        })
        .collect();
    let mut out = match prompt_block(&completion) {
        Some(feedback) => json!({"promptFeedback": feedback}),
        None => json!({"candidates": candidates}),
    };
    if let Some(usage) = &completion.usage {
        out["usageMetadata"] = usage_metadata(usage);
    }
    if let Some(model) = completion.model {
        out["modelVersion"] = json!(model);
    }
    if let Some(id) = completion.id {
        out["responseId"] = json!(id);
    }
    serde_json::to_vec(&out).map_err(|err| {
        GatewayError::new(
            ErrorKind::Internal,
            format!("cannot encode the Gemini response: {err}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(completion: Value) -> Value {
        let body = serde_json::to_vec(&completion).unwrap();
        serde_json::from_slice(&generate_content_response(&body).unwrap()).unwrap()
    }

    #[test]
    fn text_answer_with_usage() {
        let out = translate(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "llama-3",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 5}}
        }));
        assert_eq!(
            out,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 7,
                    "thoughtsTokenCount": 5, "totalTokenCount": 21, "cachedContentTokenCount": 4},
                "modelVersion": "llama-3", "responseId": "chatcmpl-1"
            })
        );
    }

    #[test]
    fn tool_calls_become_function_calls() {
        let out = translate(
            json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "not json"}}]}}]}),
        );
        assert_eq!(
            out["candidates"][0]["content"]["parts"],
            json!([
                {"functionCall": {"id": "c1", "name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"id": "c2", "name": "time", "args": {}}}
            ])
        );
        assert_eq!(out["candidates"][0]["finishReason"], "STOP");
    }

    #[test]
    fn nulls_signatures_and_blocked_prompts() {
        let out = translate(
            json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "ok", "tool_calls": null}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": null}}),
        );
        assert_eq!(
            out["candidates"][0]["content"]["parts"],
            json!([{"text": "ok"}])
        );
        assert_eq!(out["usageMetadata"]["candidatesTokenCount"], 0);
        let out = translate(
            json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{}"},
                "extra_content": {"google": {"thought_signature": "U0lH"}}}]}}]}),
        );
        assert_eq!(
            out["candidates"][0]["content"]["parts"][0]["thoughtSignature"],
            "U0lH"
        );
        let out = translate(
            json!({"choices": [{"index": 0, "finish_reason": "content_filter",
            "message": {"role": "assistant", "content": null,
                "refusal": "the prompt was blocked (PROHIBITED_CONTENT): no"}}]}),
        );
        assert!(out.get("candidates").is_none());
        assert_eq!(out["promptFeedback"]["blockReason"], "PROHIBITED_CONTENT");
    }

    #[test]
    fn finish_reasons() {
        for (openai, gemini) in [
            ("stop", "STOP"),
            ("length", "MAX_TOKENS"),
            ("content_filter", "SAFETY"),
            ("tool_calls", "STOP"),
            ("function_call", "STOP"),
            ("eos", "OTHER"),
        ] {
            assert_eq!(finish_reason(openai), gemini);
        }
    }

    #[test]
    fn a_body_that_is_not_a_completion_is_an_upstream_error() {
        let err = generate_content_response(b"[]").unwrap_err();
        assert_eq!(err.kind, ErrorKind::UpstreamProtocol);
    }
}
