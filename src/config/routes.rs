//! Routes as written: a model alias, its versions and their weights, stickiness, timeouts.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigDuration, LimitConfig, VersionName};

/// A model alias clients put in `model`. Either the short form (one upstream: `provider`,
/// `upstream_model`) or `versions`, never both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Short form: the one version's provider (the version is named `default`).
    #[serde(default)]
    pub provider: Option<String>,
    /// Short form: model name sent upstream; defaults to the alias (TGI needs `tgi`).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Timeouts for every version that does not set its own.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Named versions and their traffic weights.
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub versions: BTreeMap<String, VersionConfig>,
    /// What keeps a caller on one version while weights stay put: `tenant`, `user` (the
    /// OpenAI `user` field) or `header:NAME`. Without it, each request draws by weight.
    #[serde(default)]
    pub sticky: Option<String>,
    /// Versions to try, in order, when the chosen one fails in a way worth retrying.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Record prompts and completions on this route's spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`). Off by default: content often holds personal data.
    #[serde(default)]
    pub trace_content: bool,
    /// For versions on providers that do not speak OpenAI (Vertex AI): what to do with a
    /// request parameter that has no equivalent there. `reject` (the default) answers 400
    /// naming it; `drop` sends the request without it.
    #[serde(default)]
    pub unsupported_params: UnsupportedParams,
    /// Canaries of prompt versions on this route: per prompt id, version -> weight. A request
    /// for that prompt naming neither a version nor a label draws its version here, by the
    /// route's `sticky` rule, instead of taking the prompt's `production` label.
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub prompt_versions: BTreeMap<String, BTreeMap<VersionName, u32>>,
    /// Limits of the route, every caller together.
    #[serde(default)]
    pub limits: Option<LimitConfig>,
    /// Limits of each tenant on this route, one set of buckets per tenant.
    #[serde(default)]
    pub tenant_limits: Option<LimitConfig>,
    /// How this route's versions count input tokens for token budgets; default
    /// `rate_limits.token_counting`.
    #[serde(default)]
    pub token_counting: Option<crate::ratelimit::estimate::TokenCounting>,
}

/// What to do with an OpenAI parameter Gemini has no equivalent for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedParams {
    /// Answer 400 naming the parameter: the caller learns it had no effect.
    #[default]
    Reject,
    /// Leave it out of the upstream request.
    Drop,
}

/// A route's retry budget.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included; default one per version in the plan (the chosen
    /// version, then each fallback). Past the plan's end, the last version is tried again.
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt; it doubles each time, with full jitter.
    pub backoff: ConfigDuration,
    /// Longest wait between attempts. A `retry-after` longer than this is not waited out:
    /// that version is skipped instead.
    pub max_backoff: ConfigDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: None,
            backoff: ConfigDuration::from_millis(50),
            max_backoff: ConfigDuration::from_secs(2),
        }
    }
}

/// One version of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    pub provider: String,
    /// Model name sent upstream; defaults to the alias.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Share of traffic, relative to the other versions; 0 takes only pinned requests.
    /// Default 1, or 0 for a shadow version.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Makes this a shadow version: this fraction of the route's requests (0 < rate <= 1) is
    /// also sent here, and the answer is recorded in metrics and logs, then dropped.
    #[serde(default)]
    pub shadow: Option<f64>,
    /// Overrides the route's timeouts for this version.
    #[serde(default)]
    pub timeouts: Option<TimeoutsConfig>,
    /// Extra headers on this version's upstream requests (beside the provider's own).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Generation parameters set when the caller did not set them (`temperature`, `top_p`,
    /// `max_tokens`, `max_completion_tokens`, `presence_penalty`, `frequency_penalty`,
    /// `seed`, `stop`, `n`, `reasoning_effort`).
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Limits of this version, every caller together.
    #[serde(default)]
    pub limits: Option<LimitConfig>,
}

/// Where a sticky route finds its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickyKey {
    Tenant,
    User,
    Header(http::HeaderName),
}

impl StickyKey {
    /// Parses `tenant`, `user` or `header:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "tenant" => Ok(StickyKey::Tenant),
            "user" => Ok(StickyKey::User),
            _ => match text.strip_prefix("header:") {
                Some(name) => http::HeaderName::try_from(name.trim())
                    .map(StickyKey::Header)
                    .map_err(|_| format!("`{name}` is not a valid header name")),
                None => Err("expected `tenant`, `user` or `header:NAME`".into()),
            },
        }
    }
}

/// Per-route upstream timeouts.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Until the upstream answers with headers and, when streaming, its first event.
    pub first_token: ConfigDuration,
    /// Longest silence between two upstream body chunks once the answer has begun.
    pub idle: ConfigDuration,
    /// The whole upstream exchange, body included.
    pub total: ConfigDuration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            first_token: ConfigDuration::from_secs(60),
            idle: ConfigDuration::from_secs(30),
            total: ConfigDuration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_keys_parse() {
        assert_eq!(StickyKey::parse("tenant"), Ok(StickyKey::Tenant));
        assert_eq!(StickyKey::parse("user"), Ok(StickyKey::User));
        assert_eq!(
            StickyKey::parse("header:X-User-Id"),
            Ok(StickyKey::Header(http::HeaderName::from_static(
                "x-user-id"
            )))
        );
        assert!(StickyKey::parse("header:bad name").is_err());
        assert!(StickyKey::parse("cookie").is_err());
    }

    #[test]
    fn prompt_splits_read_version_names_as_text() {
        let route: RouteConfig =
            serde_norway::from_str("provider: d\nprompt_versions:\n  answer: {1: 95, \"2\": 5}\n")
                .unwrap();
        let split = &route.prompt_versions["answer"];
        assert_eq!(split[&VersionName("1".into())], 95);
        assert_eq!(split[&VersionName("2".into())], 5);
    }
}
