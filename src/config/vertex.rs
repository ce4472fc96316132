//! The `vertex` provider's config: where Vertex AI is, and how Tollgate proves who it is.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigDuration, EjectionConfig, UpstreamHttp};

/// Vertex AI (Gemini and the other publisher models, and self-deployed endpoints).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VertexProviderConfig {
    /// Google Cloud project id. Required, except with an express-mode API key.
    #[serde(default)]
    pub project: Option<String>,
    /// `global` (the default), a region such as `us-central1`, or a multi-region (`us`, `eu`).
    #[serde(default = "default_location")]
    pub location: String,
    /// `v1` (the default) or `v1beta1`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// `scheme://host[:port]` replacing the host the location implies: a Private Service
    /// Connect endpoint, or a local mock in tests.
    #[serde(default)]
    pub base_url: Option<String>,
    pub credentials: VertexCredentials,
    #[serde(default)]
    pub http: UpstreamHttp,
    /// PEM file with extra CA certificates trusted beside the webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "super::default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Idle pooled connections kept per host.
    #[serde(default = "super::default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    #[serde(default)]
    pub ejection: EjectionConfig,
    /// (vertex_openai) `openapi` (the default: Google's models, named like
    /// `google/gemini-2.5-flash`) or the numeric id of an endpoint a model is deployed to.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// (vertex_openai, a deployed model's endpoint) Call `:rawPredict`/`:streamRawPredict`
    /// with the OpenAI body, instead of the endpoint's `/chat/completions`.
    #[serde(default)]
    pub raw_predict: bool,
    /// HTTP/2 connections per worker to the Vertex host, requests spread over them in turn:
    /// Google serves at most 100 concurrent streams on one connection.
    #[serde(default = "default_http2_connections")]
    pub http2_connections: usize,
}

/// How Tollgate authenticates to Vertex AI. Secrets are read from files or the
/// environment, never from this config, and never shown again.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VertexCredentials {
    /// A service-account key file (JSON, as Google issues it): Tollgate signs a JWT with its
    /// private key and exchanges it at the file's `token_uri` for access tokens, refreshed in
    /// the background before they expire.
    ServiceAccount { key_file: PathBuf },
    /// The GCE/GKE/Cloud Run metadata server hands out the attached service account's tokens.
    MetadataServer {
        /// `host[:port]` of the metadata server.
        #[serde(default = "default_metadata_host")]
        host: String,
    },
    /// An express-mode API key, sent as `x-goog-api-key`: no project or location.
    ApiKey {
        /// Environment variable holding the key.
        #[serde(default)]
        env: Option<String>,
        /// File holding the key (trailing newline ignored).
        #[serde(default)]
        file: Option<PathBuf>,
    },
}

fn default_http2_connections() -> usize {
    4
}

fn default_location() -> String {
    "global".to_owned()
}

fn default_api_version() -> String {
    "v1".to_owned()
}

fn default_metadata_host() -> String {
    "metadata.google.internal".to_owned()
}
