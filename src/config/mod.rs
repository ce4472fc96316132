//! The YAML config file as typed structs: what an operator writes, before it is compiled.
//!
//! Every struct rejects unknown keys, so a typo is an error at `tollgate check` time rather
//! than a silently ignored setting. Semantic checks (references between sections, loopback
//! rules) happen in `snapshot::compile`, which reports the offending key path.

mod duration;
mod limits;
mod prompts;
mod routes;
mod tracing;
mod vertex;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use duration::{ConfigDuration, parse_duration};
pub use limits::{LimitConfig, RateLimitsConfig};
pub use prompts::{PromptsConfig, VersionName};
pub use routes::{
    RetryConfig, RouteConfig, StickyKey, TimeoutsConfig, UnsupportedParams, VersionConfig,
};
pub use tracing::{OtlpConfig, OtlpProtocol, TracingConfig};
pub use vertex::{VertexCredentials, VertexProviderConfig};

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub routes: BTreeMap<String, RouteConfig>,
    /// OTLP span export; off when absent.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Versioned prompt templates; none when absent.
    #[serde(default)]
    pub prompts: Option<PromptsConfig>,
    /// Settings shared by every token budget (the limits themselves attach to tenants,
    /// routes and versions).
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
}

/// The client-facing API listener. Listener addresses are read at start-up only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Worker threads, each with its own runtime and accept loop; default one per usable core.
    pub workers: Option<usize>,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest upstream non-streaming response body the gateway will hold.
    pub max_response_bytes: usize,
    /// HTTP/1 read buffer; request heads larger than this get 431.
    pub max_header_bytes: usize,
    /// Time a client has to send its complete request head.
    pub header_read_timeout: ConfigDuration,
    /// Time a client has to send its complete request body.
    pub body_read_timeout: ConfigDuration,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub shutdown_grace: ConfigDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: None,
            max_body_bytes: 10 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: ConfigDuration::from_secs(10),
            body_read_timeout: ConfigDuration::from_secs(30),
            shutdown_grace: ConfigDuration::from_secs(30),
        }
    }
}

/// The admin listener (health, readiness, metrics, config and reload).
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Environment variable holding the token that `POST /admin/reload` must present
    /// (`Authorization: Bearer TOKEN`). Without a token, that endpoint is off.
    pub token_env: Option<String>,
    /// File holding that token (a mounted secret), as an alternative to `token_env`.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_env: None,
            token_file: None,
        }
    }
}

/// Client authentication.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `false` is allowed only when every listener is on a loopback address.
    pub enabled: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A tenant: who is calling, with which keys, allowed to use which model aliases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// SHA-256 hashes (hex) of the tenant's client keys, as printed by `tollgate hash-key`.
    #[serde(default)]
    pub key_hashes: Vec<String>,
    /// Model aliases this tenant may use; `"*"` means all.
    pub models: Vec<String>,
    /// May pin a route version with `x-tollgate-version` or `model: "alias@version"`
    /// (release engineers, evaluation jobs). Off by default.
    #[serde(default)]
    pub pin_versions: bool,
    /// Prompt ids this tenant may use (`GET /v1/prompts` lists them); `"*"`, the default,
    /// means all. A prompt still runs only on models the tenant may use.
    #[serde(default = "all_prompts")]
    pub prompts: Vec<String>,
    /// Limits of the tenant as a whole, all its keys together.
    #[serde(default)]
    pub limits: Option<LimitConfig>,
    /// Limits of each key of the tenant, one set of buckets per key.
    #[serde(default)]
    pub key_limits: Option<LimitConfig>,
}

fn all_prompts() -> Vec<String> {
    vec!["*".to_owned()]
}

/// An upstream provider, selected by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// Any OpenAI-compatible server: vLLM, TGI, Ollama, llama.cpp, OpenAI.
    Openai(OpenAiProviderConfig),
    /// Built in, no network: deterministic answers for demos and smoke tests.
    Demo(DemoProviderConfig),
    /// Google's Vertex AI: Gemini behind the OpenAI surface.
    Vertex(VertexProviderConfig),
    /// Vertex AI's OpenAI-compatible endpoints: Google's models or a deployed model, in
    /// OpenAI's format both ways.
    VertexOpenai(VertexProviderConfig),
}

/// Which HTTP version to speak to an upstream.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamHttp {
    /// HTTP/2 when TLS ALPN offers it, HTTP/1.1 otherwise.
    #[default]
    Auto,
    Http1,
    /// HTTP/2 only; on plain `http://` this is h2c with prior knowledge.
    Http2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiProviderConfig {
    /// e.g. `http://127.0.0.1:8000/v1`; surfaces are appended (`/chat/completions`, ...).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Several replicas of one deployment, as base URLs, instead of `base_url`: requests go
    /// to the less loaded of two picked at random, and failing replicas are ejected.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// When a replica is ejected, and for how long.
    #[serde(default)]
    pub ejection: EjectionConfig,
    /// Name of an environment variable holding the upstream API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Path of a file holding the upstream API key (trailing newline ignored).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Extra static headers sent on every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub http: UpstreamHttp,
    /// PEM file with extra CA certificates trusted beside the webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Idle pooled connections kept per upstream host.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    /// HTTP/2 connections per host and worker, requests spread over them in turn: servers
    /// cap the concurrent streams of one connection.
    #[serde(default = "default_http2_connections")]
    pub http2_connections: usize,
}

/// Passive outlier ejection of a provider's endpoints.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionConfig {
    /// Failures in a row (connect errors, first-token timeouts, 429 and 5xx answers) that
    /// eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection period; it doubles with each ejection in a row, up to `max`. A 429's
    /// `retry-after` ejects for at least as long.
    pub base: ConfigDuration,
    pub max: ConfigDuration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base: ConfigDuration::from_secs(5),
            max: ConfigDuration::from_secs(60),
        }
    }
}

pub(crate) fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}

fn default_http2_connections() -> usize {
    1
}

pub(crate) fn default_pool_max_idle() -> usize {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoProviderConfig {
    /// Delay before the first token.
    pub ttft: ConfigDuration,
    /// Delay between tokens when streaming.
    pub inter_token: ConfigDuration,
    /// Output length in tokens (capped by the request's `max_tokens`).
    pub tokens: u32,
    /// Length of demo embedding vectors.
    pub embedding_dims: usize,
}

impl Default for DemoProviderConfig {
    fn default() -> Self {
        Self {
            ttft: ConfigDuration::from_millis(50),
            inter_token: ConfigDuration::from_millis(20),
            tokens: 24,
            embedding_dims: 16,
        }
    }
}

/// Why a config file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Parses YAML text; errors name the key path that is wrong.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            // The YAML parser starts its message with (part of) the same path; say it once.
            let message = match message.split_once(": ") {
                Some((head, rest)) if path.starts_with(head) => rest.to_owned(),
                _ => message,
            };
            ConfigError::Invalid {
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                message,
            }
        })
    }

    /// Reads and parses a config file. A relative `prompts.dir` is taken from the file's
    /// folder, so the gateway finds its prompts whatever its working directory.
    pub fn from_file(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::from_yaml(&text)?;
        config.relative_to(path);
        Ok((config, text))
    }

    /// Takes relative paths in the config as relative to the folder of `file`, the config
    /// file it came from.
    pub fn relative_to(&mut self, file: &Path) {
        if let Some(prompts) = &mut self.prompts
            && prompts.dir.is_relative()
            && let Some(folder) = file.parent()
        {
            prompts.dir = folder.join(&prompts.dir);
        }
    }
}

/// Deserializes a map whose keys must be unique. YAML parsers keep the last of two equal
/// keys; for routes and providers that would silently drop a definition, so it is refused.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map with unique keys")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "`{key}` is defined twice"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(UniqueKeys(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_its_path() {
        let err = Config::from_yaml("server:\n  listen: 127.0.0.1:1\n  bogus: 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("server"), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn provider_type_selects_variant_and_rejects_unknown_fields() {
        let ok = Config::from_yaml(
            "providers:\n  d:\n    type: demo\n    tokens: 3\n  v:\n    type: openai\n    base_url: http://127.0.0.1:1/v1\n",
        )
        .unwrap();
        assert!(matches!(ok.providers["d"], ProviderConfig::Demo(ref d) if d.tokens == 3));
        assert!(matches!(ok.providers["v"], ProviderConfig::Openai(_)));

        let err = Config::from_yaml(
            "providers:\n  v:\n    type: openai\n    base_url: x\n    api_key: sk-secret\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("providers.v"), "{err}");
        assert!(err.contains("api_key"), "{err}");
    }

    #[test]
    fn duplicate_routes_providers_and_versions_are_refused() {
        let demo = "providers:\n  d:\n    type: demo\n";
        for (yaml, path) in [
            (
                format!("{demo}routes:\n  m:\n    provider: d\n  m:\n    provider: d\n"),
                "routes",
            ),
            (format!("{demo}  d:\n    type: demo\n"), "providers"),
            (
                format!(
                    "{demo}routes:\n  m:\n    versions:\n      v: {{provider: d}}\n      v: {{provider: d}}\n"
                ),
                "routes.m.versions",
            ),
        ] {
            let err = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{path}: ")), "{err}");
            assert!(err.contains("is defined twice"), "{err}");
        }
    }

    #[test]
    fn bad_duration_names_its_path() {
        let err = Config::from_yaml("server:\n  header_read_timeout: 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.header_read_timeout"), "{err}");
    }
}
