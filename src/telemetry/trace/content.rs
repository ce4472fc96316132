//! Prompt and completion content in the OTel GenAI message format, for routes that opt in
//! (`gen_ai.input.messages`, `gen_ai.output.messages`: JSON strings of role and parts).
//!
//! Built when the spans are encoded (once the response is out), from the raw request field and
//! the collected answer text.

use serde_json::{Value, json};

use crate::telemetry::metrics::Operation;
use crate::upstream::openai_view::FinishReason;

/// `input` is the request's `messages` (chat), `prompt` (completions) or `input`
/// (embeddings) as raw JSON.
pub fn input_messages(op: Operation, input: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(input).ok()?;
    let messages: Vec<Value> = match op {
        Operation::Chat => value
            .as_array()?
            .iter()
            .map(|message| {
                let role = message
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("user");
                json!({"role": role, "parts": parts(message.get("content"))})
            })
            .collect(),
        Operation::TextCompletion | Operation::Embeddings => {
            vec![json!({"role": "user", "parts": parts(Some(&value))})]
        }
    };
    serde_json::to_string(&messages).ok()
}

/// The parts of one message's content: text stays text, anything else keeps only its type.
fn parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(text)) => vec![json!({"type": "text", "content": text})],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => json!({"type": "text", "content": text}),
                Value::Object(part) => match (part.get("type"), part.get("text")) {
                    (Some(kind), Some(text)) if kind == "text" => {
                        json!({"type": "text", "content": text})
                    }
                    (Some(kind), _) => json!({"type": kind}),
                    _ => json!({"type": "unknown"}),
                },
                other => json!({"type": "text", "content": other.to_string()}),
            })
            .collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![json!({"type": "text", "content": other.to_string()})],
    }
}

/// The answer as one assistant message.
pub fn output_messages(text: &str, finish: Option<&FinishReason>) -> String {
    let mut message = json!({
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
    });
    if let Some(reason) = finish {
        message["finish_reason"] = json!(reason.as_str());
    }
    json!([message]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_become_role_and_parts() {
        let input = br#"[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:..."}}]}]"#;
        let json: Value =
            serde_json::from_str(&input_messages(Operation::Chat, input).unwrap()).unwrap();
        assert_eq!(
            json,
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                {"role": "user", "parts": [{"type": "text", "content": "hi"}, {"type": "image_url"}]}
            ])
        );
    }

    #[test]
    fn prompts_become_one_user_message() {
        let json: Value = serde_json::from_str(
            &input_messages(Operation::TextCompletion, br#""once upon""#).unwrap(),
        )
        .unwrap();
        assert_eq!(
            json,
            json!([{"role": "user", "parts": [{"type": "text", "content": "once upon"}]}])
        );
    }

    #[test]
    fn output_is_one_assistant_message_with_its_finish_reason() {
        let json: Value =
            serde_json::from_str(&output_messages("hello", Some(&FinishReason::Stop))).unwrap();
        assert_eq!(
            json,
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}])
        );
    }
}
