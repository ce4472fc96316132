//! Deterministic generated text and the JSON bodies of non-streaming responses.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// Words the mock "generates": token `i` is `WORDS[i % WORDS.len()]` followed by a space.
/// Plain ASCII without JSON-special characters, so they can be spliced into JSON as-is.
pub(crate) const WORDS: [&str; 16] = [
    "the", "mock", "model", "streams", "tokens", "through", "a", "gateway", "under", "steady",
    "load", "with", "faults", "and", "quick", "retries",
];

/// The word for token `i`.
pub(crate) fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// Text of `n` tokens: exactly what the stream's content deltas concatenate to.
pub(crate) fn generated_text(n: usize) -> String {
    let mut text = String::with_capacity(n * 8);
    for i in 0..n {
        text.push_str(word(i));
        text.push(' ');
    }
    text
}

/// Prompt tokens charged for a request body: a cheap, deterministic estimate.
pub(crate) fn prompt_tokens(body_len: usize) -> u64 {
    (body_len / 4).max(1) as u64
}

/// Which generation surface a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    Chat,
    Completion,
}

impl Surface {
    pub(crate) fn id(self, n: u64) -> String {
        match self {
            Surface::Chat => format!("chatcmpl-mock-{n}"),
            Surface::Completion => format!("cmpl-mock-{n}"),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) total_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Fields shared by every non-streaming generation response.
pub(crate) struct Generated<'a> {
    pub(crate) surface: Surface,
    pub(crate) id: &'a str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    pub(crate) text: &'a str,
    pub(crate) finish_reason: &'static str,
    pub(crate) usage: Usage,
}

#[derive(Serialize)]
struct Envelope<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [C; 1],
    usage: &'a Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    index: u32,
    text: &'a str,
    finish_reason: &'static str,
}

/// Body of a non-streaming chat completion or text completion.
pub(crate) fn completion_json(g: &Generated<'_>) -> Bytes {
    let result = match g.surface {
        Surface::Chat => serde_json::to_vec(&Envelope {
            id: g.id,
            object: "chat.completion",
            created: g.created,
            model: g.model,
            choices: [ChatChoice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: g.text,
                },
                finish_reason: g.finish_reason,
            }],
            usage: &g.usage,
        }),
        Surface::Completion => serde_json::to_vec(&Envelope {
            id: g.id,
            object: "text_completion",
            created: g.created,
            model: g.model,
            choices: [TextChoice {
                index: 0,
                text: g.text,
                finish_reason: g.finish_reason,
            }],
            usage: &g.usage,
        }),
    };
    // Serializing plain structs of strings and integers cannot fail.
    Bytes::from(result.unwrap_or_default())
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: [f32; 8],
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Body of an embeddings response: one vector per input, derived from the input's text.
pub(crate) fn embeddings_json(model: &str, inputs: &[&RawValue], prompt_tokens: u64) -> Bytes {
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| Embedding {
            object: "embedding",
            index,
            embedding: vector_for(input.get().as_bytes()),
        })
        .collect();
    let body = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Eight floats in [-1, 1) seeded by an FNV-1a hash of the input, so equal inputs embed equally.
pub(crate) fn vector_for(input: &[u8]) -> [f32; 8] {
    let mut seed = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut out = [0.0_f32; 8];
    for slot in &mut out {
        // splitmix64 step: well-mixed output from a sequential seed.
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 24 high bits give an exactly representable f32 fraction.
        *slot = (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0;
    }
    out
}

/// Body of `GET /v1/models`.
pub(crate) const MODELS_JSON: &str = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"tollgate-mock"}]}"#;

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// An OpenAI-style error object.
pub(crate) fn error_json(message: &str, kind: &str, code: &str) -> Bytes {
    let body = ErrorEnvelope {
        error: ErrorBody {
            message,
            kind,
            param: None,
            code,
        },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The error `type` and `code` a real server would use for an HTTP status.
pub(crate) fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        405 => ("invalid_request_error", "method_not_allowed"),
        408 => ("timeout_error", "timeout"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_exceeded", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "mock_error"),
    }
}

/// The invalid JSON sent by the `malformed` fault.
pub(crate) const MALFORMED_JSON: &str = r#"{"id":"chatcmpl-broken","choices":[{"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_deterministic_and_countable() {
        assert_eq!(generated_text(0), "");
        assert_eq!(generated_text(3), "the mock model ");
        assert_eq!(generated_text(17).split_whitespace().count(), 17);
        assert_eq!(generated_text(17), generated_text(17));
    }

    #[test]
    fn prompt_tokens_are_at_least_one() {
        assert_eq!(prompt_tokens(0), 1);
        assert_eq!(prompt_tokens(40), 10);
    }

    #[test]
    fn chat_completion_shape() {
        let body = completion_json(&Generated {
            surface: Surface::Chat,
            id: "chatcmpl-mock-1",
            created: 5,
            model: "m\"x",
            text: "the mock ",
            finish_reason: "length",
            usage: Usage::new(3, 2),
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m\"x");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "the mock ");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 5);
    }

    #[test]
    fn text_completion_shape() {
        let body = completion_json(&Generated {
            surface: Surface::Completion,
            id: "cmpl-mock-1",
            created: 5,
            model: "m",
            text: "the ",
            finish_reason: "stop",
            usage: Usage::new(1, 1),
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "the ");
    }

    #[test]
    fn embeddings_are_deterministic() {
        let a = RawValue::from_string("\"hello\"".into()).unwrap();
        let b = RawValue::from_string("\"world\"".into()).unwrap();
        let body = embeddings_json("e", &[&a, &b], 4);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
        assert_eq!(v["usage"]["total_tokens"], 4);
        assert_eq!(vector_for(b"x"), vector_for(b"x"));
        assert_ne!(vector_for(b"x"), vector_for(b"y"));
        assert!(vector_for(b"x").iter().all(|f| (-1.0..1.0).contains(f)));
    }

    #[test]
    fn errors_and_static_bodies_are_valid_json() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_json("nope", "server_error", "x")).unwrap();
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["param"].is_null());
        assert!(serde_json::from_str::<serde_json::Value>(MODELS_JSON).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(MALFORMED_JSON).is_err());
        assert_eq!(error_kind(503).0, "server_error");
        assert_eq!(error_kind(429).1, "rate_limit_exceeded");
    }
}
