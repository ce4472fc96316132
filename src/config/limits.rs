//! Rate limits and token budgets as written: what one limit allows, and where limits attach
//! (a tenant, each key of a tenant, a route, each tenant on a route, a route version).

use serde::Deserialize;

use crate::ratelimit::estimate::TokenCounting;

/// One limit: any of requests per second or minute, tokens per minute, hour or day (all,
/// input only, output only), and requests in flight. Every rule set must pass.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    #[serde(default)]
    pub requests_per_second: Option<u64>,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_hour: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub input_tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub input_tokens_per_hour: Option<u64>,
    #[serde(default)]
    pub input_tokens_per_day: Option<u64>,
    #[serde(default)]
    pub output_tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub output_tokens_per_hour: Option<u64>,
    #[serde(default)]
    pub output_tokens_per_day: Option<u64>,
    /// Requests in flight at once; a stream counts until it ends.
    #[serde(default)]
    pub concurrent: Option<u32>,
}

impl LimitConfig {
    /// The first rule set to 0, which no request could ever pass (or which would be read
    /// as 1): refused when the config compiles.
    pub fn zero_rule(&self) -> Option<&'static str> {
        let c = self;
        [
            ("requests_per_second", c.requests_per_second),
            ("requests_per_minute", c.requests_per_minute),
            ("tokens_per_minute", c.tokens_per_minute),
            ("tokens_per_hour", c.tokens_per_hour),
            ("tokens_per_day", c.tokens_per_day),
            ("input_tokens_per_minute", c.input_tokens_per_minute),
            ("input_tokens_per_hour", c.input_tokens_per_hour),
            ("input_tokens_per_day", c.input_tokens_per_day),
            ("output_tokens_per_minute", c.output_tokens_per_minute),
            ("output_tokens_per_hour", c.output_tokens_per_hour),
            ("output_tokens_per_day", c.output_tokens_per_day),
            ("concurrent", c.concurrent.map(u64::from)),
        ]
        .into_iter()
        .find(|(_, value)| *value == Some(0))
        .map(|(key, _)| key)
    }
}

/// Settings every token budget shares.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Output tokens reserved before the call: the request's `max_tokens` (or
    /// `max_completion_tokens`), at most this; this when it sets none. The true usage
    /// corrects the reservation after the call.
    pub max_output_reservation: u64,
    /// How input tokens are counted before the call, unless a route says otherwise:
    /// `chars` (4 characters a token, the default), `auto` (the upstream model's tiktoken
    /// encoding when it has one, else `chars`), `o200k_base`, `cl100k_base`, or
    /// `{method: chars, chars_per_token: 3.2}`.
    pub token_counting: TokenCounting,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            max_output_reservation: 4096,
            token_counting: TokenCounting::default(),
        }
    }
}
