//! Borrowed views of OpenAI-format answers: just the usage, finish reasons and errors.
//!
//! Stream chunks and whole responses share one shape for these fields, so one parser serves
//! both. Everything else in the JSON is skipped without allocation; `choices` is walked
//! element by element instead of being collected into a `Vec`.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Token usage as reported upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// The part of the prompt served from the upstream's prompt cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// The part of the completion spent on reasoning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

/// Why generation stopped. The common values are variants so the hot path does not allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
    Other(Box<str>),
}

impl FinishReason {
    pub fn parse(text: &str) -> FinishReason {
        match text {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            other => FinishReason::Other(other.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
            FinishReason::Other(text) => text,
        }
    }
}

/// What the gateway reads from one chunk or one whole response.
#[derive(Debug, Default, Deserialize)]
pub struct AnswerView<'a> {
    /// `id` and `model` of the answer, borrowed (raw, as they are read only for spans).
    #[serde(default, borrow)]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub choices: ChoicesView<'a>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Present on mid-stream error events (`data: {"error":{...}}`).
    #[serde(default, borrow)]
    pub error: Option<&'a serde_json::value::RawValue>,
}

/// A raw JSON string as text (`None` if it is not a string). Borrowed when it has no
/// escapes, which ids and model names never do: the parser already checked the rest.
pub fn raw_str(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let text = raw.get();
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Some(std::borrow::Cow::Borrowed(inner));
    }
    serde_json::from_str::<std::borrow::Cow<'_, str>>(text).ok()
}

/// The text of a raw content holder: a `text` string, or the `content` string of a `delta`
/// or `message` object.
pub fn content_text(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Holder<'a> {
        #[serde(default, borrow)]
        content: Option<std::borrow::Cow<'a, str>>,
    }
    if let Ok(text) = serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()) {
        return Some(text.into_owned());
    }
    let holder: Holder<'_> = serde_json::from_str(raw.get()).ok()?;
    holder.content.map(std::borrow::Cow::into_owned)
}

impl<'a> AnswerView<'a> {
    pub fn parse(json: &'a [u8]) -> Result<AnswerView<'a>, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// A chunk that carries usage and no choices: the extra chunk `include_usage` asks for.
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.count == 0 && self.error.is_none()
    }
}

/// The parts of `choices` the gateway needs, gathered without collecting the array.
#[derive(Debug, Default)]
pub struct ChoicesView<'a> {
    /// Number of choices in this chunk (`null` counts as zero).
    pub count: usize,
    /// The last non-null `finish_reason` among them.
    pub finish_reason: Option<FinishReason>,
    /// The first choice's content holder, raw: `delta` (stream chunks), `message` (chat
    /// answers) or `text` (completions). Decoded only for routes that record content.
    pub content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ChoicesView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ChoicesVisitor<'a> {
            type Value = ChoicesView<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices or null")
            }
            fn visit_unit<E>(self) -> Result<ChoicesView<'a>, E> {
                Ok(ChoicesView::default())
            }
            fn visit_none<E>(self) -> Result<ChoicesView<'a>, E> {
                Ok(ChoicesView::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ChoicesView<'a>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChoicesView<'a>, A::Error> {
                let mut view = ChoicesView::default();
                while let Some(choice) = seq.next_element::<ChoiceView<'de>>()? {
                    if view.count == 0 {
                        view.content = choice.delta.or(choice.message).or(choice.text);
                    }
                    view.count += 1;
                    if let Some(reason) = choice.finish_reason {
                        view.finish_reason = Some(FinishReason::parse(&reason));
                    }
                }
                Ok(view)
            }
        }
        deserializer.deserialize_option(ChoicesVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn raw_strings_are_borrowed_unless_escaped() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let plain = raw(r#""chatcmpl-1""#);
        assert!(matches!(raw_str(&plain), Some(Cow::Borrowed("chatcmpl-1"))));
        let escaped = raw(r#""a\"b\u00e9""#);
        assert_eq!(raw_str(&escaped).as_deref(), Some("a\"bé"));
        assert_eq!(raw_str(&raw("12")), None);
        assert_eq!(raw_str(&raw(r#""""#)).as_deref(), Some(""));
    }

    #[test]
    fn reads_content_chunk() {
        let view = AnswerView::parse(
            br#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi \"there\""},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(view.choices.count, 1);
        assert_eq!(view.choices.finish_reason, None);
        assert!(!view.is_usage_only());
    }

    #[test]
    fn reads_usage_chunk_with_empty_or_null_choices() {
        for choices in ["[]", "null"] {
            let json = format!(
                r#"{{"choices":{choices},"usage":{{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}}}"#
            );
            let view = AnswerView::parse(json.as_bytes()).unwrap();
            assert!(view.is_usage_only(), "{choices}");
            assert_eq!(view.usage.unwrap().total_tokens, 12);
        }
    }

    #[test]
    fn usage_on_last_content_chunk_is_not_usage_only() {
        let view = AnswerView::parse(
            br#"{"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .unwrap();
        assert!(!view.is_usage_only());
        assert_eq!(view.choices.finish_reason, Some(FinishReason::Length));
    }

    #[test]
    fn reads_whole_response_and_error_event() {
        let view = AnswerView::parse(
            br#"{"choices":[{"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(view.choices.finish_reason, Some(FinishReason::Stop));
        let err =
            AnswerView::parse(br#"{"error":{"message":"boom","type":"server_error"}}"#).unwrap();
        assert!(err.error.is_some());
    }

    #[test]
    fn finish_reason_round_trips() {
        for text in [
            "stop",
            "length",
            "tool_calls",
            "content_filter",
            "function_call",
            "eos",
        ] {
            assert_eq!(FinishReason::parse(text).as_str(), text);
        }
    }
}
