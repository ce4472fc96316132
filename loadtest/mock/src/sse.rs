//! Rendering of SSE events for streamed chat and text completions.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::LineEnding;
use crate::responses::{MALFORMED_JSON, Surface, word};

/// Renders the events of one stream from a pre-built JSON prefix, so each chunk costs
/// one allocation and no serializer pass.
#[derive(Debug)]
pub(crate) struct SseRender {
    /// `{"id":..,"object":..,"created":..,"model":..,"choices":[`
    head: String,
    surface: Surface,
    eol: &'static str,
    keepalive: bool,
}

impl SseRender {
    pub(crate) fn new(
        surface: Surface,
        id: &str,
        created: u64,
        model: &str,
        line_ending: LineEnding,
        keepalive: bool,
    ) -> Self {
        let object = match surface {
            Surface::Chat => "chat.completion.chunk",
            Surface::Completion => "text_completion",
        };
        // Model names come from the client, so they need real JSON escaping.
        let model = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_owned());
        let mut head = String::with_capacity(96 + id.len() + model.len());
        let _ = write!(
            head,
            r#"{{"id":"{id}","object":"{object}","created":{created},"model":{model},"choices":["#
        );
        Self {
            head,
            surface,
            eol: line_ending.as_str(),
            keepalive,
        }
    }

    /// Wraps one payload as `data: ...` plus a blank line, preceded by a keep-alive comment if enabled.
    fn event(&self, payload_len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::with_capacity(payload_len + 32);
        if self.keepalive {
            buf.put_slice(b": keep-alive");
            buf.put_slice(self.eol.as_bytes());
            buf.put_slice(self.eol.as_bytes());
        }
        buf.put_slice(b"data: ");
        write(&mut buf);
        buf.put_slice(self.eol.as_bytes());
        buf.put_slice(self.eol.as_bytes());
        buf.freeze()
    }

    /// Content chunk `i`; `None` as token renders the empty chunk of a zero-token stream.
    pub(crate) fn content(&self, token: Option<usize>, finish_reason: Option<&str>) -> Bytes {
        let text = token.map_or("", word);
        let first = token.is_none_or(|i| i == 0);
        self.event(self.head.len() + 96, |buf| {
            buf.put_slice(self.head.as_bytes());
            match self.surface {
                Surface::Chat => {
                    buf.put_slice(br#"{"index":0,"delta":{"#);
                    if first {
                        buf.put_slice(br#""role":"assistant","#);
                    }
                    buf.put_slice(br#""content":""#);
                }
                Surface::Completion => buf.put_slice(br#"{"index":0,"text":""#),
            }
            buf.put_slice(text.as_bytes());
            if token.is_some() {
                buf.put_u8(b' ');
            }
            buf.put_u8(b'"');
            if self.surface == Surface::Chat {
                buf.put_u8(b'}');
            }
            match finish_reason {
                Some(reason) => {
                    buf.put_slice(br#","finish_reason":""#);
                    buf.put_slice(reason.as_bytes());
                    buf.put_slice(br#""}]}"#);
                }
                None => buf.put_slice(br#","finish_reason":null}]}"#),
            }
        })
    }

    /// The trailing usage chunk (`"choices":[]`).
    pub(crate) fn usage(&self, prompt: u64, completion: u64) -> Bytes {
        self.event(self.head.len() + 96, |buf| {
            buf.put_slice(self.head.as_bytes());
            let _ = write!(
                buf,
                r#"],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
                prompt + completion
            );
        })
    }

    pub(crate) fn done(&self) -> Bytes {
        self.event(6, |buf| buf.put_slice(b"[DONE]"))
    }

    pub(crate) fn malformed(&self) -> Bytes {
        self.event(MALFORMED_JSON.len(), |buf| {
            buf.put_slice(MALFORMED_JSON.as_bytes());
        })
    }

    pub(crate) fn error(&self) -> Bytes {
        const ERROR: &str = r#"{"error":{"message":"mock mid-stream failure","type":"server_error","param":null,"code":"mock_error"}}"#;
        self.event(ERROR.len(), |buf| buf.put_slice(ERROR.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(event: &Bytes) -> serde_json::Value {
        let text = std::str::from_utf8(event).unwrap();
        let payload = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(payload).unwrap()
    }

    #[test]
    fn chat_chunks() {
        let r = SseRender::new(
            Surface::Chat,
            "chatcmpl-mock-1",
            9,
            "a\"b",
            LineEnding::Lf,
            false,
        );
        let first = data(&r.content(Some(0), None));
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["model"], "a\"b");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["choices"][0]["delta"]["content"], "the ");
        assert!(first["choices"][0]["finish_reason"].is_null());
        let last = data(&r.content(Some(1), Some("stop")));
        assert!(last["choices"][0]["delta"].get("role").is_none());
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        let empty = data(&r.content(None, Some("length")));
        assert_eq!(empty["choices"][0]["delta"]["content"], "");
        let usage = data(&r.usage(4, 2));
        assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
        assert_eq!(usage["usage"]["total_tokens"], 6);
        assert_eq!(&r.done()[..], b"data: [DONE]\n\n");
        assert_eq!(data(&r.error())["error"]["code"], "mock_error");
    }

    #[test]
    fn completion_chunks() {
        let r = SseRender::new(
            Surface::Completion,
            "cmpl-mock-1",
            9,
            "m",
            LineEnding::Lf,
            false,
        );
        let chunk = data(&r.content(Some(2), Some("stop")));
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["choices"][0]["text"], "model ");
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn line_endings_and_keepalive() {
        let r = SseRender::new(Surface::Chat, "x", 0, "m", LineEnding::CrLf, true);
        assert_eq!(&r.done()[..], b": keep-alive\r\n\r\ndata: [DONE]\r\n\r\n");
        let r = SseRender::new(Surface::Chat, "x", 0, "m", LineEnding::Cr, false);
        assert_eq!(&r.done()[..], b"data: [DONE]\r\r");
    }
}
