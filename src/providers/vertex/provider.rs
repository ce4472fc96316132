//! The `vertex` provider as compiled from config: the Vertex AI host for a location, the
//! resource path of a model, the connections to it, and the credentials that sign requests.

use std::fmt;

use sha2::{Digest, Sha256};

use super::credentials::{Credentials, TokenHttp};
use super::labels::billing_labels;
use super::request;
use crate::config::{
    OpenAiProviderConfig, UnsupportedParams, VertexCredentials, VertexProviderConfig,
};
use crate::error::{ErrorKind, GatewayError};
use crate::exchange::Exchange;
use crate::providers::openai::{CompileProblem, OpenAiProvider};
use crate::snapshot::Version;
use crate::telemetry::metrics::Metrics;
use crate::upstream::{Call, Outbound, Surface, VertexCall};

/// A compiled Vertex AI provider.
pub struct VertexProvider {
    pub name: Box<str>,
    /// The connections to the Vertex host: pooling, HTTP/2, ejection and health as for any
    /// OpenAI-compatible upstream; the request path is given per call.
    pub upstream: OpenAiProvider,
    /// `/{version}/projects/{project}/locations/{location}`, or `/{version}` in express mode:
    /// a model's resource path follows.
    resource_prefix: Box<str>,
    pub api: VertexApi,
    pub credentials: Credentials,
    /// Digest of the config and credentials: a reload keeps the running provider (its
    /// connections and cached token) while this is unchanged.
    pub fingerprint: [u8; 32],
}

impl fmt::Debug for VertexProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VertexProvider")
            .field("name", &self.name)
            .field("resource_prefix", &self.resource_prefix)
            .finish_non_exhaustive()
    }
}

/// Which Vertex AI API a provider speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VertexApi {
    /// `generateContent`: requests translated to Gemini's format and answers back.
    Gemini,
    /// The OpenAI-compatible endpoint `endpoint`: `openapi` for Google's models, or the id
    /// of a model deployed to the project (a vLLM container, say). `raw_predict` calls
    /// its `:rawPredict`/`:streamRawPredict` instead of `/chat/completions`.
    OpenAi {
        endpoint: Box<str>,
        raw_predict: bool,
    },
}

impl VertexApi {
    /// The API of a provider of type `vertex` (`openai: false`) or `vertex_openai`.
    fn of(cfg: &VertexProviderConfig, openai: bool) -> Result<VertexApi, CompileProblem> {
        if !openai {
            return match (&cfg.endpoint, cfg.raw_predict) {
                (None, false) => Ok(VertexApi::Gemini),
                (Some(_), _) => Err(("endpoint".into(), "only for type vertex_openai".into())),
                (None, true) => Err(("raw_predict".into(), "only for type vertex_openai".into())),
            };
        }
        let endpoint = cfg.endpoint.as_deref().unwrap_or("openapi");
        let numeric = !endpoint.is_empty() && endpoint.bytes().all(|b| b.is_ascii_digit());
        if endpoint != "openapi" && !numeric {
            return Err((
                "endpoint".into(),
                "`openapi` or the numeric id of a deployed model's endpoint".into(),
            ));
        }
        if cfg.raw_predict && !numeric {
            return Err((
                "raw_predict".into(),
                "needs the numeric endpoint id of a deployed model".into(),
            ));
        }
        Ok(VertexApi::OpenAi {
            endpoint: endpoint.into(),
            raw_predict: cfg.raw_predict,
        })
    }
}

/// The Vertex AI host serving `location`.
pub fn host(location: &str) -> String {
    match location {
        "global" => "aiplatform.googleapis.com".to_owned(),
        // The multi-region endpoints keep processing within the US or the EU.
        "us" | "eu" => format!("aiplatform.{location}.rep.googleapis.com"),
        region => format!("{region}-aiplatform.googleapis.com"),
    }
}

/// A project id, location or model id fit for a URL path: letters, digits and `-_.@`.
fn path_safe(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl VertexProvider {
    /// Compiles a provider of type `vertex` (`openai: false`) or `vertex_openai`.
    pub fn compile(
        name: &str,
        cfg: &VertexProviderConfig,
        openai: bool,
        workers: usize,
        metrics: &Metrics,
    ) -> Result<Self, CompileProblem> {
        let api = VertexApi::of(cfg, openai)?;
        // Express mode has no project; the OpenAI-compatible endpoints live in one.
        let express = matches!(cfg.credentials, VertexCredentials::ApiKey { .. }) && !openai;
        if !matches!(cfg.api_version.as_str(), "v1" | "v1beta1") {
            return Err(("api_version".into(), "must be v1 or v1beta1".into()));
        }
        if !path_safe(&cfg.location) {
            return Err(("location".into(), "not a Vertex AI location".into()));
        }
        let resource_prefix = match (&cfg.project, express) {
            (Some(project), _) if path_safe(project) => format!(
                "/{}/projects/{project}/locations/{}",
                cfg.api_version, cfg.location
            ),
            (Some(_), _) => return Err(("project".into(), "not a project id".into())),
            (None, true) => format!("/{}", cfg.api_version),
            (None, false) => {
                return Err((
                    "project".into(),
                    "required, except for type vertex with credentials of type api_key (express mode)"
                        .into(),
                ));
            }
        };
        let base_url = match &cfg.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://{}", host(&cfg.location)),
        };
        let connections = OpenAiProviderConfig {
            base_url: Some(base_url),
            endpoints: Vec::new(),
            ejection: cfg.ejection,
            api_key_env: None,
            api_key_file: None,
            headers: Default::default(),
            http: cfg.http,
            ca_file: cfg.ca_file.clone(),
            connect_timeout: cfg.connect_timeout,
            pool_max_idle_per_host: cfg.pool_max_idle_per_host,
            http2_connections: cfg.http2_connections,
        };
        // Its problems name keys the vertex config shares (base_url, ca_file, ...).
        let upstream = OpenAiProvider::compile(name, &connections, workers, metrics)?;
        let credentials = Credentials::from_config_with(&cfg.credentials, &TokenHttp::of(cfg))
            .map_err(|(key, why)| (format!("credentials.{key}"), why))?;
        let mut digest = Sha256::new();
        digest.update(format!("{cfg:?} {api:?}").as_bytes());
        digest.update(credentials.fingerprint());
        Ok(Self {
            name: name.into(),
            upstream,
            resource_prefix: resource_prefix.into(),
            api,
            credentials,
            fingerprint: digest.finalize().into(),
        })
    }

    /// The path of a generation on `model`: streams ask for SSE framing.
    pub fn generate_path(&self, model: &str, stream: bool) -> String {
        let method = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        self.method_path(model, method)
    }

    /// The path of `method` on `model`: a publisher model id (`gemini-2.5-flash`, taken as
    /// Google's), `publishers/{publisher}/models/{id}`, or `endpoints/{id}` (a model deployed
    /// to the project).
    fn method_path(&self, model: &str, method: &str) -> String {
        let prefix = &self.resource_prefix;
        if model.starts_with("publishers/") || model.starts_with("endpoints/") {
            format!("{prefix}/{model}:{method}")
        } else {
            format!("{prefix}/publishers/google/models/{model}:{method}")
        }
    }

    /// The path of an OpenAI-compatible call to `endpoint`.
    fn openai_path(&self, endpoint: &str, raw_predict: bool, stream: bool) -> String {
        let prefix = &self.resource_prefix;
        match (raw_predict, stream) {
            (false, _) => format!("{prefix}/endpoints/{endpoint}/chat/completions"),
            (true, false) => format!("{prefix}/endpoints/{endpoint}:rawPredict"),
            (true, true) => format!("{prefix}/endpoints/{endpoint}:streamRawPredict"),
        }
    }

    /// `out`, an OpenAI chat request for `version`, as the Vertex AI call that serves it:
    /// translated to Gemini with billing labels (or left in OpenAI's format for the
    /// OpenAI-compatible endpoints), its path, the credentials' header.
    pub async fn call(
        &self,
        exchange: &Exchange,
        version: &Version,
        unsupported: UnsupportedParams,
        out: Outbound,
    ) -> Result<Outbound, GatewayError> {
        if out.surface != Surface::Chat {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedParameter,
                format!(
                    "model routes to Vertex AI provider `{}`, which serves /v1/chat/completions only",
                    self.name
                ),
            ));
        }
        let (path, body, gemini) = match &self.api {
            VertexApi::Gemini => {
                let tenant = exchange.tenant.get().map_or("", |t| &*t.name);
                let route = exchange.route.get().map_or("", |r| &*r.alias);
                let prompt = exchange.prompt.get().map(|p| (&*p.id, &*p.version));
                let labels = billing_labels(tenant, route, &version.name, prompt);
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(key, value)| (*key, value.as_str()))
                    .collect();
                let body = request::generate_content(&out.body, unsupported, &labels)?;
                let path = self.generate_path(&version.upstream_model, out.stream);
                (path, body.into(), Some(version.upstream_model.clone()))
            }
            VertexApi::OpenAi {
                endpoint,
                raw_predict,
            } => {
                let path = self.openai_path(endpoint, *raw_predict, out.stream);
                (path, out.body.clone(), None)
            }
        };
        // Only the first requests after start wait here (for the first token): the time is
        // Google's, not the gateway's.
        // The wait counts against the first-token timeout, like the upstream's own.
        let fetching = tokio::time::Instant::now();
        let limit = version.timeouts.first_token.0.min(version.timeouts.total.0);
        let auth = tokio::time::timeout(limit, self.credentials.header())
            .await
            .map_err(|_| {
                GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    "no Vertex AI token came within the route's first-token timeout",
                )
                .retryable()
            })??;
        exchange.add_wait(fetching.elapsed());
        Ok(Outbound {
            body,
            call: Call::Vertex(Box::new(VertexCall { path, auth, gemini })),
            ..out
        })
    }

    /// `out` (a Gemini `countTokens` body from a Vertex-native caller) as the call to the
    /// model's `:countTokens`, answered as is. `None` when this provider does not speak
    /// Gemini's API.
    pub async fn count_tokens_call(
        &self,
        version: &Version,
        out: Outbound,
    ) -> Option<Result<Outbound, GatewayError>> {
        if self.api != VertexApi::Gemini {
            return None;
        }
        let path = self.method_path(&version.upstream_model, "countTokens");
        let auth = match self.credentials.header().await {
            Ok(auth) => auth,
            Err(err) => return Some(Err(err.into())),
        };
        Some(Ok(Outbound {
            call: Call::Vertex(Box::new(VertexCall {
                path,
                auth,
                gemini: None,
            })),
            ..out
        }))
    }

    /// Checks a route version's model names a resource this provider can call.
    pub fn check_model(&self, model: &str) -> Result<(), String> {
        if let VertexApi::OpenAi { .. } = self.api {
            // The model is named in the body (`google/gemini-2.5-flash`, a served name).
            return Ok(());
        }
        let mut segments = model.split('/');
        let valid = match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some(id), None, _, _) => path_safe(id),
            (Some("endpoints"), Some(id), None, _) => {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
            (Some("publishers"), Some(publisher), Some("models"), Some(id)) => {
                path_safe(publisher) && path_safe(id) && segments.next().is_none()
            }
            _ => false,
        };
        if valid {
            Ok(())
        } else {
            Err(format!(
                "`{model}` is not a Vertex model: a model id, publishers/PUBLISHER/models/ID or endpoints/ID"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_location() {
        assert_eq!(host("global"), "aiplatform.googleapis.com");
        assert_eq!(host("us-central1"), "us-central1-aiplatform.googleapis.com");
        assert_eq!(host("eu"), "aiplatform.eu.rep.googleapis.com");
        assert_eq!(host("us"), "aiplatform.us.rep.googleapis.com");
    }
}
