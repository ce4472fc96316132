//! A Gemini stream as an OpenAI chunk stream. Gemini sends whole `GenerateContentResponse`s,
//! either as SSE events (`?alt=sse`, CRLF lines, no `[DONE]`) or as the elements of one JSON
//! array written bit by bit; each becomes OpenAI `chat.completion.chunk` events, and a clean
//! end becomes the usage chunk and `[DONE]`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::errors;
use super::response::{
    GeminiResponse, OpenAiUsage, OutToolCall, UsageMetadata, finish_reason, out_tool_call,
    prompt_block, response_id_or_random, tool_call_id,
};
use crate::upstream::sse::{EventData, SseSplitter, event_data};
use crate::upstream::tee::MAX_EVENT_BYTES;

/// Most candidates a stream may carry (Gemini allows up to 8).
const MAX_CANDIDATES: usize = 8;

/// How the upstream frames its responses; known from the first byte that is not blank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Unknown,
    Sse,
    JsonArray,
}

/// What the translator knows of one candidate so far.
#[derive(Clone, Copy, Default)]
struct CandidateState {
    /// The first chunk (with `role`) was sent.
    started: bool,
    /// Tool calls sent so far: the next one's `index`.
    tool_calls: usize,
    /// Its finish reason was sent.
    finished: bool,
}

/// The translator of one stream.
pub struct StreamTranslator {
    framing: Framing,
    splitter: SseSplitter,
    array: ArrayScanner,
    /// Bytes of the event (or array element) not yet complete.
    pending: Vec<u8>,
    /// Start and end of each event the current chunk completes; kept for its allocation.
    bounds: Vec<(usize, usize)>,
    model: String,
    created: u64,
    /// Gemini's response id (or a random one, when it sends none): tool-call ids are made
    /// from it.
    response_id: Option<String>,
    /// `chatcmpl-{response_id}`, the chunks' id.
    id: Option<String>,
    usage: Option<UsageMetadata>,
    candidates: [CandidateState; MAX_CANDIDATES],
    /// A block was seen: a clean end is a complete answer, as when every candidate that
    /// started has finished.
    blocked: bool,
    /// An error event was sent: nothing more follows it.
    failed: bool,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OpenAiUsage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<IndexedToolCall>,
}

#[derive(Serialize)]
struct IndexedToolCall {
    index: usize,
    #[serde(flatten)]
    call: OutToolCall,
}

impl StreamTranslator {
    /// `model` names the chunks until Gemini's `modelVersion` does; `created` is their time.
    pub fn new(model: &str, created: u64) -> Self {
        Self {
            framing: Framing::Unknown,
            splitter: SseSplitter::new(),
            array: ArrayScanner::default(),
            pending: Vec::new(),
            bounds: Vec::new(),
            model: model.to_owned(),
            created,
            response_id: None,
            id: None,
            usage: None,
            candidates: [CandidateState::default(); MAX_CANDIDATES],
            blocked: false,
            failed: false,
        }
    }

    /// Translates what `chunk` completes into `out`. An error ends the stream: the caller
    /// turns it into the client's terminal error event.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), String> {
        if self.failed {
            return Ok(());
        }
        if self.framing == Framing::Unknown {
            self.framing = match chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                None => return Ok(()),
                Some(b'[') => Framing::JsonArray,
                Some(_) => Framing::Sse,
            };
        }
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        match self.framing {
            Framing::Sse => self.splitter.feed(chunk, |end| bounds.push((0, end))),
            _ => self
                .array
                .feed(chunk, |start, end| bounds.push((start, end))),
        }
        let translated = self.translate_events(chunk, &bounds, out);
        self.bounds = bounds;
        translated
    }

    /// Translates the events of `chunk` that end at `bounds`, and keeps the start of the next.
    fn translate_events(
        &mut self,
        chunk: &[u8],
        bounds: &[(usize, usize)],
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let mut from = 0;
        for &(start, end) in bounds {
            let begin = start.max(from);
            if self.pending.is_empty() {
                self.event(&chunk[begin..end], out)?;
            } else {
                // The event began in an earlier chunk: join it (the buffer is kept for reuse).
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(&chunk[begin..end]);
                self.event(&joined, out)?;
                joined.clear();
                self.pending = joined;
            }
            from = end;
            if self.failed {
                return Ok(());
            }
        }
        // The start of the next event, held until its end arrives.
        let keep = match self.framing {
            Framing::JsonArray => self.array.open_at,
            _ => Some(from),
        };
        if let Some(keep) = keep.filter(|&k| k < chunk.len()) {
            self.pending.extend_from_slice(&chunk[keep.max(from)..]);
        }
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(format!(
                "Gemini sent an event larger than {MAX_EVENT_BYTES} bytes"
            ));
        }
        Ok(())
    }

    /// The upstream body ended cleanly: the usage chunk and `[DONE]` when the answer is
    /// complete. An answer cut before its finish reason gets neither, so the caller reports
    /// it as truncated.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.failed || !self.complete() {
            return;
        }
        if let Some(usage) = self.usage {
            self.write_chunk(out, &[], Some(usage.into()));
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    fn event(&mut self, event: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let json: &[u8] = match self.framing {
            Framing::Sse => match event_data(event) {
                EventData::None => return Ok(()),
                EventData::Done => return Ok(()),
                EventData::One(json) => json,
                EventData::Joined(json) => return self.response(&json, out),
            },
            _ => event,
        };
        self.response(json, out)
    }

    /// The answer is whole: a blocked prompt, or every candidate that started finished.
    fn complete(&self) -> bool {
        let started = self.candidates.iter().filter(|c| c.started);
        self.blocked || (started.clone().count() > 0 && started.clone().all(|c| c.finished))
    }

    fn response(&mut self, json: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let response: GeminiResponse<'_> = serde_json::from_slice(json)
            .map_err(|err| format!("Gemini sent an event that is not a response: {err}"))?;
        if response.error.is_some() {
            let Some(error) = errors::translate(json, http::StatusCode::OK) else {
                return Err("Gemini sent an error event that is not a Google error".into());
            };
            out.put_slice(b"data: ");
            out.put_slice(&error.body);
            out.put_slice(b"\n\n");
            self.failed = true;
            return Ok(());
        }
        if self.id.is_none() {
            let id = response_id_or_random(response.response_id.as_deref());
            self.id = Some(format!("chatcmpl-{id}"));
            self.response_id = Some(id);
        }
        if let Some(version) = &response.model_version
            && *version != *self.model
        {
            self.model = version.to_string();
        }
        // Cumulative: the last one is the total.
        if let Some(usage) = response.usage_metadata {
            self.usage = Some(usage);
        }
        if let Some(why) = prompt_block(&response) {
            let choice = ChunkChoice {
                index: 0,
                delta: Delta {
                    role: Some("assistant"),
                    refusal: Some(&why),
                    ..Delta::default()
                },
                finish_reason: Some("content_filter"),
            };
            self.write_chunk(out, &[choice], None);
            self.blocked = true;
            return Ok(());
        }
        let response_id = self.response_id.as_deref().unwrap_or_default();
        for (n, candidate) in response.candidates.iter().enumerate() {
            let index = candidate.index.map_or(n, |i| i as usize);
            let Some(state) = self.candidates.get_mut(index).copied() else {
                return Err(format!(
                    "Gemini sent candidate {index}; at most {MAX_CANDIDATES} are expected"
                ));
            };
            let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
            let text: String = (parts.iter().filter(|p| !p.thought))
                .filter_map(|p| p.text.as_deref())
                .collect();
            let calls: Vec<IndexedToolCall> = (parts.iter().filter(|p| !p.thought))
                .filter_map(|p| Some((p.function_call.as_ref()?, p.thought_signature.as_deref())))
                .enumerate()
                .map(|(k, (call, signature))| {
                    let at = state.tool_calls + k;
                    let id = tool_call_id(call, response_id, at);
                    IndexedToolCall {
                        index: at,
                        call: out_tool_call(call, id, signature),
                    }
                })
                .collect();
            let called = state.tool_calls + calls.len();
            let mut next = CandidateState {
                tool_calls: called,
                ..state
            };
            if !text.is_empty() || !calls.is_empty() || !state.started {
                let choice = ChunkChoice {
                    index: index as u32,
                    delta: Delta {
                        role: (!state.started).then_some("assistant"),
                        content: (!text.is_empty()).then_some(text.as_str()),
                        refusal: None,
                        tool_calls: calls,
                    },
                    finish_reason: None,
                };
                self.write_chunk(out, &[choice], None);
                next.started = true;
            }
            if let Some(reason) = &candidate.finish_reason {
                let choice = ChunkChoice {
                    index: index as u32,
                    delta: Delta::default(),
                    finish_reason: Some(finish_reason(reason, called > 0)),
                };
                self.write_chunk(out, &[choice], None);
                next.finished = true;
            }
            self.candidates[index] = next;
        }
        Ok(())
    }

    fn write_chunk(
        &self,
        out: &mut BytesMut,
        choices: &[ChunkChoice<'_>],
        usage: Option<OpenAiUsage>,
    ) {
        let chunk = Chunk {
            id: self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        out.put_slice(b"data: ");
        // Serializing these plain structs into memory cannot fail.
        let _ = serde_json::to_writer((&mut *out).writer(), &chunk);
        out.put_slice(b"\n\n");
    }
}

/// Finds the top-level elements of a JSON array written across chunks: tracks nesting,
/// strings and escapes, and reports each element's start and end within the chunk.
#[derive(Default)]
struct ArrayScanner {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// After a chunk: where in it the element still open at its end began (0 when it began
    /// in an earlier chunk), `None` between elements.
    open_at: Option<usize>,
}

impl ArrayScanner {
    fn feed(&mut self, chunk: &[u8], mut on_element: impl FnMut(usize, usize)) {
        let mut start = self.open_at.map(|_| 0);
        for (i, &byte) in chunk.iter().enumerate() {
            if self.in_string {
                match (self.escaped, byte) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        start = Some(i);
                    }
                }
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1
                        && let Some(begin) = start.take()
                    {
                        on_element(begin, i + 1);
                    }
                }
                _ => {}
            }
        }
        self.open_at = start;
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
