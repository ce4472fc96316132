//! An OpenAI-compatible upstream (vLLM, TGI, Ollama, llama.cpp, OpenAI) as compiled from config.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use sha2::{Digest, Sha256};

use bytes::Bytes;

use crate::config::{OpenAiProviderConfig, UpstreamHttp};
use crate::upstream::Surface;
use crate::upstream::client::{self, HttpClient};
use crate::upstream::h1::{self, H1Client};

/// A compiled OpenAI-compatible provider: URIs, credentials and headers prepared once.
pub struct OpenAiProvider {
    pub name: Box<str>,
    pub transport: Transport,
    chat: Uri,
    completions: Uri,
    embeddings: Uri,
    /// Static headers for every upstream request, the API key among them (marked sensitive
    /// so it never shows in debug output).
    pub headers: HeaderMap,
    /// Digest of the provider's config and the key it read. A reload keeps the running
    /// provider, and so its pooled connections, while this is unchanged.
    pub fingerprint: [u8; 32],
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("chat", &self.chat)
            .finish_non_exhaustive()
    }
}

/// How requests reach the provider.
pub enum Transport {
    /// Plain `http://` over HTTP/1.1: the lean client, with each surface's request prefix
    /// (request line, host, content type, static headers) built once.
    Lean {
        client: H1Client,
        prefixes: [Bytes; 3],
    },
    /// TLS (HTTP/2 by ALPN) or h2c: hyper's client. One per worker: a pooled connection is
    /// driven by a task on the worker that opened it, and reusing it from another would
    /// wake that worker.
    Hyper(Box<[HttpClient]>),
}

impl Transport {
    /// The hyper client of the worker running this thread.
    pub fn hyper_client(clients: &[HttpClient]) -> Option<&HttpClient> {
        clients.get(crate::server::worker_index() % clients.len().max(1))
    }
}

/// A compile problem: the key (below the provider) and why.
pub type CompileProblem = (String, String);

impl OpenAiProvider {
    /// Compiles the provider with one connection pool for each of `workers`.
    pub fn compile(
        name: &str,
        cfg: &OpenAiProviderConfig,
        workers: usize,
    ) -> Result<Self, CompileProblem> {
        let base = cfg.base_url.trim_end_matches('/');
        let parsed: Uri = base
            .parse()
            .map_err(|err| ("base_url".to_owned(), format!("not a URL: {err}")))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err((
                "base_url".into(),
                "must be an http:// or https:// URL with a host".into(),
            ));
        }
        if parsed.query().is_some() {
            return Err(("base_url".into(), "must not have a query string".into()));
        }
        let uri = |suffix: &str| -> Result<Uri, CompileProblem> {
            format!("{base}{suffix}").parse().map_err(|err| {
                (
                    "base_url".to_owned(),
                    format!("cannot extend with {suffix}: {err}"),
                )
            })
        };

        let mut headers = HeaderMap::new();
        for (key, value) in &cfg.headers {
            let name = HeaderName::try_from(key.as_str()).map_err(|_| {
                (
                    format!("headers.{key}"),
                    "not a valid header name".to_owned(),
                )
            })?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                (
                    format!("headers.{key}"),
                    "not a valid header value".to_owned(),
                )
            })?;
            headers.insert(name, value);
        }
        if let Some(key) = read_api_key(cfg)? {
            let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                (
                    "api_key".to_owned(),
                    "the key holds characters not allowed in a header".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let (chat, completions, embeddings) = (
            uri("/chat/completions")?,
            uri("/completions")?,
            uri("/embeddings")?,
        );
        let lean = parsed.scheme_str() == Some("http") && cfg.http != UpstreamHttp::Http2;
        let transport = match (lean, parsed.authority()) {
            (true, Some(authority)) => {
                let prefix = |uri: &Uri| {
                    let path = uri.path_and_query().map_or("/", |p| p.as_str());
                    h1::request_prefix(path, authority.as_str(), &headers)
                };
                Transport::Lean {
                    client: H1Client::new(
                        authority.host(),
                        authority.port_u16().unwrap_or(80),
                        cfg.connect_timeout.0,
                        cfg.pool_max_idle_per_host,
                        workers,
                    ),
                    prefixes: [prefix(&chat), prefix(&completions), prefix(&embeddings)],
                }
            }
            _ => Transport::Hyper(
                (0..workers.max(1))
                    .map(|_| client::build(cfg))
                    .collect::<Result<Box<[_]>, _>>()
                    .map_err(|err| ("ca_file".to_owned(), err))?,
            ),
        };
        let mut digest = Sha256::new();
        digest.update(format!("{cfg:?}").as_bytes());
        for (name, value) in &headers {
            digest.update(name.as_str().as_bytes());
            digest.update(b"\0");
            digest.update(value.as_bytes());
            digest.update(b"\0");
        }
        Ok(Self {
            name: name.into(),
            transport,
            chat,
            completions,
            embeddings,
            headers,
            fingerprint: digest.finalize().into(),
        })
    }

    /// Index of `surface` in per-surface tables.
    pub fn surface_index(surface: Surface) -> usize {
        match surface {
            Surface::Chat => 0,
            Surface::Completions => 1,
            Surface::Embeddings => 2,
        }
    }

    pub fn uri(&self, surface: Surface) -> &Uri {
        match surface {
            Surface::Chat => &self.chat,
            Surface::Completions => &self.completions,
            Surface::Embeddings => &self.embeddings,
        }
    }
}

/// Reads the upstream key from the environment or a file; never from the YAML itself.
fn read_api_key(cfg: &OpenAiProviderConfig) -> Result<Option<String>, CompileProblem> {
    match (&cfg.api_key_env, &cfg.api_key_file) {
        (Some(_), Some(_)) => Err((
            "api_key_env".into(),
            "set api_key_env or api_key_file, not both".into(),
        )),
        (Some(var), None) => match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_owned())),
            _ => Err((
                "api_key_env".into(),
                format!("environment variable {var} is not set or empty"),
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_owned())),
            Ok(_) => Err((
                "api_key_file".into(),
                format!("{} is empty", path.display()),
            )),
            Err(err) => Err((
                "api_key_file".into(),
                format!("cannot read {}: {err}", path.display()),
            )),
        },
        (None, None) => Ok(None),
    }
}
