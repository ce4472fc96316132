//! The built-in demo provider: deterministic answers with realistic timing, no network.
//!
//! Output is a pure function of the request body, so the same request always gets the same
//! text. Streams are real SSE bytes that go through the same tee as upstream streams, so the
//! demo exercises usage stripping, TTFT and event accounting exactly like a real provider.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::{Instant, Sleep};

use crate::config::DemoProviderConfig;
use crate::error::{ErrorKind, GatewayError};

const WORDS: [&str; 24] = [
    "Tollgate", "routes", "every", "request", "through", "one", "snapshot", "and", "streams",
    "tokens", "back", "as", "soon", "as", "they", "arrive", "while", "counting", "usage",
    "latency", "and", "drift", "per", "route",
];

/// The demo provider as compiled from config.
#[derive(Debug)]
pub struct DemoProvider {
    pub name: Box<str>,
    pub ttft: Duration,
    pub inter_token: Duration,
    pub tokens: u32,
    pub embedding_dims: usize,
}

impl DemoProvider {
    pub fn new(name: &str, cfg: &DemoProviderConfig) -> Self {
        Self {
            name: name.into(),
            ttft: cfg.ttft.0,
            inter_token: cfg.inter_token.0,
            tokens: cfg.tokens,
            embedding_dims: cfg.embedding_dims,
        }
    }
}

/// Which OpenAI surface the demo answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoKind {
    Chat,
    Completion,
}

/// A planned answer: what a request will get, decided before any byte is produced.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    kind: DemoKind,
    id: String,
    model: String,
    created: u64,
    seed: u64,
    words: u32,
    prompt_tokens: u64,
    finish_reason: &'static str,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Words of prompt text: strings, arrays of them, and the `content`/`text` of messages and
/// content parts (roles and other fields are not prompt text).
fn count_words(value: &Value) -> u64 {
    match value {
        Value::String(text) => text.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(map) => ["content", "text"]
            .iter()
            .filter_map(|key| map.get(*key))
            .map(count_words)
            .sum(),
        _ => 0,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl DemoPlan {
    /// Plans the answer to `body` (already validated JSON).
    pub fn new(provider: &DemoProvider, kind: DemoKind, body: &[u8]) -> Result<Self, GatewayError> {
        let request: Value = serde_json::from_slice(body).map_err(|_| {
            GatewayError::new(ErrorKind::MalformedJson, "request body is not valid JSON")
        })?;
        if request
            .get("n")
            .and_then(Value::as_u64)
            .is_some_and(|n| n != 1)
        {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedParameter,
                "the demo provider answers with one choice; use n=1",
            )
            .with_param("n"));
        }
        let prompt_field = match kind {
            DemoKind::Chat => "messages",
            DemoKind::Completion => "prompt",
        };
        let limit = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| request.get(*k).and_then(Value::as_u64));
        let words = match limit {
            Some(max) if max < u64::from(provider.tokens) => max as u32,
            _ => provider.tokens,
        };
        let seed = fnv1a(body);
        Ok(Self {
            kind,
            id: format!(
                "{}-demo-{seed:016x}",
                if kind == DemoKind::Chat {
                    "chatcmpl"
                } else {
                    "cmpl"
                }
            ),
            model: request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("demo")
                .to_owned(),
            created: unix_now(),
            seed,
            words,
            prompt_tokens: request
                .get(prompt_field)
                .map(count_words)
                .unwrap_or(0)
                .max(1),
            finish_reason: if words < provider.tokens {
                "length"
            } else {
                "stop"
            },
        })
    }

    /// How long the whole answer takes to generate: TTFT, then one token per cadence step.
    pub fn generation_time(&self, provider: &DemoProvider) -> Duration {
        provider.ttft + provider.inter_token * self.words.saturating_sub(1)
    }

    fn word(&self, i: u32) -> &'static str {
        WORDS[((self.seed as usize) + i as usize) % WORDS.len()]
    }

    fn text(&self) -> String {
        (0..self.words)
            .map(|i| self.word(i))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn usage(&self) -> Value {
        let completion = u64::from(self.words);
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (DemoKind::Chat, false) => "chat.completion",
            (DemoKind::Chat, true) => "chat.completion.chunk",
            (DemoKind::Completion, _) => "text_completion",
        }
    }

    /// The whole non-streaming answer.
    pub fn response_body(&self) -> Bytes {
        let choice = match self.kind {
            DemoKind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": self.text()},
                "finish_reason": self.finish_reason,
            }),
            DemoKind::Completion => json!({
                "index": 0, "text": self.text(), "logprobs": null, "finish_reason": self.finish_reason,
            }),
        };
        self.envelope(false, vec![choice], Some(self.usage()))
    }

    fn envelope(&self, chunk: bool, choices: Vec<Value>, usage: Option<Value>) -> Bytes {
        let mut body = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let (Some(usage), Some(map)) = (usage, body.as_object_mut()) {
            map.insert("usage".into(), usage);
        }
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Stream event `i` of `words + 1`: one per word, then the finish, usage and `[DONE]`.
    fn event(&self, i: u32) -> Bytes {
        if i == self.words {
            let finish = match self.kind {
                DemoKind::Chat => {
                    json!({"index": 0, "delta": {}, "finish_reason": self.finish_reason})
                }
                DemoKind::Completion => {
                    json!({"index": 0, "text": "", "finish_reason": self.finish_reason})
                }
            };
            let mut out = sse(&self.envelope(true, vec![finish], None));
            out.extend_from_slice(&sse(&self.envelope(true, vec![], Some(self.usage()))));
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Bytes::from(out);
        }
        let text = if i == 0 {
            self.word(0).to_owned()
        } else {
            format!(" {}", self.word(i))
        };
        let choice = match self.kind {
            DemoKind::Chat if i == 0 => {
                json!({"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null})
            }
            DemoKind::Chat => {
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null})
            }
            DemoKind::Completion => json!({"index": 0, "text": text, "finish_reason": null}),
        };
        Bytes::from(sse(&self.envelope(true, vec![choice], None)))
    }
}

fn sse(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// A demo answer as a timed SSE byte stream.
pub struct DemoStream {
    plan: DemoPlan,
    next: u32,
    inter_token: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl DemoStream {
    pub fn new(plan: DemoPlan, provider: &DemoProvider) -> Self {
        Self {
            plan,
            next: 0,
            inter_token: provider.inter_token,
            sleep: Box::pin(tokio::time::sleep(provider.ttft)),
        }
    }

    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.next > self.plan.words {
            return Poll::Ready(None);
        }
        ready!(self.sleep.as_mut().poll(cx));
        let event = self.plan.event(self.next);
        self.next += 1;
        if self.next < self.plan.words {
            let at = Instant::now() + self.inter_token;
            self.sleep.as_mut().reset(at);
        }
        Poll::Ready(Some(event))
    }
}

/// Deterministic unit-length embeddings, one per input.
pub fn embeddings_body(provider: &DemoProvider, body: &[u8]) -> Result<Bytes, GatewayError> {
    let request: Value = serde_json::from_slice(body).map_err(|_| {
        GatewayError::new(ErrorKind::MalformedJson, "request body is not valid JSON")
    })?;
    let inputs: Vec<&Value> = match request.get("input") {
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(|v| v.is_string()) => {
            items.iter().collect()
        }
        Some(text @ Value::String(_)) => vec![text],
        _ => {
            return Err(GatewayError::new(
                ErrorKind::InvalidField,
                "`input` must be a string or a non-empty array of strings",
            )
            .with_param("input"));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let text = input.as_str().unwrap_or_default();
            let mut state = fnv1a(text.as_bytes()) | 1;
            let mut vector: Vec<f64> = (0..provider.embedding_dims)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 2001) as f64 / 1000.0 - 1.0
                })
                .collect();
            let norm = vector
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
                .max(f64::EPSILON);
            vector.iter_mut().for_each(|x| *x /= norm);
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|v| count_words(v)).sum::<u64>().max(1);
    let body = json!({
        "object": "list",
        "data": data,
        "model": request.get("model").and_then(Value::as_str).unwrap_or("demo"),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(tokens: u32) -> DemoProvider {
        DemoProvider {
            name: "demo".into(),
            ttft: Duration::ZERO,
            inter_token: Duration::ZERO,
            tokens,
            embedding_dims: 4,
        }
    }

    #[test]
    fn answer_is_deterministic_and_usage_adds_up() {
        let body =
            br#"{"model":"demo","messages":[{"role":"user","content":"three little words"}]}"#;
        let a = DemoPlan::new(&provider(5), DemoKind::Chat, body)
            .unwrap()
            .response_body();
        let b = DemoPlan::new(&provider(5), DemoKind::Chat, body).unwrap();
        let b = b.response_body();
        let a: Value = serde_json::from_slice(&a).unwrap();
        let b: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(a["choices"], b["choices"]);
        assert_eq!(a["usage"]["prompt_tokens"], 3);
        assert_eq!(a["usage"]["completion_tokens"], 5);
        assert_eq!(a["usage"]["total_tokens"], 8);
        let text = a["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(text.split(' ').count(), 5);
    }

    #[test]
    fn max_tokens_caps_length_and_says_so() {
        let body = br#"{"model":"demo","prompt":"hi","max_tokens":2}"#;
        let plan = DemoPlan::new(&provider(5), DemoKind::Completion, body).unwrap();
        let json: Value = serde_json::from_slice(&plan.response_body()).unwrap();
        assert_eq!(json["choices"][0]["finish_reason"], "length");
        assert_eq!(json["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn stream_events_carry_the_same_text() {
        let body = br#"{"model":"demo","messages":[{"role":"user","content":"x"}]}"#;
        let plan = DemoPlan::new(&provider(4), DemoKind::Chat, body).unwrap();
        let whole: Value = serde_json::from_slice(&plan.response_body()).unwrap();
        let mut text = String::new();
        for i in 0..4 {
            let event = plan.event(i);
            let json: Value = serde_json::from_slice(&event[6..event.len() - 2]).unwrap();
            text.push_str(json["choices"][0]["delta"]["content"].as_str().unwrap());
        }
        assert_eq!(
            text,
            whole["choices"][0]["message"]["content"].as_str().unwrap()
        );
        let last = plan.event(4);
        assert!(last.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn rejects_n_above_one_and_bad_embedding_input() {
        let err =
            DemoPlan::new(&provider(1), DemoKind::Chat, br#"{"model":"d","n":2}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnsupportedParameter);
        let err = embeddings_body(&provider(1), br#"{"model":"d","input":5}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input"));
    }

    #[test]
    fn embeddings_are_unit_length() {
        let out = embeddings_body(&provider(1), br#"{"model":"d","input":["a b","c"]}"#).unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["data"].as_array().unwrap().len(), 2);
        let v: Vec<f64> = serde_json::from_value(json["data"][0]["embedding"].clone()).unwrap();
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9);
        assert_eq!(json["usage"]["prompt_tokens"], 3);
    }
}
