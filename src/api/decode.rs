//! Decodes an OpenAI-format request body without re-serializing it.
//!
//! Only the top-level fields the gateway acts on are parsed (`model`, `stream`,
//! `stream_options`); every other field is validated as JSON and left where it is. The
//! upstream body is the client's bytes with at most two splices: the model name, and
//! `stream_options.include_usage` forced on for streams so the gateway can count tokens.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::telemetry::metrics::Operation;
use crate::telemetry::trace::RequestParams;

use crate::error::{ErrorKind, GatewayError};

/// The fields of a request body the gateway reads, with where they sit in the body.
#[derive(Debug)]
pub struct RequestFields<'a> {
    /// The `model`; empty only when the body names a prompt template instead, which then
    /// supplies it (see [`RequestFields::prompt_reference`]).
    pub model: Cow<'a, str>,
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage: true`).
    pub include_usage: bool,
    /// The OpenAI `user` field: an end-user id, a stickiness key for routes that ask for it.
    pub user: Option<Cow<'a, str>>,
    /// Which of [`GENERATION_PARAMS`] the body sets, as bits.
    pub params_present: u16,
    /// The values of the parameters spans report, raw: by index in [`GENERATION_PARAMS`].
    params: [Option<&'a RawValue>; GENERATION_PARAMS.len()],
    /// The prompt fields, raw: `messages` (chat), `prompt` (completions), `input`
    /// (embeddings). See [`RequestFields::content`].
    prompts: [Option<&'a RawValue>; 3],
    /// `tools`, raw: part of the input a token estimate counts.
    pub tools: Option<&'a RawValue>,
    model_span: Range<usize>,
    stream_options: Option<(&'a RawValue, Range<usize>)>,
    /// Offset of the closing `}` of the top-level object.
    object_end: usize,
}

#[derive(Default)]
struct RawFields<'a> {
    model: Option<&'a RawValue>,
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
    user: Option<&'a RawValue>,
    params_present: u16,
    params: [Option<&'a RawValue>; GENERATION_PARAMS.len()],
    prompts: [Option<&'a RawValue>; 3],
    tools: Option<&'a RawValue>,
    duplicate: Option<&'static str>,
}

impl<'de> de::Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopLevel;
        impl<'de> Visitor<'de> for TopLevel {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = RawFields::default();
                while let Some(key) = map.next_key::<Field>()? {
                    let value: &'de RawValue = map.next_value()?;
                    let (slot, name) = match key {
                        Field::Model => (&mut fields.model, "model"),
                        Field::Stream => (&mut fields.stream, "stream"),
                        Field::StreamOptions => (&mut fields.stream_options, "stream_options"),
                        Field::User => (&mut fields.user, "user"),
                        Field::Tools => (&mut fields.tools, "tools"),
                        Field::Generation(bit) => {
                            fields.params_present |= 1 << bit;
                            if let Some(slot) = fields.params.get_mut(usize::from(bit)) {
                                *slot = Some(value);
                            }
                            continue;
                        }
                        Field::Prompt(i) => {
                            if let Some(slot) = fields.prompts.get_mut(usize::from(i))
                                && slot.replace(value).is_some()
                            {
                                fields.duplicate = Some(PROMPT_FIELDS[usize::from(i)]);
                            }
                            continue;
                        }
                        Field::Other => continue,
                    };
                    // A repeated key could make the gateway and the upstream read different
                    // values (JSON parsers disagree on which one wins), so refuse it.
                    if slot.replace(value).is_some() {
                        fields.duplicate = Some(name);
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(TopLevel)
    }
}

/// A top-level key, told apart without copying it (serde's `Cow<str>` always allocates).
enum Field {
    Model,
    Stream,
    StreamOptions,
    User,
    Tools,
    /// One of [`GENERATION_PARAMS`], by index.
    Generation(u8),
    /// `messages` (0), `prompt` (1) or `input` (2): what spans record for routes that record
    /// content.
    Prompt(u8),
    Other,
}

/// The prompt fields of the surfaces, by [`Field::Prompt`] index.
const PROMPT_FIELDS: [&str; 3] = ["messages", "prompt", "input"];

/// The generation parameters a route version may give defaults for: set in the body when the
/// caller did not set them.
pub const GENERATION_PARAMS: [&str; 10] = [
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "n",
    "reasoning_effort",
];

/// Index of `name` in [`GENERATION_PARAMS`].
pub fn generation_param(name: &str) -> Option<u8> {
    GENERATION_PARAMS
        .iter()
        .position(|p| *p == name)
        .and_then(|i| u8::try_from(i).ok())
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldName;
        impl Visitor<'_> for FieldName {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
                Ok(match key {
                    "model" => Field::Model,
                    "stream" => Field::Stream,
                    "stream_options" => Field::StreamOptions,
                    "user" => Field::User,
                    "tools" => Field::Tools,
                    "messages" => Field::Prompt(0),
                    "prompt" => Field::Prompt(1),
                    "input" => Field::Prompt(2),
                    other => generation_param(other).map_or(Field::Other, Field::Generation),
                })
            }
        }
        deserializer.deserialize_identifier(FieldName)
    }
}

/// A JSON string, borrowed from the body unless it has escapes to undo.
fn json_str(raw: &RawValue) -> serde_json::Result<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(plain) => Ok(Cow::Borrowed(plain)),
        Err(_) => serde_json::from_str::<String>(raw.get()).map(Cow::Owned),
    }
}

fn span_of(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

fn invalid(param: &'static str, message: impl Into<Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidField, message).with_param(param)
}

/// Deepest nesting of arrays and objects a request body may have. Fields the gateway does
/// not read are skipped without recursion, so this is for the upstream's sake: many JSON
/// parsers recurse and fall over (or worse) on hostile nesting.
pub const MAX_JSON_DEPTH: usize = 128;

/// True when `body` nests arrays and objects deeper than `limit`. Strings, where most of a
/// request's bytes are, are skipped with `memchr` rather than walked byte by byte.
fn nests_deeper_than(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                // To the closing quote, stepping over escapes.
                loop {
                    let rest = body.get(i..).unwrap_or_default();
                    let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                        return false; // unterminated: the JSON parser rejects it
                    };
                    i += at;
                    if body[i] == b'\\' {
                        i += 2;
                    } else {
                        break;
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

impl<'a> RequestFields<'a> {
    /// Parses `body`, a JSON object with at least a `model`.
    pub fn parse(body: &'a [u8]) -> Result<RequestFields<'a>, GatewayError> {
        Self::parse_for(body, false)
    }

    /// [`RequestFields::parse`] for a request that may name a prompt template in a header
    /// (`prompt_in_header`): like one naming it in the body, it may leave `model` to the
    /// template.
    pub fn parse_for(
        body: &'a [u8],
        prompt_in_header: bool,
    ) -> Result<RequestFields<'a>, GatewayError> {
        if nests_deeper_than(body, MAX_JSON_DEPTH) {
            return Err(GatewayError::new(
                ErrorKind::MalformedJson,
                format!("request body nests deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        let raw: RawFields<'a> = serde_json::from_slice(body).map_err(|err| {
            let what = if err.is_data() {
                "a JSON object"
            } else {
                "valid JSON"
            };
            GatewayError::new(
                ErrorKind::MalformedJson,
                format!("request body is not {what}: {err}"),
            )
        })?;
        if let Some(name) = raw.duplicate {
            return Err(invalid(name, format!("`{name}` appears more than once")));
        }
        // A request naming a prompt template may leave the model to the template.
        let names_prompt =
            prompt_in_header || raw.prompts[1].is_some_and(|p| p.get().starts_with('{'));
        let (model, model_span) = match raw.model {
            Some(value) if value.get() != "null" => (
                json_str(value).map_err(|_| invalid("model", "`model` must be a string"))?,
                span_of(body, value),
            ),
            _ if names_prompt => (Cow::Borrowed(""), 0..0),
            _ => {
                return Err(GatewayError::new(
                    ErrorKind::MissingModel,
                    "you must provide a model parameter",
                )
                .with_param("model"));
            }
        };
        let stream = match raw.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("stream", "`stream` must be a boolean")),
        };
        let user = match raw.user.filter(|v| v.get() != "null") {
            None => None,
            Some(value) => {
                Some(json_str(value).map_err(|_| invalid("user", "`user` must be a string"))?)
            }
        };
        let mut include_usage = false;
        let mut stream_options = None;
        if let Some(options) = raw.stream_options.filter(|v| v.get() != "null") {
            if !options.get().starts_with('{') {
                return Err(invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ));
            }
            let parsed: StreamOptions = serde_json::from_str(options.get())
                .map_err(|_| invalid("stream_options", "`stream_options` must be an object"))?;
            include_usage = parsed.include_usage.unwrap_or(false);
            stream_options = Some((options, span_of(body, options)));
        }
        let object_end = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .unwrap_or_default();
        Ok(RequestFields {
            model_span,
            model,
            stream,
            include_usage,
            user,
            params_present: raw.params_present,
            params: raw.params,
            prompts: raw.prompts,
            tools: raw.tools,
            stream_options,
            object_end,
        })
    }

    /// The body's `prompt` when it is an object: a prompt template reference (chat). The
    /// completions surface's `prompt` is text or tokens, never an object.
    pub fn prompt_reference(&self) -> Option<&'a RawValue> {
        self.prompt_field().filter(|p| p.get().starts_with('{'))
    }

    /// The body's `prompt`, whatever it holds.
    pub fn prompt_field(&self) -> Option<&'a RawValue> {
        self.prompts[1]
    }

    /// The prompt field of the surface of `op`, raw.
    pub fn content(&self, op: Operation) -> Option<&'a RawValue> {
        let i = match op {
            Operation::Chat => 0,
            Operation::TextCompletion => 1,
            Operation::Embeddings => 2,
        };
        self.prompts[i]
    }

    /// A generation parameter the body sets to a whole number (`max_tokens`, `n`).
    pub fn whole_param(&self, name: &str) -> Option<u64> {
        let bit = generation_param(name)?;
        let raw = self.params.get(usize::from(bit)).copied().flatten()?;
        raw.get().trim().parse().ok()
    }

    /// The `gen_ai.request.*` values of this request as sent upstream: the caller's, else
    /// the route version's defaults.
    pub fn span_params(&self, stream: bool, defaults: &[ParamDefault]) -> RequestParams {
        // The raw JSON text of a parameter. A JSON number is valid Rust number syntax, so
        // it is parsed in place; anything else (a string, null) is not a number and is left
        // out.
        let raw = |name: &str| -> Option<&str> {
            let bit = generation_param(name)?;
            if let Some(value) = self.params.get(usize::from(bit)).copied().flatten() {
                return Some(value.get());
            }
            let default = defaults.iter().find(|d| d.bit == bit)?;
            // `member` is `,"name":value`.
            let member = std::str::from_utf8(&default.member).ok()?;
            member.split_once(':').map(|(_, value)| value)
        };
        let float = |name| raw(name).and_then(|v| v.trim().parse::<f64>().ok());
        let int = |name| raw(name).and_then(|v| v.trim().parse::<i64>().ok());
        RequestParams {
            max_tokens: int("max_tokens").or_else(|| int("max_completion_tokens")),
            temperature: float("temperature").filter(|v| v.is_finite()),
            top_p: float("top_p").filter(|v| v.is_finite()),
            seed: int("seed"),
            stream,
        }
    }

    /// The body to send upstream. `upstream_model` is the JSON string literal to put in
    /// place of `model`, or `None` to keep the client's; `ask_for_usage` sets
    /// `stream_options.include_usage` when the client did not. Copies only when something
    /// changes.
    pub fn upstream_body(
        &self,
        body: &Bytes,
        upstream_model: Option<&[u8]>,
        ask_for_usage: bool,
        defaults: &[ParamDefault],
    ) -> Result<Bytes, GatewayError> {
        let mut edits: [Option<Edit<'_>>; 3] = [None, None, None];
        let missing: Vec<&ParamDefault> = defaults
            .iter()
            .filter(|d| self.params_present & (1 << d.bit) == 0)
            .collect();
        if !missing.is_empty() {
            let text: Vec<u8> = missing
                .iter()
                .flat_map(|d| d.member.iter().copied())
                .collect();
            edits[2] = Some((self.object_end..self.object_end, Cow::Owned(text)));
        }
        if let Some(model) = upstream_model {
            edits[0] = Some((self.model_span.clone(), Cow::Borrowed(model)));
        }
        if ask_for_usage && !self.include_usage {
            edits[1] = Some(match &self.stream_options {
                Some((raw, span)) => (span.clone(), Cow::Owned(with_include_usage(raw)?)),
                None => (
                    self.object_end..self.object_end,
                    Cow::Borrowed(&br#","stream_options":{"include_usage":true}"#[..]),
                ),
            });
        }
        let mut edits: Vec<_> = edits.into_iter().flatten().collect();
        if edits.is_empty() {
            return Ok(body.clone());
        }
        edits.sort_by_key(|(span, _)| span.start);
        let extra: usize = edits.iter().map(|(_, text)| text.len()).sum();
        let mut out = Vec::with_capacity(body.len() + extra);
        let mut at = 0;
        for (span, text) in &edits {
            out.extend_from_slice(&body[at..span.start]);
            out.extend_from_slice(text);
            at = span.end;
        }
        out.extend_from_slice(&body[at..]);
        Ok(Bytes::from(out))
    }
}

/// Replace the bytes in the range with the new text.
type Edit<'a> = (Range<usize>, Cow<'a, [u8]>);

/// A version's default for one generation parameter, rendered once as `,"name":value`.
#[derive(Debug, Clone)]
pub struct ParamDefault {
    pub bit: u8,
    pub member: Box<[u8]>,
}

impl ParamDefault {
    /// Compiles `name: value` defaults (a route version's `defaults`, a prompt's `params`).
    /// An error is (name, why).
    pub fn compile_all(
        values: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<Box<[ParamDefault]>, (String, String)> {
        values
            .iter()
            .map(|(name, value)| {
                let bit = generation_param(name).ok_or_else(|| {
                    (
                        name.clone(),
                        format!(
                            "not a generation parameter; one of: {}",
                            GENERATION_PARAMS.join(", ")
                        ),
                    )
                })?;
                let mut member = serde_json::to_vec(&serde_json::json!({ name: value }))
                    .map_err(|e| (name.clone(), e.to_string()))?;
                // `{"name":value}` -> `,"name":value`, to go before the body's closing brace.
                member.pop();
                member[0] = b',';
                Ok(ParamDefault {
                    bit,
                    member: member.into(),
                })
            })
            .collect()
    }
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// `stream_options` with `include_usage: true`, other keys kept (e.g. vLLM's
/// `continuous_usage_stats`). Only runs for streams whose client did not ask for usage.
fn with_include_usage(raw: &RawValue) -> Result<Vec<u8>, GatewayError> {
    let mut options: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw.get())
            .map_err(|_| invalid("stream_options", "`stream_options` must be an object"))?;
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&options)
        .map_err(|_| invalid("stream_options", "`stream_options` could not be rewritten"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_the_field_of_the_surface() {
        let body =
            br#"{"model":"m","input":"not this","messages":[{"role":"user","content":"hi"}]}"#;
        let fields = RequestFields::parse(body).unwrap();
        assert_eq!(
            fields.content(Operation::Chat).unwrap().get(),
            r#"[{"role":"user","content":"hi"}]"#
        );
        assert_eq!(
            fields.content(Operation::Embeddings).unwrap().get(),
            r#""not this""#
        );
        assert!(fields.content(Operation::TextCompletion).is_none());
    }

    #[test]
    fn span_params_come_from_the_body_else_from_version_defaults() {
        let body = br#"{"model":"m","temperature":0.25,"max_completion_tokens":64,"top_p":"x"}"#;
        let fields = RequestFields::parse(body).unwrap();
        let default = |name: &str, value: &str| ParamDefault {
            bit: generation_param(name).unwrap(),
            member: format!(r#","{name}":{value}"#).into_bytes().into(),
        };
        let defaults = [default("seed", "7"), default("temperature", "1.0")];
        let params = fields.span_params(true, &defaults);
        assert_eq!(
            params.temperature,
            Some(0.25),
            "the body wins over the default"
        );
        assert_eq!(params.max_tokens, Some(64));
        assert_eq!(params.seed, Some(7), "from the default");
        assert_eq!(params.top_p, None, "a string is not a number");
        assert!(params.stream);
    }

    fn upstream(body: &str, model: Option<&str>) -> String {
        let bytes = Bytes::from(body.to_owned());
        let fields = RequestFields::parse(&bytes).unwrap();
        let model = model.map(|m| serde_json::to_vec(m).unwrap());
        let out = fields
            .upstream_body(&bytes, model.as_deref(), fields.stream, &[])
            .unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn reads_model_stream_and_usage_flag() {
        let body = br#"{"model":"m\u0031","stream":true,"stream_options":{"include_usage":true}}"#;
        let fields = RequestFields::parse(body).unwrap();
        assert_eq!(fields.model, "m1");
        assert!(fields.stream && fields.include_usage);
        // Escaped keys are the same keys; a plain model name is borrowed, not copied.
        let body = br#"{"mod\u0065l":"plain","str\u0065am":true}"#;
        let fields = RequestFields::parse(body).unwrap();
        assert!(matches!(fields.model, Cow::Borrowed("plain")));
        assert!(fields.stream);
    }

    #[test]
    fn defaults_fill_only_what_the_caller_left_out() {
        let defaults = [
            ParamDefault {
                bit: generation_param("temperature").unwrap(),
                member: (*b",\"temperature\":0.2").into(),
            },
            ParamDefault {
                bit: generation_param("max_tokens").unwrap(),
                member: (*b",\"max_tokens\":64").into(),
            },
        ];
        let bytes = Bytes::from_static(br#"{"model":"m","temperature":0.9}"#);
        let fields = RequestFields::parse(&bytes).unwrap();
        let out = fields
            .upstream_body(&bytes, None, false, &defaults)
            .unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"m","temperature":0.9,"max_tokens":64}"#
        );
        let bytes = Bytes::from_static(br#"{"model":"m","max_tokens":5,"temperature":1}"#);
        let fields = RequestFields::parse(&bytes).unwrap();
        let out = fields
            .upstream_body(&bytes, None, false, &defaults)
            .unwrap();
        assert_eq!(
            out.as_ptr(),
            bytes.as_ptr(),
            "nothing to add: the body is shared as is"
        );
    }

    #[test]
    fn reads_the_user_field_for_stickiness() {
        let fields = RequestFields::parse(br#"{"model":"m","user":"u-1"}"#).unwrap();
        assert_eq!(fields.user.as_deref(), Some("u-1"));
        let fields = RequestFields::parse(br#"{"model":"m","user":null}"#).unwrap();
        assert_eq!(fields.user, None);
        let err = RequestFields::parse(br#"{"model":"m","user":7}"#).unwrap_err();
        assert_eq!(
            (err.kind, err.param.as_deref()),
            (ErrorKind::InvalidField, Some("user"))
        );
    }

    #[test]
    fn unchanged_body_is_shared_not_copied() {
        let bytes = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let fields = RequestFields::parse(&bytes).unwrap();
        let out = fields
            .upstream_body(&bytes, None, fields.stream, &[])
            .unwrap();
        assert_eq!(out.as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn rewrites_model_and_keeps_every_other_byte() {
        let body = r#"{ "temperature" : 0.5, "model" : "alias", "x_vendor": {"a": [1, 2]} }"#;
        assert_eq!(
            upstream(body, Some("real/model")),
            r#"{ "temperature" : 0.5, "model" : "real/model", "x_vendor": {"a": [1, 2]} }"#
        );
    }

    #[test]
    fn stream_without_options_gets_include_usage() {
        let out = upstream(r#"{"model":"a","stream":true}  "#, None);
        assert_eq!(
            out,
            r#"{"model":"a","stream":true,"stream_options":{"include_usage":true}}  "#
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["stream_options"]["include_usage"], true);
    }

    #[test]
    fn stream_options_false_is_turned_on_and_other_keys_kept() {
        let out = upstream(
            r#"{"stream_options":{"include_usage":false,"continuous_usage_stats":true},"model":"a","stream":true}"#,
            Some("b"),
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["stream_options"]["include_usage"], true);
        assert_eq!(json["stream_options"]["continuous_usage_stats"], true);
        assert_eq!(json["model"], "b");
    }

    #[test]
    fn rejects_bad_input_with_the_right_kind() {
        let kind = |body: &str| RequestFields::parse(body.as_bytes()).unwrap_err().kind;
        assert_eq!(kind("{not json"), ErrorKind::MalformedJson);
        assert_eq!(kind("[1,2]"), ErrorKind::MalformedJson);
        assert_eq!(kind(r#"{"messages":[]}"#), ErrorKind::MissingModel);
        assert_eq!(kind(r#"{"model":null}"#), ErrorKind::MissingModel);
        assert_eq!(kind(r#"{"model":7}"#), ErrorKind::InvalidField);
        assert_eq!(
            kind(r#"{"model":"a","stream":"yes"}"#),
            ErrorKind::InvalidField
        );
        assert_eq!(
            kind(r#"{"model":"a","model":"b"}"#),
            ErrorKind::InvalidField
        );
        assert_eq!(
            kind(r#"{"model":"a","stream_options":[]}"#),
            ErrorKind::InvalidField
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            kind(&format!(r#"{{"model":"a","x":{deep}}}"#)),
            ErrorKind::MalformedJson
        );
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH - 1),
            "]".repeat(MAX_JSON_DEPTH - 1)
        );
        assert!(RequestFields::parse(format!(r#"{{"model":"a","x":{ok}}}"#).as_bytes()).is_ok());
        // Brackets inside strings do not count.
        let text = format!(
            r#"{{"model":"a","x":"{}\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(RequestFields::parse(text.as_bytes()).is_ok());
        // An escaped backslash ends before the quote; the brackets after it do count.
        let deep = format!(
            r#"{{"model":"a","x":"\\\\","y":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(kind(&deep), ErrorKind::MalformedJson);
        assert!(!nests_deeper_than(br#"{"a":"[[[[[[[[[[[[[[[[[["#, 3));
        assert!(
            !nests_deeper_than(b"{\"a\":\"\\", 3),
            "a trailing backslash is no panic"
        );
        assert_eq!(kind("\"\u{0}\""), ErrorKind::MalformedJson);
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let body = b"{\"model\":\"\xff\xfe\"}";
        assert_eq!(
            RequestFields::parse(body).unwrap_err().kind,
            ErrorKind::MalformedJson
        );
    }

    /// Mutated and random bodies: any outcome but a panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let seed = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"a\"b\\c"}]}"#;
        let alphabet = b"{}[]\":,\\ab0-.tenu \n";
        for _ in 0..20_000 {
            let mut body = seed.to_vec();
            for _ in 0..rng.usize(1..6) {
                match rng.u8(0..3) {
                    0 if !body.is_empty() => {
                        let at = rng.usize(..body.len());
                        body.remove(at);
                    }
                    1 => {
                        let at = rng.usize(..=body.len());
                        body.insert(at, alphabet[rng.usize(..alphabet.len())]);
                    }
                    _ => body.truncate(rng.usize(..=body.len())),
                }
            }
            let bytes = Bytes::from(body);
            if let Ok(fields) = RequestFields::parse(&bytes) {
                let out = fields
                    .upstream_body(&bytes, Some(b"\"x\""), fields.stream, &[])
                    .unwrap_or_default();
                if fields.stream && !out.is_empty() {
                    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
                    assert_eq!(json["stream_options"]["include_usage"], true);
                }
            }
        }
        for _ in 0..5_000 {
            let noise: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            let _ = RequestFields::parse(&noise);
        }
    }
}
