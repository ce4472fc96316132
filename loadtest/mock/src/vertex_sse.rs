//! Framing and pacing of `:streamGenerateContent`: SSE (`alt=sse`: `data:` events, CRLF lines,
//! no `[DONE]`) or one JSON array written element by element (`[`, `,\r\n`, `]`).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;

use crate::body::EventPlan;
use crate::gemini_response::Answer;
use crate::google_error::GoogleError;
use crate::responses::MALFORMED_JSON;

/// How the events of one stream are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `data: {json}` + blank line, each line ending in `eol`; optional keep-alive comments.
    Sse { eol: &'static str, keepalive: bool },
    /// `[{json}`, then `,\r\n{json}` per element, then `]` as its own chunk.
    JsonArray,
}

/// One Gemini stream: its answer, framing and pacing, and the error an `error-after` ends with.
#[derive(Debug)]
pub(crate) struct GeminiStream {
    pub(crate) answer: Answer,
    pub(crate) framing: Framing,
    pub(crate) ttft: Duration,
    /// Pause per output token: an event carrying k tokens waits k times this.
    pub(crate) inter_token: Duration,
    pub(crate) error: GoogleError,
    pub(crate) malformed_first: bool,
}

impl GeminiStream {
    fn frame(&self, index: usize, json: &str, close: bool) -> Bytes {
        match self.framing {
            Framing::Sse { eol, keepalive } => {
                let mut buf = BytesMut::with_capacity(json.len() + 32);
                if keepalive {
                    buf.put_slice(b": keep-alive");
                    buf.put_slice(eol.as_bytes());
                    buf.put_slice(eol.as_bytes());
                }
                buf.put_slice(b"data: ");
                buf.put_slice(json.as_bytes());
                buf.put_slice(eol.as_bytes());
                buf.put_slice(eol.as_bytes());
                buf.freeze()
            }
            Framing::JsonArray => {
                let mut buf = BytesMut::with_capacity(json.len() + 4);
                buf.put_slice(if index == 0 { b"[" } else { b",\r\n" });
                buf.put_slice(json.as_bytes());
                if close {
                    buf.put_u8(b']');
                }
                buf.freeze()
            }
        }
    }
}

impl EventPlan for GeminiStream {
    fn content_events(&self) -> usize {
        self.answer.event_count()
    }

    /// The JSON array's closing `]` is an event of its own, so a cut stream lacks it.
    fn total_events(&self) -> usize {
        self.content_events() + usize::from(self.framing == Framing::JsonArray)
    }

    fn render(&self, i: usize) -> Bytes {
        if i >= self.content_events() {
            return Bytes::from_static(b"]");
        }
        if i == 0 && self.malformed_first {
            return self.frame(i, MALFORMED_JSON, false);
        }
        self.frame(i, &self.answer.event_json(i), false)
    }

    fn delay_before(&self, i: usize) -> Duration {
        if i == 0 {
            self.ttft
        } else if i < self.content_events() {
            let tokens = u32::try_from(self.answer.event_tokens(i)).unwrap_or(u32::MAX);
            self.inter_token.saturating_mul(tokens)
        } else {
            Duration::ZERO
        }
    }

    /// SSE: a `data: {"error":...}` event. JSON array: the error as the last element, then `]`.
    fn error_event(&self, sent: usize) -> Bytes {
        self.frame(sent, &self.error.json(), true)
    }

    fn malform_first(&mut self) {
        self.malformed_first = true;
    }

    fn content_type(&self) -> HeaderValue {
        match self.framing {
            Framing::Sse { .. } => HeaderValue::from_static("text/event-stream"),
            Framing::JsonArray => HeaderValue::from_static("application/json; charset=UTF-8"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemini_response::AnswerKind;
    use crate::google_error::GrpcStatus;

    fn stream(framing: Framing) -> GeminiStream {
        GeminiStream {
            answer: Answer {
                kind: AnswerKind::Text { tokens: 6 },
                finish_reason: "STOP",
                candidates: 1,
                prompt_tokens: 3,
                cached_tokens: None,
                thoughts_tokens: 0,
                include_thoughts: false,
                tokens_per_event: 4,
                model_version: "m-001".into(),
                response_id: "r".into(),
            },
            framing,
            ttft: Duration::from_millis(7),
            inter_token: Duration::from_millis(2),
            error: GoogleError::new(GrpcStatus::INTERNAL, "boom"),
            malformed_first: false,
        }
    }

    fn all(plan: &GeminiStream) -> String {
        (0..plan.total_events())
            .map(|i| String::from_utf8(plan.render(i).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn sse_uses_crlf_and_no_done() {
        let plan = stream(Framing::Sse {
            eol: "\r\n",
            keepalive: false,
        });
        assert_eq!(plan.total_events(), 2);
        let text = all(&plan);
        assert!(text.starts_with("data: {"));
        assert_eq!(text.matches("\r\n\r\n").count(), 2);
        assert!(!text.contains("[DONE]"));
        assert_eq!(plan.delay_before(0), Duration::from_millis(7));
        // The second event carries 2 tokens.
        assert_eq!(plan.delay_before(1), Duration::from_millis(4));
        let error = String::from_utf8(plan.error_event(1).to_vec()).unwrap();
        assert!(error.starts_with("data: {\"error\":") && error.ends_with("}\r\n\r\n"));
    }

    #[test]
    fn json_array_is_one_array() {
        let plan = stream(Framing::JsonArray);
        assert_eq!(plan.total_events(), 3);
        assert_eq!(&plan.render(2)[..], b"]");
        assert!(plan.render(1).starts_with(b",\r\n{"));
        let parsed: serde_json::Value = serde_json::from_str(&all(&plan)).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 2);
        assert_eq!(plan.delay_before(2), Duration::ZERO);
        let wrapped: serde_json::Value = serde_json::from_slice(&plan.error_event(0)).unwrap();
        assert_eq!(wrapped[0]["error"]["status"], "INTERNAL");
        let mut after_one = plan.render(0).to_vec();
        after_one.extend_from_slice(&plan.error_event(1));
        let parsed: serde_json::Value = serde_json::from_slice(&after_one).unwrap();
        assert_eq!(parsed[1]["error"]["message"], "boom");
    }

    #[test]
    fn malformed_first_event() {
        let mut plan = stream(Framing::JsonArray);
        plan.malform_first();
        assert!(serde_json::from_str::<serde_json::Value>(&all(&plan)).is_err());
    }
}
