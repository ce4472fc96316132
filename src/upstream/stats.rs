//! What the gateway learned about one upstream exchange, filled in as the answer flows.

use std::time::Duration;

use smallvec::SmallVec;

use crate::error::ErrorKind;
use crate::exchange::Exchange;
use crate::upstream::openai_view::{AnswerView, FinishReason, Usage, content_text, raw_str};

/// Most answer text kept for a span (routes that record content); the rest is cut.
pub const MAX_CAPTURED_OUTPUT: usize = 64 * 1024;

/// Per-request facts for the access log, metrics and spans. Written by the tee (streams) or
/// by the non-streaming reader; read once when the response body ends.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    pub stream: bool,
    pub upstream_status: Option<u16>,
    /// Time from the request's arrival to the first data event (streams) or the full answer.
    pub ttft: Option<Duration>,
    /// SSE data events forwarded (excluding `[DONE]`, comments and stripped usage chunks).
    pub events: u32,
    pub usage: Option<Usage>,
    pub finish_reason: Option<FinishReason>,
    /// Why the exchange failed, if it did, including failures after the stream began.
    pub error: Option<ErrorKind>,
    /// The upstream itself sent a mid-stream `{"error":...}` event.
    pub upstream_error_event: bool,
    /// What to keep for spans; nothing unless the request is traced.
    pub capture: Capture,
    pub response_id: Option<ShortText>,
    pub response_model: Option<ShortText>,
    /// The answer text (routes that record content), at most [`MAX_CAPTURED_OUTPUT`] bytes.
    pub output: Option<String>,
}

/// A short answer field kept for a span (response id, model name): inline when it fits, as
/// ids and model names do, so a traced request does not allocate for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShortText(SmallVec<[u8; 56]>);

impl ShortText {
    pub fn new(text: &str) -> Self {
        ShortText(SmallVec::from_slice(text.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Always valid: the bytes came from a `str`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// What a traced request keeps of its answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capture {
    /// Response id and model.
    pub ids: bool,
    /// The answer text too.
    pub content: bool,
}

impl Capture {
    /// What `exchange` needs: ids when its spans are recorded, text when its route also
    /// records content.
    pub fn for_exchange(exchange: &Exchange) -> Capture {
        let ids = exchange.is_recording();
        Capture {
            ids,
            content: ids && exchange.route.get().is_some_and(|r| r.trace_content),
        }
    }
}

impl ExchangeStats {
    /// Stats for an answer to `exchange`.
    pub fn for_exchange(exchange: &Exchange, stream: bool) -> Self {
        Self {
            stream,
            capture: Capture::for_exchange(exchange),
            ..Self::default()
        }
    }

    /// Keeps what spans report from one answer or chunk: the first id and model seen, and
    /// the text when content is recorded.
    pub fn capture_from(&mut self, view: &AnswerView<'_>) {
        if !self.capture.ids {
            return;
        }
        if self.response_id.is_none() {
            self.response_id = view.id.and_then(raw_str).map(|s| ShortText::new(&s));
        }
        if self.response_model.is_none() {
            self.response_model = view.model.and_then(raw_str).map(|s| ShortText::new(&s));
        }
        if self.capture.content
            && let Some(text) = view.choices.content.and_then(content_text)
        {
            let output = self.output.get_or_insert_with(String::new);
            let room = MAX_CAPTURED_OUTPUT.saturating_sub(output.len());
            let mut cut = text.len().min(room);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            output.push_str(&text[..cut]);
        }
    }
}
