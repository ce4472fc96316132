//! Token estimates charged to token budgets before an upstream call: the request's input
//! tokens (counted with a bundled BPE tokenizer, or by a chars-per-token rule) plus the output
//! tokens it may produce. The upstream's true usage corrects the charge after the call.
//!
//! What is counted, per surface:
//! - chat `messages`: every string of every message (`role` as one token, `name`, `content`
//!   text, `tool_calls`, `tool_call_id`, ...), where `content` is a string or an array of
//!   parts of which `text` and `refusal` are counted; an `image_url` part counts
//!   [`IMAGE_TOKENS`] ([`IMAGE_LOW_TOKENS`] with `detail: low`), an `input_audio` or `file`
//!   part [`OPAQUE_PART_TOKENS`]; base64 payloads are never read as text. Each message adds
//!   [`TOKENS_PER_MESSAGE`] (plus [`TOKENS_PER_NAME`] with a `name`) and the whole adds
//!   [`REPLY_PRIMING_TOKENS`], OpenAI's figures for its chat format.
//! - completions `prompt` and embeddings `input`: each string is text, each number of a
//!   token array one token, at any nesting; no format overhead.
//! - `tools`: the raw JSON text through the same counter. Upstreams render function
//!   definitions more compactly than JSON, so this leans high; the true-up refunds it.
//!
//! Not counted: `response_format` schemas, `tool_choice`, system prompts an upstream adds.
//!
//! The chars rule is the default: about 0.5 µs for a 1 KiB chat prompt and 6 µs for 16 KiB,
//! where o200k_base takes 22 µs and 180 µs and cl100k_base 39 µs and 320 µs (criterion,
//! `benches/estimate.rs`). A tokenizer is worth its cost where the text is not English prose:
//! see [`DEFAULT_CHARS_PER_TOKEN`].
//!
//! Work is bounded: the tokenizer reads at most [`TOKENIZER_BUDGET_BYTES`] of a request's
//! text; the rest is extrapolated at the tokens-per-byte the tokenizer measured on that
//! request (so a long tail unlike the head is estimated as the head). The JSON walk is linear
//! in the prompt (2.5 to 6 GB/s on plain text, 7 ns per escape such as `\n`), and skips
//! payloads without decoding them. Any JSON shape gives an estimate, never an error; a prompt
//! nested deeper than the JSON parser's recursion limit is counted as its raw text.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

use crate::telemetry::metrics::Operation;

/// Characters per token of the chars rule by default: OpenAI's rule of thumb for English
/// ("one token is about 4 characters of English text"). Measured against o200k_base (the
/// calibration test below), English runs from 3.4 (a markdown system prompt) to 5.2 (flowing
/// prose) chars per token, so the rule gives 0.86 to 1.31 times the true count; code 0.96,
/// Russian 1.01 (0.55 of cl100k_base), Chinese 0.32 (0.21): for Chinese, Japanese or Korean
/// text the rule under-counts about threefold, and a lower ratio or a tokenizer is needed.
pub const DEFAULT_CHARS_PER_TOKEN: f64 = 4.0;
/// The range `chars_per_token` may take.
pub const CHARS_PER_TOKEN_RANGE: std::ops::RangeInclusive<f64> = 0.5..=32.0;
/// Tokens each chat message adds (`<|start|>{role}<|message|>...<|end|>` less the role),
/// and one more with a `name`: OpenAI's cookbook figures for gpt-3.5-turbo and later.
pub const TOKENS_PER_MESSAGE: u64 = 3;
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens priming the reply (`<|start|>assistant<|message|>`), once per chat request.
pub const REPLY_PRIMING_TOKENS: u64 = 3;
/// An image part: a 1024x1024 image at `high`/`auto` detail on gpt-4o (85 + 4 tiles x 170).
/// Images are not decoded to be sized; the true cost varies with size and model.
pub const IMAGE_TOKENS: u64 = 765;
/// An image part with `detail: low`: a flat 85 on gpt-4o, whatever the size.
pub const IMAGE_LOW_TOKENS: u64 = 85;
/// An `input_audio` or `file` part: a placeholder, since neither is decoded to be sized.
pub const OPAQUE_PART_TOKENS: u64 = 765;
/// Text bytes per request the tokenizer reads at most: 8 KiB, about 160 µs of o200k_base
/// on prose and 1.3 ms at worst (a run of one character: spaces, newlines, `!`), where a
/// 64 KiB budget took up to 18 ms.
pub const TOKENIZER_BUDGET_BYTES: usize = 8 * 1024;
/// A `role` longer than this is counted as text, not as one token.
const ROLE_MAX_LEN: usize = 16;

/// How a route counts input tokens before the call.
///
/// In YAML, either a name: `auto`, `o200k_base`, `cl100k_base` or `chars` (at
/// [`DEFAULT_CHARS_PER_TOKEN`]); or a map naming the `method`, where `chars` may set its
/// ratio: `{method: chars, chars_per_token: 3.2}` (within [`CHARS_PER_TOKEN_RANGE`]).
/// `auto` takes the encoding of the upstream model's family (see [`TokenCounting::resolve`]),
/// else the chars rule.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenCounting {
    /// Per model: [`TokenCounting::resolve`] picks the encoding.
    Auto,
    /// OpenAI's o200k_base (gpt-4o, gpt-4.1, gpt-5, o-series, gpt-oss).
    O200kBase,
    /// OpenAI's cl100k_base (gpt-4, gpt-3.5-turbo, text-embedding-3 and ada-002).
    Cl100kBase,
    /// Characters (Unicode scalar values) divided by `chars_per_token`, rounded up.
    Chars { chars_per_token: f64 },
}

impl Default for TokenCounting {
    fn default() -> Self {
        TokenCounting::Chars {
            chars_per_token: DEFAULT_CHARS_PER_TOKEN,
        }
    }
}

impl TokenCounting {
    /// `Auto` made concrete for the upstream model `model` (a `provider/` prefix and an
    /// `ft:` fine-tune wrapper are looked through): the model's tiktoken encoding when it is
    /// o200k_base or cl100k_base, else the chars rule. Other methods are returned as they are.
    pub fn resolve(&self, model: &str) -> TokenCounting {
        if *self != TokenCounting::Auto {
            return self.clone();
        }
        let base = model.rsplit('/').next().unwrap_or(model);
        match get_tokenizer(base) {
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => TokenCounting::O200kBase,
            Some(Tokenizer::Cl100kBase) => TokenCounting::Cl100kBase,
            _ => TokenCounting::default(),
        }
    }
}

impl<'de> Deserialize<'de> for TokenCounting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Method {
            Auto,
            O200kBase,
            Cl100kBase,
            Chars,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            method: Method,
            #[serde(default)]
            chars_per_token: Option<f64>,
        }
        fn build<E: de::Error>(method: Method, ratio: Option<f64>) -> Result<TokenCounting, E> {
            match (method, ratio) {
                (Method::Chars, ratio) => {
                    let chars_per_token = ratio.unwrap_or(DEFAULT_CHARS_PER_TOKEN);
                    check_ratio(chars_per_token).map_err(E::custom)?;
                    Ok(TokenCounting::Chars { chars_per_token })
                }
                (_, Some(_)) => Err(E::custom(
                    "`chars_per_token` goes with `method: chars` only",
                )),
                (Method::Auto, None) => Ok(TokenCounting::Auto),
                (Method::O200kBase, None) => Ok(TokenCounting::O200kBase),
                (Method::Cl100kBase, None) => Ok(TokenCounting::Cl100kBase),
            }
        }
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = TokenCounting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto`, `o200k_base`, `cl100k_base`, `chars`, or a map with `method`")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<TokenCounting, E> {
                let method = Method::deserialize(de::value::StrDeserializer::<E>::new(name))?;
                build(method, None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TokenCounting, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                build(table.method, table.chars_per_token)
            }
        }
        deserializer.deserialize_any(Either)
    }
}

fn check_ratio(chars_per_token: f64) -> Result<(), String> {
    if CHARS_PER_TOKEN_RANGE.contains(&chars_per_token) {
        Ok(())
    } else {
        Err(format!(
            "chars_per_token must be between {} and {}, not {chars_per_token}",
            CHARS_PER_TOKEN_RANGE.start(),
            CHARS_PER_TOKEN_RANGE.end()
        ))
    }
}

/// The bundled encodings, each parsed once per process on first use, never per request nor
/// per snapshot: o200k_base takes about 115 ms and 45 MB, cl100k_base 40 ms and 24 MB.
static O200K_BASE: LazyLock<Result<CoreBPE, String>> =
    LazyLock::new(|| tiktoken_rs::o200k_base().map_err(|e| format!("o200k_base: {e}")));
static CL100K_BASE: LazyLock<Result<CoreBPE, String>> =
    LazyLock::new(|| tiktoken_rs::cl100k_base().map_err(|e| format!("cl100k_base: {e}")));

#[derive(Clone, Copy)]
enum Counter {
    Chars(f64),
    Bpe(&'static CoreBPE, &'static str),
}

/// A route's input-token counter, built once per config snapshot; cheap to copy and share.
#[derive(Clone, Copy)]
pub struct Estimator {
    counter: Counter,
}

impl fmt::Debug for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.counter {
            Counter::Chars(ratio) => write!(f, "Estimator(chars / {ratio})"),
            Counter::Bpe(_, name) => write!(f, "Estimator({name})"),
        }
    }
}

impl Estimator {
    /// The counter of `counting`. The first use of an encoding in the process loads it (about
    /// 115 ms for o200k_base, blocking), so call it where the config snapshot compiles, never
    /// per request. `Auto` should be [resolved](TokenCounting::resolve) first; unresolved, it
    /// counts by the default rule.
    pub fn new(counting: &TokenCounting) -> Result<Estimator, String> {
        let counter = match counting {
            TokenCounting::Auto => Counter::Chars(DEFAULT_CHARS_PER_TOKEN),
            TokenCounting::Chars { chars_per_token } => {
                check_ratio(*chars_per_token)?;
                Counter::Chars(*chars_per_token)
            }
            TokenCounting::O200kBase => {
                Counter::Bpe(O200K_BASE.as_ref().map_err(Clone::clone)?, "o200k_base")
            }
            TokenCounting::Cl100kBase => {
                Counter::Bpe(CL100K_BASE.as_ref().map_err(Clone::clone)?, "cl100k_base")
            }
        };
        Ok(Estimator { counter })
    }

    /// Estimated input tokens of a request on the surface of `op`: `prompt` is the raw
    /// `messages` (chat), `prompt` (completions) or `input` (embeddings); `tools` the raw
    /// `tools`. See the module doc for what counts.
    pub fn input_tokens(
        &self,
        op: Operation,
        prompt: Option<&RawValue>,
        tools: Option<&RawValue>,
    ) -> u64 {
        let mut tally = Tally::new(self.counter);
        if let Some(prompt) = prompt {
            let shape = match op {
                Operation::Chat => Shape::Messages,
                Operation::TextCompletion | Operation::Embeddings => Shape::Any { tokens: true },
            };
            let mut parser = serde_json::Deserializer::from_str(prompt.get());
            let walk = Walk {
                tally: &mut tally,
                shape,
            };
            if walk.deserialize(&mut parser).is_err() {
                // Nested past the parser's limit: its raw text is the estimate.
                tally = Tally::new(self.counter);
                tally.text(prompt.get());
            }
        }
        if let Some(tools) = tools {
            tally.text(tools.get());
        }
        if op == Operation::Chat {
            tally.fixed = tally.fixed.saturating_add(REPLY_PRIMING_TOKENS);
        }
        tally.total()
    }

    /// Estimated tokens of plain text (no format overhead), within the same bound of work.
    pub fn text_tokens(&self, text: &str) -> u64 {
        let mut tally = Tally::new(self.counter);
        tally.text(text);
        tally.total()
    }
}

/// Output tokens to reserve: the request's `max_tokens` (or `max_completion_tokens`) when it
/// sets one, at most `cap`; else `cap`. A request asking for `n` choices may produce `n`
/// times this; embeddings produce none.
pub fn output_reservation(requested: Option<u64>, cap: u64) -> u64 {
    requested.map_or(cap, |requested| requested.min(cap))
}

/// The running count of one request.
struct Tally {
    counter: Counter,
    /// Characters seen (chars rule).
    chars: u64,
    /// Tokens the tokenizer counted, over `bpe_bytes` bytes of text.
    bpe_tokens: u64,
    bpe_bytes: u64,
    /// Text bytes past the tokenizer's budget, extrapolated.
    rest_bytes: u64,
    /// Bytes the tokenizer may still read.
    budget: usize,
    /// Format overhead, images, token ids.
    fixed: u64,
    /// The image being read asked for `detail: low`.
    low_detail: bool,
}

impl Tally {
    fn new(counter: Counter) -> Tally {
        Tally {
            counter,
            chars: 0,
            bpe_tokens: 0,
            bpe_bytes: 0,
            rest_bytes: 0,
            budget: TOKENIZER_BUDGET_BYTES,
            fixed: 0,
            low_detail: false,
        }
    }

    fn text(&mut self, text: &str) {
        let bpe = match self.counter {
            Counter::Chars(_) => {
                self.chars = self.chars.saturating_add(text.chars().count() as u64);
                return;
            }
            Counter::Bpe(bpe, _) => bpe,
        };
        let head = &text[..text.floor_char_boundary(self.budget)];
        if head.is_empty() {
            self.rest_bytes = self.rest_bytes.saturating_add(text.len() as u64);
            return;
        }
        // The vendored tokenizer unwraps its regex's result; a panic there costs this text's
        // exact count, not the request.
        match catch_unwind(AssertUnwindSafe(|| bpe.encode_ordinary(head).len())) {
            Ok(tokens) => {
                self.bpe_tokens = self.bpe_tokens.saturating_add(tokens as u64);
                self.bpe_bytes = self.bpe_bytes.saturating_add(head.len() as u64);
                self.budget -= head.len();
                self.rest_bytes = self
                    .rest_bytes
                    .saturating_add((text.len() - head.len()) as u64);
            }
            Err(_) => self.rest_bytes = self.rest_bytes.saturating_add(text.len() as u64),
        }
    }

    fn total(&self) -> u64 {
        let text = match self.counter {
            Counter::Chars(ratio) => (self.chars as f64 / ratio).ceil() as u64,
            Counter::Bpe(..) => {
                let rest = if self.bpe_bytes > 0 {
                    let rest = u128::from(self.rest_bytes) * u128::from(self.bpe_tokens);
                    u64::try_from(rest.div_ceil(u128::from(self.bpe_bytes))).unwrap_or(u64::MAX)
                } else {
                    (self.rest_bytes as f64 / DEFAULT_CHARS_PER_TOKEN).ceil() as u64
                };
                self.bpe_tokens.saturating_add(rest)
            }
        };
        text.saturating_add(self.fixed)
    }
}

/// What a JSON value of the prompt is read as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Chat `messages`: an array of messages (an object is taken as one message).
    Messages,
    Message,
    /// A message's `role`: one token when short.
    Role,
    /// A message's `content`: text, or an array of parts (an object is taken as one part).
    Content,
    Part,
    /// An `image_url` part's value: a string, or a map with `url` and `detail`.
    Image,
    Detail,
    /// Anything else: strings are text, keys are not; numbers are tokens when `tokens`.
    Any {
        tokens: bool,
    },
}

/// The keys the walk tells apart.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Role,
    Content,
    Name,
    #[serde(alias = "refusal")]
    Text,
    ImageUrl,
    #[serde(alias = "input_audio")]
    File,
    Detail,
    #[serde(other)]
    Other,
}

/// Counts one JSON value of shape `shape` into `tally`. Takes every JSON type in every
/// shape, so only the parser's own limits can fail it.
struct Walk<'t> {
    tally: &'t mut Tally,
    shape: Shape,
}

impl Walk<'_> {
    fn at(&mut self, shape: Shape) -> Walk<'_> {
        Walk {
            tally: self.tally,
            shape,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        match self.shape {
            Shape::Role if text.len() <= ROLE_MAX_LEN => {
                self.tally.fixed = self.tally.fixed.saturating_add(1)
            }
            Shape::Image => self.tally.fixed = self.tally.fixed.saturating_add(IMAGE_TOKENS),
            Shape::Detail => self.tally.low_detail = text == "low",
            _ => self.tally.text(text),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.number()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.number()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.number()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let (inner, each) = match self.shape {
            Shape::Messages => (Shape::Message, TOKENS_PER_MESSAGE),
            Shape::Content => (Shape::Part, 0),
            Shape::Image | Shape::Detail => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            Shape::Any { tokens } => (Shape::Any { tokens }, 0),
            Shape::Message | Shape::Role | Shape::Part => (Shape::Any { tokens: false }, 0),
        };
        while seq.next_element_seed(self.at(inner))?.is_some() {
            self.tally.fixed = self.tally.fixed.saturating_add(each);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let shape = match self.shape {
            Shape::Messages => {
                self.tally.fixed = self.tally.fixed.saturating_add(TOKENS_PER_MESSAGE);
                Shape::Message
            }
            Shape::Content => Shape::Part,
            shape => shape,
        };
        let text = Shape::Any { tokens: false };
        if shape == Shape::Image {
            self.tally.low_detail = false;
        }
        while let Some(key) = map.next_key::<Key>()? {
            let inner = match (shape, key) {
                (Shape::Message, Key::Role) => Some(Shape::Role),
                (Shape::Message, Key::Content) => Some(Shape::Content),
                (Shape::Message, Key::Name) => {
                    self.tally.fixed = self.tally.fixed.saturating_add(TOKENS_PER_NAME);
                    Some(text)
                }
                (Shape::Message, _) => Some(text),
                (Shape::Part, Key::Text) => Some(text),
                (Shape::Part, Key::ImageUrl) => Some(Shape::Image),
                (Shape::Part, Key::File) => {
                    self.tally.fixed = self.tally.fixed.saturating_add(OPAQUE_PART_TOKENS);
                    None
                }
                (Shape::Image, Key::Detail) => Some(Shape::Detail),
                (Shape::Part | Shape::Image | Shape::Detail, _) => None,
                (Shape::Any { tokens }, _) => Some(Shape::Any { tokens }),
                (Shape::Role | Shape::Messages | Shape::Content, _) => Some(text),
            };
            match inner {
                Some(inner) => map.next_value_seed(self.at(inner))?,
                None => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        if shape == Shape::Image {
            let tokens = if self.tally.low_detail {
                IMAGE_LOW_TOKENS
            } else {
                IMAGE_TOKENS
            };
            self.tally.fixed = self.tally.fixed.saturating_add(tokens);
        }
        Ok(())
    }
}

impl Walk<'_> {
    fn number<E>(self) -> Result<(), E> {
        if self.shape == (Shape::Any { tokens: true }) {
            self.tally.fixed = self.tally.fixed.saturating_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "estimate_tests.rs"]
mod tests;
