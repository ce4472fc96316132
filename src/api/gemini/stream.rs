//! An OpenAI chunk stream (as the tee hands it to the client) as a Gemini SSE stream: text
//! deltas become events at once; a choice's tool-call deltas are gathered and sent whole
//! (Gemini sends complete function calls) with its finish reason; the usage chunk rides on
//! the last event; `[DONE]` ends the stream without a marker, as Gemini's do.

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::{Value, json};

use super::errors;
use super::response::{
    Function, ToolCall, Usage, finish_reason, function_call_part, null_as_default, usage_metadata,
};
use crate::upstream::sse::{EventData, SseSplitter, event_data};
use crate::upstream::tee::MAX_EVENT_BYTES;

/// Most choices a stream may carry, and most tool calls one choice may gather.
pub const MAX_CHOICES: usize = 8;
const MAX_TOOL_CALLS: usize = 128;

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(borrow, default)]
    model: Option<&'a str>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a str>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    tool_calls: Vec<ToolCallDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
    #[serde(default)]
    extra_content: Option<Value>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

/// A tool call being gathered from its deltas.
#[derive(Default)]
struct PendingCall {
    id: Option<String>,
    name: String,
    arguments: String,
    extra_content: Option<Value>,
}

/// What one choice has gathered, and its finish event once it finished.
#[derive(Default)]
struct ChoiceState {
    calls: Vec<PendingCall>,
    finish: Option<&'static str>,
}

/// The translator of one stream.
pub struct ToGemini {
    splitter: SseSplitter,
    pending: Vec<u8>,
    bounds: Vec<usize>,
    model: Option<String>,
    id: Option<String>,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    /// `[DONE]` or an error event came: nothing more is sent.
    ended: bool,
    /// Framing: SSE events (`alt=sse`), or the elements of one JSON array.
    array: Option<ArrayState>,
}

/// Where a JSON-array stream stands: its `[` is written with the first element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    NotOpened,
    Open,
    Closed,
}

impl ToGemini {
    /// `sse`: Gemini's SSE framing (`alt=sse`); otherwise one JSON array written piecewise.
    pub fn new(sse: bool) -> Self {
        Self {
            splitter: SseSplitter::new(),
            pending: Vec::new(),
            bounds: Vec::new(),
            model: None,
            id: None,
            choices: Vec::new(),
            usage: None,
            ended: false,
            array: (!sse).then_some(ArrayState::NotOpened),
        }
    }

    /// The body ended: closes a JSON array.
    pub fn finish(&mut self, out: &mut BytesMut) {
        match self.array {
            Some(ArrayState::NotOpened) => out.put_slice(b"[]"),
            Some(ArrayState::Open) => out.put_slice(b"]"),
            _ => {}
        }
        if self.array.is_some() {
            self.array = Some(ArrayState::Closed);
        }
    }

    /// Translates the events `chunk` completes into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        self.splitter.feed(chunk, |end| bounds.push(end));
        let mut from = 0;
        for &end in &bounds {
            if self.pending.is_empty() {
                self.event(&chunk[from..end], out);
            } else {
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(&chunk[from..end]);
                self.event(&joined, out);
                joined.clear();
                self.pending = joined;
            }
            from = end;
        }
        self.pending.extend_from_slice(&chunk[from..]);
        self.bounds = bounds;
    }

    fn event(&mut self, event: &[u8], out: &mut BytesMut) {
        if self.ended {
            return;
        }
        match event_data(event) {
            EventData::None => {}
            EventData::Done => self.done(out),
            EventData::One(json) => self.chunk(json, out),
            EventData::Joined(json) => self.chunk(&json, out),
        }
    }

    fn chunk(&mut self, json: &[u8], out: &mut BytesMut) {
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(json) else {
            // The tee ends a stream whose events are not JSON with its own error event.
            return;
        };
        if let Some(error) = &chunk.error {
            let message = error["message"].as_str().unwrap_or("upstream error");
            let status = match error["code"].as_str() {
                Some(code) if code.contains("timeout") => http::StatusCode::GATEWAY_TIMEOUT,
                _ => http::StatusCode::BAD_GATEWAY,
            };
            // What finished before the error still reaches the client.
            self.flush(out);
            self.write_element(out, &errors::error_body(status, message));
            self.ended = true;
            return;
        }
        if self.id.is_none() {
            self.id = chunk.id.map(str::to_owned);
        }
        if let Some(model) = chunk.model {
            self.model = Some(model.to_owned());
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let mut too_large = false;
        for choice in chunk.choices.iter().flatten() {
            if choice.index >= MAX_CHOICES {
                continue;
            }
            if self.choices.len() <= choice.index {
                self.choices
                    .resize_with(choice.index + 1, ChoiceState::default);
            }
            let state = &mut self.choices[choice.index];
            let mut text = None;
            if let Some(delta) = &choice.delta {
                text = delta.content.as_deref().or(delta.refusal.as_deref());
                for call in &delta.tool_calls {
                    if call.index >= MAX_TOOL_CALLS {
                        continue;
                    }
                    if state.calls.len() <= call.index {
                        state
                            .calls
                            .resize_with(call.index + 1, PendingCall::default);
                    }
                    let pending = &mut state.calls[call.index];
                    if let Some(id) = call.id {
                        pending.id = Some(id.to_owned());
                    }
                    if call.extra_content.is_some() {
                        pending.extra_content.clone_from(&call.extra_content);
                    }
                    if let Some(function) = &call.function {
                        pending
                            .name
                            .push_str(function.name.as_deref().unwrap_or_default());
                        pending
                            .arguments
                            .push_str(function.arguments.as_deref().unwrap_or_default());
                        // Gathered calls are held in memory: as bounded as one event.
                        too_large |= pending.name.len() + pending.arguments.len() > MAX_EVENT_BYTES;
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                state.finish = Some(finish_reason(reason));
            }
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                let candidate = json!({"content": {"role": "model", "parts": [{"text": text}]},
                    "index": choice.index});
                self.write_response(out, vec![candidate], None);
            }
        }
        if too_large {
            let message = format!("a tool call is larger than {MAX_EVENT_BYTES} bytes");
            self.write_element(
                out,
                &errors::error_body(http::StatusCode::BAD_GATEWAY, &message),
            );
            self.choices.clear();
            self.ended = true;
        }
    }

    /// `[DONE]`: the finished choices (with their gathered calls) in one last event, with
    /// the usage.
    fn done(&mut self, out: &mut BytesMut) {
        self.ended = true;
        self.flush(out);
    }

    /// Writes the choices held back (finished, or with gathered calls) and the usage.
    fn flush(&mut self, out: &mut BytesMut) {
        let choices = std::mem::take(&mut self.choices);
        let candidates: Vec<Value> = choices
            .iter()
            .enumerate()
            .filter(|(_, state)| state.finish.is_some() || !state.calls.is_empty())
            .map(|(index, state)| {
                let parts: Vec<Value> = state
                    .calls
                    .iter()
                    .map(|call| {
                        function_call_part(&ToolCall {
                            id: call.id.as_deref().map(Into::into),
                            function: Function {
                                name: call.name.as_str().into(),
                                arguments: call.arguments.as_str().into(),
                            },
                            extra_content: call.extra_content.clone(),
                        })
                    })
                    .collect();
                json!({"content": {"role": "model", "parts": parts},
                    "finishReason": state.finish.unwrap_or("STOP"), "index": index})
            })
            .collect();
        let usage = self.usage.as_ref().map(usage_metadata);
        if !candidates.is_empty() || usage.is_some() {
            self.write_response(out, candidates, usage);
        }
    }

    fn write_response(&mut self, out: &mut BytesMut, candidates: Vec<Value>, usage: Option<Value>) {
        let mut response = json!({"candidates": candidates});
        if let Some(usage) = usage {
            response["usageMetadata"] = usage;
        }
        if let Some(model) = &self.model {
            response["modelVersion"] = json!(model);
        }
        if let Some(id) = &self.id {
            response["responseId"] = json!(id);
        }
        // A `Value` of strings, numbers and arrays always serializes.
        let bytes = serde_json::to_vec(&response).unwrap_or_default();
        self.write_element(out, &bytes);
    }

    /// One response: `data: JSON` and a blank line in CRLF, as Google sends them, or the
    /// next element of the JSON array.
    fn write_element(&mut self, out: &mut BytesMut, json: &[u8]) {
        match self.array {
            None => {
                out.put_slice(b"data: ");
                out.put_slice(json);
                out.put_slice(b"\r\n\r\n");
            }
            Some(state) => {
                out.put_slice(if state == ArrayState::NotOpened {
                    b"["
                } else {
                    b","
                });
                out.put_slice(json);
                self.array = Some(ArrayState::Open);
            }
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
