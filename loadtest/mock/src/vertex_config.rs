//! The Vertex part of [`MockConfig`]: auth, the token endpoint, and Gemini outcomes on demand
//! (the `x-mock-gemini` header and `--gemini-outcome` flag share one spec, parsed here).

use std::str::FromStr;
use std::time::Duration;

use crate::config::{MockConfig, SpecError, parse_duration};
use crate::fixtures;
use crate::google_error::GrpcStatus;

/// How the Vertex (Gemini) surface behaves.
#[derive(Clone, Debug)]
pub struct VertexConfig {
    /// Outcome of every Gemini request unless `x-mock-gemini` replaces it.
    pub outcome: Option<GeminiOutcome>,
    /// Thoughts tokens reported when a request asks for thinking: `min(thinkingBudget, this)`
    /// (this alone for a dynamic budget of -1 or a `thinkingLevel`).
    pub thoughts_tokens: usize,
    /// Output tokens per streamed event (Gemini streams text in chunks, not token by token).
    pub tokens_per_event: usize,
    pub auth: VertexAuth,
    pub token: TokenEndpoint,
}

impl Default for VertexConfig {
    fn default() -> Self {
        Self {
            outcome: None,
            thoughts_tokens: 8,
            tokens_per_event: 4,
            auth: VertexAuth::default(),
            token: TokenEndpoint::default(),
        }
    }
}

/// Credentials the Vertex paths accept. With none configured and `require_auth` off, any
/// request passes; otherwise a request needs an accepted `x-goog-api-key`, or an
/// `Authorization: Bearer` token that is listed here or was issued (and is unexpired) by this
/// mock's token or metadata endpoint.
#[derive(Clone, Debug, Default)]
pub struct VertexAuth {
    pub api_keys: Vec<String>,
    pub bearer_tokens: Vec<String>,
    /// Enforce auth even with no key or token listed (then only issued tokens pass).
    pub require_auth: bool,
    /// Projects the credentials may use; empty allows all. A path naming another project
    /// answers 403 `PERMISSION_DENIED`.
    pub projects: Vec<String>,
}

impl VertexAuth {
    /// Whether requests must carry credentials.
    pub fn enforced(&self) -> bool {
        self.require_auth || !self.api_keys.is_empty() || !self.bearer_tokens.is_empty()
    }
}

/// The OAuth token endpoint (RFC 7523 JWT bearer grant, as at Google's `token_uri`).
#[derive(Clone, Debug)]
pub struct TokenEndpoint {
    /// Path of the endpoint, e.g. `/token`.
    pub path: String,
    /// SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`) that assertions must be signed with.
    pub public_key_pem: String,
    /// Required `iss`.
    pub client_email: String,
    /// Required header `kid`; `None` accepts any (but a `kid` must be present).
    pub key_id: Option<String>,
    /// Required `aud`; `None` means this endpoint's own URL, `http://LISTEN_ADDR{path}`.
    pub audience: Option<String>,
    /// `expires_in` of issued tokens (also the lifetime the mock enforces), in seconds.
    pub expires_in: u64,
}

impl Default for TokenEndpoint {
    /// Verifies assertions signed with the committed test key ([`fixtures`]).
    fn default() -> Self {
        Self {
            path: "/token".to_owned(),
            public_key_pem: fixtures::PUBLIC_KEY_PEM.to_owned(),
            client_email: fixtures::CLIENT_EMAIL.to_owned(),
            key_id: Some(fixtures::PRIVATE_KEY_ID.to_owned()),
            audience: None,
            expires_in: 3599,
        }
    }
}

/// Builders for the Vertex settings, so tests need not spell the nested structs.
impl MockConfig {
    /// Accepts `x-goog-api-key: KEY` (and enforces auth).
    pub fn with_vertex_api_key(mut self, key: impl Into<String>) -> Self {
        self.vertex.auth.api_keys.push(key.into());
        self
    }

    /// Accepts `Authorization: Bearer TOKEN` (and enforces auth).
    pub fn with_vertex_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.vertex.auth.bearer_tokens.push(token.into());
        self
    }

    /// Enforces auth: only listed credentials and tokens this mock issued pass.
    pub fn with_vertex_auth_required(mut self) -> Self {
        self.vertex.auth.require_auth = true;
        self
    }

    /// Restricts the credentials to these projects (others get 403).
    pub fn with_vertex_project(mut self, project: impl Into<String>) -> Self {
        self.vertex.auth.projects.push(project.into());
        self
    }

    /// Verifies token assertions against another key and issuer than the fixture's.
    pub fn with_token_signer(
        mut self,
        public_key_pem: impl Into<String>,
        client_email: impl Into<String>,
        key_id: Option<String>,
    ) -> Self {
        self.vertex.token.public_key_pem = public_key_pem.into();
        self.vertex.token.client_email = client_email.into();
        self.vertex.token.key_id = key_id;
        self
    }

    /// Lifetime of issued tokens, in seconds.
    pub fn with_token_expires_in(mut self, seconds: u64) -> Self {
        self.vertex.token.expires_in = seconds;
        self
    }

    /// The outcome of every Gemini request (a request's `x-mock-gemini` replaces it).
    pub fn with_gemini_outcome(mut self, outcome: GeminiOutcome) -> Self {
        self.vertex.outcome = Some(outcome);
        self
    }
}

/// `promptFeedback.blockReason` values.
const BLOCK_REASONS: [&str; 7] = [
    "SAFETY",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "MODEL_ARMOR",
    "IMAGE_SAFETY",
    "JAILBREAK",
];

/// `candidates[].finishReason` values.
pub(crate) const FINISH_REASONS: [&str; 11] = [
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MALFORMED_FUNCTION_CALL",
    "MODEL_ARMOR",
    "IMAGE_SAFETY",
];

/// What a Gemini request should produce beyond the ordinary answer. Parsed from a
/// comma-separated list of directives (see the crate docs for the syntax).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeminiOutcome {
    pub(crate) blocked: Option<&'static str>,
    pub(crate) finish: Option<&'static str>,
    pub(crate) tool_calls: Option<usize>,
    pub(crate) thoughts: Option<usize>,
    pub(crate) cached: Option<u64>,
    pub(crate) error: Option<InjectedError>,
}

/// `error=STATUS[:retry=DURATION][:after=N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InjectedError {
    pub(crate) status: GrpcStatus,
    pub(crate) retry: Option<Duration>,
    /// Streams only: send N events, then the error as an event of the 200 stream.
    pub(crate) after: Option<usize>,
}

fn known(list: &[&'static str], value: &str, what: &str) -> Result<&'static str, SpecError> {
    list.iter()
        .find(|name| name.eq_ignore_ascii_case(value.trim()))
        .copied()
        .ok_or_else(|| {
            SpecError::new(format!(
                "{what} `{value}`: expected one of {}",
                list.join(", ")
            ))
        })
}

fn count(directive: &str, value: Option<&str>) -> Result<usize, SpecError> {
    let value =
        value.ok_or_else(|| SpecError::new(format!("gemini outcome `{directive}`: missing =N")))?;
    value.trim().parse().map_err(|_| {
        SpecError::new(format!(
            "gemini outcome `{directive}`: `{value}` is not a count"
        ))
    })
}

fn parse_error(spec: &str) -> Result<InjectedError, SpecError> {
    let mut options = spec.split(':');
    let name = options.next().unwrap_or_default();
    let status = GrpcStatus::parse(name).ok_or_else(|| {
        SpecError::new(format!(
            "gemini outcome `error={spec}`: `{name}` is not a status such as RESOURCE_EXHAUSTED"
        ))
    })?;
    let mut error = InjectedError {
        status,
        retry: None,
        after: None,
    };
    for option in options {
        match option.trim().split_once('=') {
            Some(("retry", delay)) => error.retry = Some(parse_duration(delay)?),
            Some(("after", n)) => error.after = Some(count("error:after", Some(n))?),
            _ => {
                return Err(SpecError::new(format!(
                    "gemini outcome `error={spec}`: unknown option `{option}` (retry=, after=)"
                )));
            }
        }
    }
    Ok(error)
}

impl FromStr for GeminiOutcome {
    type Err = SpecError;

    /// `none` (or an empty string) is the ordinary answer.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut outcome = GeminiOutcome::default();
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (directive, None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("none", None) => {}
                ("blocked", None) => outcome.blocked = Some("SAFETY"),
                ("blocked", Some(reason)) => {
                    outcome.blocked = Some(known(&BLOCK_REASONS, reason, "block reason")?);
                }
                ("safety", None) => outcome.finish = Some("SAFETY"),
                ("max_tokens", None) => outcome.finish = Some("MAX_TOKENS"),
                ("finish", Some(reason)) => {
                    outcome.finish = Some(known(&FINISH_REASONS, reason, "finish reason")?);
                }
                ("tool_call", None) => outcome.tool_calls = Some(1),
                ("tool_call", n) => {
                    let n = count(directive, n)?;
                    if n == 0 {
                        return Err(SpecError::new("gemini outcome `tool_call=0`: use N >= 1"));
                    }
                    outcome.tool_calls = Some(n);
                }
                ("thoughts", n) => outcome.thoughts = Some(count(directive, n)?),
                ("cached", n) => outcome.cached = Some(count(directive, n)? as u64),
                ("error", Some(spec)) => outcome.error = Some(parse_error(spec)?),
                _ => {
                    return Err(SpecError::new(format!(
                        "unknown gemini outcome `{directive}`: expected blocked[=REASON], safety, \
                         max_tokens, finish=REASON, tool_call[=N], thoughts=N, cached=N, \
                         error=STATUS[:retry=DURATION][:after=N] or none"
                    )));
                }
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives() {
        let o: GeminiOutcome = "thoughts=12, tool_call=2 ,cached=5".parse().unwrap();
        assert_eq!(o.thoughts, Some(12));
        assert_eq!(o.tool_calls, Some(2));
        assert_eq!(o.cached, Some(5));
        assert_eq!(
            "blocked".parse::<GeminiOutcome>().unwrap().blocked,
            Some("SAFETY")
        );
        assert_eq!(
            "blocked=prohibited_content"
                .parse::<GeminiOutcome>()
                .unwrap()
                .blocked,
            Some("PROHIBITED_CONTENT")
        );
        assert_eq!(
            "safety".parse::<GeminiOutcome>().unwrap().finish,
            Some("SAFETY")
        );
        assert_eq!(
            "finish=RECITATION".parse::<GeminiOutcome>().unwrap().finish,
            Some("RECITATION")
        );
        assert_eq!(
            "none".parse::<GeminiOutcome>().unwrap(),
            GeminiOutcome::default()
        );
        let error = "error=RESOURCE_EXHAUSTED:retry=1.5s:after=2"
            .parse::<GeminiOutcome>()
            .unwrap()
            .error
            .unwrap();
        assert_eq!(error.status.http, 429);
        assert_eq!(error.retry, Some(Duration::from_millis(1500)));
        assert_eq!(error.after, Some(2));
        let by_code = "error=503".parse::<GeminiOutcome>().unwrap().error.unwrap();
        assert_eq!(by_code.status.name, "UNAVAILABLE");
    }

    #[test]
    fn rejects_bad_directives() {
        for bad in [
            "explode",
            "blocked=MAYBE",
            "finish=DONE",
            "tool_call=0",
            "thoughts",
            "thoughts=x",
            "error=TEAPOT",
            "error=INTERNAL:retry=soon",
            "error=INTERNAL:colour=red",
            "safety=1",
        ] {
            assert!(bad.parse::<GeminiOutcome>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builders_fill_the_vertex_config() {
        let config = MockConfig::default()
            .with_vertex_api_key("k")
            .with_vertex_bearer_token("t")
            .with_vertex_project("p")
            .with_token_expires_in(60);
        assert!(config.vertex.auth.enforced());
        assert_eq!(config.vertex.auth.api_keys, ["k"]);
        assert_eq!(config.vertex.auth.bearer_tokens, ["t"]);
        assert_eq!(config.vertex.auth.projects, ["p"]);
        assert_eq!(config.vertex.token.expires_in, 60);
        assert!(!MockConfig::default().vertex.auth.enforced());
        assert!(
            MockConfig::default()
                .with_vertex_auth_required()
                .vertex
                .auth
                .enforced()
        );
    }
}
