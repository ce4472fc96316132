//! An OpenAI-compatible upstream (vLLM, TGI, Ollama, llama.cpp, OpenAI) as compiled from config.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use sha2::{Digest, Sha256};

use bytes::Bytes;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::endpoints::{self, EndpointHealth};
use crate::config::{EjectionConfig, OpenAiProviderConfig, UpstreamHttp};
use crate::telemetry::metrics::Metrics;
use crate::upstream::Surface;
use crate::upstream::client::{self, HttpClient};
use crate::upstream::h1::{self, H1Client};

/// A compiled OpenAI-compatible provider: URIs, credentials and headers prepared once.
pub struct OpenAiProvider {
    pub name: Box<str>,
    /// One or more replicas; see `providers::endpoints` for how one is chosen.
    pub endpoints: Box<[Endpoint]>,
    pub ejection: EjectionConfig,
    /// Static headers for every upstream request, the API key among them (marked sensitive
    /// so it never shows in debug output).
    pub headers: HeaderMap,
    /// Digest of the provider's config and the key it read. A reload keeps the running
    /// provider, and so its pooled connections, while this is unchanged.
    pub fingerprint: [u8; 32],
    /// `gen_ai.provider.name`: `openai` for OpenAI's own API, `self_hosted` for every
    /// OpenAI-compatible server run by its users (vLLM, TGI, Ollama, llama.cpp).
    pub genai_name: &'static str,
}

/// One replica of a provider: its own URIs, connections and health.
pub struct Endpoint {
    /// `host:port`, the `endpoint` label of its metrics.
    pub label: Box<str>,
    /// Host and port apart, for the `server.address` and `server.port` span attributes.
    pub host: Box<str>,
    pub port: u16,
    pub transport: Transport,
    chat: Uri,
    completions: Uri,
    embeddings: Uri,
    pub health: Arc<EndpointHealth>,
}

impl Endpoint {
    pub fn uri(&self, surface: Surface) -> &Uri {
        match surface {
            Surface::Chat => &self.chat,
            Surface::Completions => &self.completions,
            Surface::Embeddings => &self.embeddings,
        }
    }
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.label).collect::<Vec<_>>(),
            )
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
    /// TLS (HTTP/2 by ALPN) or h2c: hyper's client. `per_worker` clients for each worker: a
    /// pooled connection is driven by a task on the worker that opened it, and reusing it
    /// from another would wake that worker. Each client keeps one HTTP/2 connection per
    /// host, and servers cap the streams on one (Google at 100): a worker spreads its
    /// requests over its clients in turn, so that many concurrent streams do not queue.
    Hyper {
        clients: Box<[HttpClient]>,
        per_worker: usize,
        /// Each worker's turn among its clients: touched by that worker only.
        turns: Box<[AtomicUsize]>,
    },
}

impl Transport {
    /// The next of the hyper clients of the worker running this thread.
    pub fn hyper_client<'a>(
        clients: &'a [HttpClient],
        per_worker: usize,
        turns: &[AtomicUsize],
    ) -> Option<&'a HttpClient> {
        let per_worker = per_worker.max(1);
        let workers = (clients.len() / per_worker).max(1);
        let worker = crate::server::worker_index() % workers;
        let turn = turns.get(worker).map_or(0, |t| t.fetch_add(1, Relaxed)) % per_worker;
        clients.get(worker * per_worker + turn)
    }
}

/// Most HTTP/2 connections per host and worker a provider may ask for.
const MAX_HTTP2_CONNECTIONS: usize = 64;

/// A compile problem: the key (below the provider) and why.
pub type CompileProblem = (String, String);

impl OpenAiProvider {
    /// Compiles the provider with one connection pool per endpoint for each of `workers`.
    pub fn compile(
        name: &str,
        cfg: &OpenAiProviderConfig,
        workers: usize,
        metrics: &Metrics,
    ) -> Result<Self, CompileProblem> {
        if !(1..=MAX_HTTP2_CONNECTIONS).contains(&cfg.http2_connections) {
            return Err((
                "http2_connections".into(),
                format!("must be 1 to {MAX_HTTP2_CONNECTIONS}"),
            ));
        }
        let mut headers = static_headers(&cfg.headers)
            .map_err(|(key, why)| (format!("headers.{key}"), why.to_owned()))?;
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
        let urls: Vec<(String, &str)> = match (&cfg.base_url, cfg.endpoints.as_slice()) {
            (Some(url), []) => vec![("base_url".to_owned(), url.as_str())],
            (None, []) => return Err(("base_url".into(), "set base_url or endpoints".into())),
            (Some(_), _) => {
                return Err((
                    "endpoints".into(),
                    "set base_url or endpoints, not both".into(),
                ));
            }
            (None, urls) => urls
                .iter()
                .enumerate()
                .map(|(i, url)| (format!("endpoints[{i}]"), url.as_str()))
                .collect(),
        };
        let mut endpoints = Vec::with_capacity(urls.len());
        for (key, url) in urls {
            let endpoint = compile_endpoint(&key, url, cfg, &headers, workers)?;
            if endpoints
                .iter()
                .any(|e: &Endpoint| e.label == endpoint.label)
            {
                return Err((key, format!("`{}` is listed twice", endpoint.label)));
            }
            let health = metrics.endpoint(name, &endpoint.label);
            endpoints.push(Endpoint { health, ..endpoint });
        }
        let mut digest = Sha256::new();
        digest.update(format!("{cfg:?}").as_bytes());
        for (name, value) in &headers {
            digest.update(name.as_str().as_bytes());
            digest.update(b"\0");
            digest.update(value.as_bytes());
            digest.update(b"\0");
        }
        let openai_hosted = endpoints.iter().all(|e| &*e.host == "api.openai.com");
        Ok(Self {
            name: name.into(),
            genai_name: if openai_hosted {
                "openai"
            } else {
                "self_hosted"
            },
            endpoints: endpoints.into(),
            ejection: cfg.ejection,
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

    /// The endpoint for the next request (see `providers::endpoints`).
    pub fn pick(&self) -> (&Endpoint, bool) {
        if let [only] = &*self.endpoints {
            return (only, false);
        }
        let chosen = endpoints::pick(
            &self.endpoints,
            |e| &*e.health,
            endpoints::now(),
            |n| fastrand::usize(..n),
        );
        (&self.endpoints[chosen.index], chosen.all_ejected)
    }
}

/// One endpoint's URIs and transport (its health is attached by the caller). `key` names the
/// URL in errors.
fn compile_endpoint(
    key: &str,
    url: &str,
    cfg: &OpenAiProviderConfig,
    headers: &HeaderMap,
    workers: usize,
) -> Result<Endpoint, CompileProblem> {
    let bad_url = |why: String| (key.to_owned(), why);
    let base = url.trim_end_matches('/');
    let parsed: Uri = base
        .parse()
        .map_err(|err| bad_url(format!("not a URL: {err}")))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(bad_url(
            "must be an http:// or https:// URL with a host".into(),
        ));
    }
    if parsed.query().is_some() {
        return Err(bad_url("must not have a query string".into()));
    }
    if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
        // The authority becomes a metric label and a Host header: no credentials in it.
        return Err(bad_url(
            "must not carry credentials; use api_key_env or api_key_file".into(),
        ));
    }
    let uri = |suffix: &str| -> Result<Uri, CompileProblem> {
        format!("{base}{suffix}")
            .parse()
            .map_err(|err| bad_url(format!("cannot extend with {suffix}: {err}")))
    };
    let (chat, completions, embeddings) = (
        uri("/chat/completions")?,
        uri("/completions")?,
        uri("/embeddings")?,
    );
    let authority = parsed.authority().map_or("", |a| a.as_str()).to_owned();
    let lean = parsed.scheme_str() == Some("http") && cfg.http != UpstreamHttp::Http2;
    let transport = match (lean, parsed.authority()) {
        (true, Some(authority)) => {
            let prefix = |uri: &Uri| {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                h1::request_prefix(path, authority.as_str(), headers)
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
        _ => {
            let per_worker = cfg.http2_connections;
            Transport::Hyper {
                clients: (0..workers.max(1) * per_worker)
                    .map(|_| client::build(cfg))
                    .collect::<Result<Box<[_]>, _>>()
                    .map_err(|err| ("ca_file".to_owned(), err))?,
                per_worker,
                turns: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            }
        }
    };
    let default_port = if parsed.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    Ok(Endpoint {
        label: authority.into(),
        host: parsed.host().unwrap_or_default().into(),
        port: parsed.port_u16().unwrap_or(default_port),
        transport,
        chat,
        completions,
        embeddings,
        health: Arc::default(),
    })
}

/// Static upstream headers from config, validated; an error names the bad key.
pub fn static_headers(
    configured: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap, (String, &'static str)> {
    let mut headers = HeaderMap::new();
    for (key, value) in configured {
        let name = HeaderName::try_from(key.as_str())
            .map_err(|_| (key.clone(), "not a valid header name"))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| (key.clone(), "not a valid header value"))?;
        headers.insert(name, value);
    }
    Ok(headers)
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
