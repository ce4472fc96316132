//! The GCE/GKE/Cloud Run metadata server, which hands out tokens of the service account
//! attached to the machine: one `GET` with `Metadata-Flavor: Google`, no key to hold.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::HeaderName;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use super::error::CredentialsError;
use super::refresh::{FetchToken, FetchedToken};
use super::token_http::{TokenClient, read_token_answer};

/// The token of the machine's default service account, below the metadata server.
pub const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The header without which the metadata server refuses to answer (a guard against
/// requests forged through the machine's other services).
pub const METADATA_FLAVOR: HeaderName = HeaderName::from_static("metadata-flavor");

/// Fetches tokens from the metadata server.
pub struct MetadataFetch {
    uri: Uri,
    client: TokenClient,
    /// `the metadata server HOST`, for errors and logs.
    peer: String,
}

impl MetadataFetch {
    /// The token URI on metadata server `host` (`host[:port]`); the error says what is
    /// wrong with it.
    pub(super) fn token_uri(host: &str) -> Result<Uri, String> {
        let authority: Authority = host
            .parse()
            .map_err(|_| format!("`{}` is not a host[:port]", host.escape_debug()))?;
        if authority.as_str() != host || host.contains('@') || host.is_empty() {
            return Err(format!("`{}` is not a host[:port]", host.escape_debug()));
        }
        format!("http://{authority}{TOKEN_PATH}")
            .parse()
            .map_err(|_| format!("`{}` is not a host[:port]", host.escape_debug()))
    }

    pub(super) fn new(uri: Uri, client: TokenClient) -> MetadataFetch {
        let peer = match uri.authority() {
            Some(host) => format!("the metadata server {host}"),
            None => "the metadata server".to_owned(),
        };
        MetadataFetch { uri, client, peer }
    }

    async fn fetch_once(&self) -> Result<FetchedToken, CredentialsError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(METADATA_FLAVOR, HeaderValue::from_static("Google"))
            .body(Full::new(Bytes::new()))
            .map_err(|err| {
                CredentialsError::unavailable(format!("cannot build the request: {err}"))
            })?;
        let (status, body) = self.client.send(request, &self.peer).await?;
        read_token_answer(status, &body, &self.peer)
    }
}

impl FetchToken for MetadataFetch {
    fn fetch(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<FetchedToken, CredentialsError>> + Send + '_>> {
        Box::pin(self.fetch_once())
    }

    fn describe(&self) -> String {
        self.peer.clone()
    }
}

impl std::fmt::Debug for MetadataFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataFetch")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_uri_from_host() {
        assert_eq!(
            MetadataFetch::token_uri("metadata.google.internal")
                .unwrap()
                .to_string(),
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
        );
        assert_eq!(
            MetadataFetch::token_uri("127.0.0.1:8080")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080/computeMetadata/v1/instance/service-accounts/default/token"
        );
    }

    #[test]
    fn hosts_that_are_not_hosts_are_refused() {
        for host in [
            "",
            "http://metadata",
            "metadata/x",
            "user@metadata",
            "meta data",
        ] {
            let err = MetadataFetch::token_uri(host).unwrap_err();
            assert!(err.contains("is not a host[:port]"), "{host}: {err}");
        }
    }
}
