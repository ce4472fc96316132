//! The pooled upstream HTTP client: keep-alive, rustls with webpki roots, HTTP/2 by ALPN.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{OpenAiProviderConfig, UpstreamHttp};

/// One client per provider: its pool, TLS settings and HTTP version are the provider's own.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the client for one provider. Errors name what is wrong, for `tollgate check`.
pub fn build(cfg: &OpenAiProviderConfig) -> Result<HttpClient, String> {
    build_with(
        cfg.ca_file.as_deref(),
        cfg.connect_timeout.0,
        cfg.pool_max_idle_per_host,
        cfg.http,
    )
}

/// Builds a client trusting the webpki roots and the certificates in `ca_file`, for
/// request bodies of type `B` (the span exporter sends its batches without copying them).
pub fn build_with<B>(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    pool_max_idle_per_host: usize,
    version: UpstreamHttp,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, String>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls_config(ca_file)?;

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));

    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = match version {
        UpstreamHttp::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamHttp::Http2 => builder.enable_http2().wrap_connector(http),
        UpstreamHttp::Auto => builder.enable_all_versions().wrap_connector(http),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if version == UpstreamHttp::Http2 {
        client.http2_only(true);
    }
    Ok(client.build(connector))
}

/// rustls trusting the webpki roots and the certificates in `ca_file`: every client Tollgate
/// opens (upstreams, the span exporter, the shared rate-limit store) trusts the same way.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|err| format!("cannot read CA file {}: {err}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|err| format!("bad PEM in CA file {}: {err}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| format!("CA file {}: {err}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| format!("TLS setup failed: {err}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
