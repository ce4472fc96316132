//! A Gemini `GenerateContentResponse` as an OpenAI chat completion: text and function calls
//! to the assistant message, finish reasons and usage to OpenAI's terms.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ErrorKind, GatewayError};

/// The parts of a Gemini response an OpenAI client sees. Also one event of a stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeminiResponse<'a> {
    #[serde(borrow, default)]
    pub candidates: Vec<Candidate<'a>>,
    #[serde(borrow, default)]
    pub prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    pub model_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub response_id: Option<Cow<'a, str>>,
    /// Set on a stream's error event instead of everything else.
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate<'a> {
    #[serde(borrow, default)]
    pub content: Option<CandidateContent<'a>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub index: Option<u32>,
}

#[derive(Deserialize)]
pub struct CandidateContent<'a> {
    #[serde(borrow, default)]
    pub parts: Vec<GeminiPart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeminiPart<'a> {
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// A thought summary: reasoning, not answer text.
    #[serde(default)]
    pub thought: bool,
    #[serde(borrow, default)]
    pub function_call: Option<GeminiFunctionCall<'a>>,
    /// Gemini 3 signs its function calls; the signature must come back with the call.
    #[serde(borrow, default)]
    pub thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct GeminiFunctionCall<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback<'a> {
    #[serde(borrow, default)]
    pub block_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub block_reason_message: Option<Cow<'a, str>>,
}

/// Token counts. In a stream they are cumulative: the last event's are the totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
}

/// OpenAI's usage object for Gemini's counts: thoughts are output tokens (OpenAI counts
/// reasoning inside `completion_tokens`), cached tokens are part of the prompt.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct OpenAiUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: CachedTokens,
    pub completion_tokens_details: ReasoningTokens,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct CachedTokens {
    pub cached_tokens: u64,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ReasoningTokens {
    pub reasoning_tokens: u64,
}

impl From<UsageMetadata> for OpenAiUsage {
    fn from(usage: UsageMetadata) -> Self {
        // Saturating: the counts come from the upstream and must not wrap or panic.
        let completion = usage
            .candidates_token_count
            .saturating_add(usage.thoughts_token_count);
        Self {
            prompt_tokens: usage.prompt_token_count,
            completion_tokens: completion,
            total_tokens: usage.prompt_token_count.saturating_add(completion),
            prompt_tokens_details: CachedTokens {
                cached_tokens: usage.cached_content_token_count,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: usage.thoughts_token_count,
            },
        }
    }
}

/// OpenAI's `finish_reason` for Gemini's `finishReason`. A candidate that called functions
/// and stopped finished with `tool_calls`.
pub fn finish_reason(gemini: &str, called_tools: bool) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY" | "PROHIBITED_CONTENT" | "SPII" | "BLOCKLIST" | "MODEL_ARMOR" | "RECITATION"
        | "IMAGE_SAFETY" => "content_filter",
        _ if called_tools => "tool_calls",
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED and reasons added
        // later: the answer ended without one of the causes OpenAI names.
        _ => "stop",
    }
}

/// The id of a candidate's `n`th function call: Gemini's own when it sent one, else made
/// from the response id, so every event of a stream names a call the same way.
pub fn tool_call_id(call: &GeminiFunctionCall<'_>, response_id: &str, n: usize) -> String {
    match &call.id {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("call_{response_id}_{n}"),
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OpenAiUsage>,
}

#[derive(Serialize)]
struct Choice {
    index: u32,
    message: AssistantMessage,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<String>,
}

#[derive(Serialize)]
pub struct OutToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: OutFunction,
    /// `{"google": {"thought_signature": ...}}` when Gemini signed the call, as Google's
    /// OpenAI-compatible layer does: clients send it back with the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<serde_json::Value>,
}

#[derive(Serialize)]
pub struct OutFunction {
    pub name: String,
    /// JSON text, as OpenAI clients expect it.
    pub arguments: String,
}

/// The OpenAI tool call for a Gemini function call, with the part's thought signature.
pub fn out_tool_call(
    call: &GeminiFunctionCall<'_>,
    id: String,
    signature: Option<&str>,
) -> OutToolCall {
    OutToolCall {
        id,
        kind: "function",
        function: OutFunction {
            name: call.name.to_string(),
            arguments: call
                .args
                .map_or_else(|| "{}".to_owned(), |a| a.get().to_owned()),
        },
        extra_content: signature
            .map(|signature| serde_json::json!({"google": {"thought_signature": signature}})),
    }
}

/// A response's id, or a random one when Gemini sent none: tool-call ids are made from it,
/// and must not repeat from one turn to the next.
pub fn response_id_or_random(id: Option<&str>) -> String {
    match id {
        Some(id) => id.to_owned(),
        None => format!("gen{:016x}", fastrand::u64(..)),
    }
}

/// Why a prompt was refused, when Gemini refused it: no candidates, a block reason.
pub fn prompt_block(response: &GeminiResponse<'_>) -> Option<String> {
    let feedback = response.prompt_feedback.as_ref()?;
    let reason = feedback.block_reason.as_deref()?;
    if !response.candidates.is_empty() {
        return None;
    }
    Some(match feedback.block_reason_message.as_deref() {
        Some(message) => format!("the prompt was blocked ({reason}): {message}"),
        None => format!("the prompt was blocked ({reason})"),
    })
}

/// The OpenAI chat completion for a whole Gemini answer. `model` names the answer when
/// Gemini did not (`modelVersion`); `created` is the answer's Unix time.
pub fn chat_completion(body: &[u8], model: &str, created: u64) -> Result<Vec<u8>, GatewayError> {
    let response: GeminiResponse<'_> = serde_json::from_slice(body).map_err(|err| {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!("Gemini answered with a body that is not a GenerateContentResponse: {err}"),
        )
    })?;
    let response_id = response_id_or_random(response.response_id.as_deref());
    let response_id = response_id.as_str();
    // A blocked prompt is a content-filter outcome, not an empty success.
    let choices = match prompt_block(&response) {
        Some(why) => vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: None,
                tool_calls: Vec::new(),
                refusal: Some(why),
            },
            finish_reason: "content_filter",
        }],
        None => (response.candidates.iter().enumerate())
            .map(|(n, candidate)| choice(candidate, n, response_id))
            .collect(),
    };
    let completion = Completion {
        id: format!("chatcmpl-{response_id}"),
        object: "chat.completion",
        created,
        model: response.model_version.as_deref().unwrap_or(model),
        choices,
        usage: response.usage_metadata.map(OpenAiUsage::from),
    };
    serde_json::to_vec(&completion).map_err(|err| {
        GatewayError::new(
            ErrorKind::Internal,
            format!("cannot encode the chat completion: {err}"),
        )
    })
}

fn choice(candidate: &Candidate<'_>, n: usize, response_id: &str) -> Choice {
    let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in parts.iter().filter(|part| !part.thought) {
        if let Some(piece) = &part.text {
            text.get_or_insert_with(String::new).push_str(piece);
        }
        if let Some(call) = &part.function_call {
            let id = tool_call_id(call, response_id, tool_calls.len());
            tool_calls.push(out_tool_call(call, id, part.thought_signature.as_deref()));
        }
    }
    let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
    Choice {
        index: candidate.index.unwrap_or(n as u32),
        finish_reason: finish_reason(reason, !tool_calls.is_empty()),
        message: AssistantMessage {
            role: "assistant",
            content: text,
            tool_calls,
            refusal: None,
        },
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
