//! Google credentials for the Vertex AI provider: the header each upstream request carries,
//! from a service-account key, the metadata server, or an express-mode API key.
//!
//! The provider builds one [`Credentials`] per compiled config with
//! [`Credentials::from_config`] (which reads and checks the key, but starts nothing and
//! touches no network), keeps it for as long as that provider serves (a reload whose
//! [`Credentials::fingerprint`] is unchanged keeps the running one, and so its cached
//! token), and asks [`Credentials::header`] for each request.
//!
//! Tokens ([`TokenSource`]) are fetched by one background refresher per source, started by
//! the first request that needs one and stopped when the last clone of the credentials is
//! dropped or its runtime ends at shutdown; see `refresh`.

mod api_key;
mod error;
mod jwt;
mod metadata;
mod refresh;
mod service_account;
mod token_http;

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{AUTHORIZATION, HeaderName};
use sha2::{Digest, Sha256};

use crate::config::{VertexCredentials, VertexProviderConfig};

pub use api_key::{API_KEY_HEADER, ApiKey};
pub use error::{CredentialsError, CredentialsErrorKind};
pub use jwt::{ASSERTION_LIFETIME_SECS, CLOUD_PLATFORM_SCOPE};
pub use metadata::{METADATA_FLAVOR, MetadataFetch, TOKEN_PATH as METADATA_TOKEN_PATH};
pub use refresh::{
    EXPIRY_MARGIN, FETCH_TIMEOUT, FIRST_RETRY_DELAY, FetchToken, FetchedToken, MAX_RETRY_DELAY,
    MAX_WAIT, REFRESH_BEFORE_EXPIRY, TokenSource,
};
pub use service_account::{DEFAULT_TOKEN_URI, ServiceAccountFetch, ServiceAccountKey};

use token_http::TokenClient;

/// A config problem: the key below `credentials` (`key_file`, `host`, `env`, `file`) and
/// why, never quoting a secret.
pub type CredentialsProblem = (String, String);

/// Largest key file (service-account JSON or API key) read: a real one is about 2 KiB.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// How the token client connects: the provider's extra CA file (for a token endpoint behind
/// a private CA) and connect timeout.
#[derive(Clone, Copy, Debug)]
pub struct TokenHttp<'a> {
    pub ca_file: Option<&'a Path>,
    pub connect_timeout: Duration,
}

impl Default for TokenHttp<'_> {
    /// The webpki roots only, and a 5 s connect timeout.
    fn default() -> Self {
        TokenHttp {
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl<'a> TokenHttp<'a> {
    /// The provider's own connection settings.
    pub fn of(cfg: &'a VertexProviderConfig) -> TokenHttp<'a> {
        TokenHttp {
            ca_file: cfg.ca_file.as_deref(),
            connect_timeout: cfg.connect_timeout.0,
        }
    }
}

/// How requests to Vertex AI prove who sends them. Cheap to clone: clones share the token
/// source (and its refresher).
#[derive(Clone)]
pub struct Credentials {
    source: Source,
    fingerprint: [u8; 32],
}

#[derive(Clone)]
enum Source {
    /// `Authorization: Bearer` with an access token (service account or metadata server).
    Token(Arc<TokenSource>),
    /// `x-goog-api-key` (express mode).
    ApiKey(ApiKey),
}

impl Credentials {
    /// [`Credentials::from_config_with`] with the default [`TokenHttp`].
    pub fn from_config(cfg: &VertexCredentials) -> Result<Credentials, CredentialsProblem> {
        Self::from_config_with(cfg, &TokenHttp::default())
    }

    /// Reads and checks the configured credentials (the key file, the metadata host, the
    /// API key) at config compile time. Starts no task and sends nothing: the first request
    /// that needs a token starts the refresher.
    pub fn from_config_with(
        cfg: &VertexCredentials,
        http: &TokenHttp<'_>,
    ) -> Result<Credentials, CredentialsProblem> {
        let mut digest = Sha256::new();
        digest.update(format!("{:?}|{:?}|", http.ca_file, http.connect_timeout).as_bytes());
        let client = |key: &str| {
            TokenClient::new(http).map_err(|why| {
                (
                    key.to_owned(),
                    format!("cannot set up the token client: {why}"),
                )
            })
        };
        let source = match cfg {
            VertexCredentials::ServiceAccount { key_file } => {
                let json = read_bounded(key_file, MAX_SECRET_FILE_BYTES)
                    .map_err(|why| ("key_file".to_owned(), why))?;
                let key = ServiceAccountKey::from_json(&json).map_err(|why| {
                    (
                        "key_file".to_owned(),
                        format!("{}: {why}", key_file.display()),
                    )
                })?;
                // The file's content, so that a rotated key replaces the running source.
                digest.update(b"service_account|");
                digest.update(key_file.as_os_str().as_encoded_bytes());
                digest.update(b"|");
                digest.update(&json);
                let fetch = ServiceAccountFetch::new(key, client("key_file")?);
                Source::Token(Arc::new(TokenSource::new(fetch)))
            }
            VertexCredentials::MetadataServer { host } => {
                let uri = MetadataFetch::token_uri(host).map_err(|why| ("host".to_owned(), why))?;
                digest.update(b"metadata_server|");
                digest.update(uri.to_string().as_bytes());
                let fetch = MetadataFetch::new(uri, client("host")?);
                Source::Token(Arc::new(TokenSource::new(fetch)))
            }
            VertexCredentials::ApiKey { env, file } => {
                let key = ApiKey::read(env.as_deref(), file.as_deref(), |name: &str| {
                    std::env::var_os(name)
                })?;
                digest.update(b"api_key|");
                digest.update(format!("{env:?}|{file:?}|").as_bytes());
                digest.update(key.header_value().as_bytes());
                Source::ApiKey(key)
            }
        };
        Ok(Credentials {
            source,
            fingerprint: digest.finalize().into(),
        })
    }

    /// Credentials whose tokens come from `source` (a provider test's own fetcher, say).
    pub fn from_token_source(source: Arc<TokenSource>, fingerprint: [u8; 32]) -> Credentials {
        Credentials {
            source: Source::Token(source),
            fingerprint,
        }
    }

    /// The header to add to an upstream request: `authorization: Bearer ...` or
    /// `x-goog-api-key: ...`, its value marked sensitive.
    ///
    /// Once a token is cached (and always for an API key) this returns at once, with no
    /// lock and no allocation. See [`TokenSource::authorization`] for the wait before the
    /// first token and for the errors.
    pub async fn header(&self) -> Result<(HeaderName, HeaderValue), CredentialsError> {
        match &self.source {
            Source::Token(source) => Ok((AUTHORIZATION, source.authorization().await?)),
            Source::ApiKey(key) => Ok((API_KEY_HEADER, key.header_value().clone())),
        }
    }

    /// SHA-256 over the credentials config, what it read (the key file's or API key's
    /// content) and the token client settings: equal fingerprints mean the running
    /// credentials (and their cached token) can be kept across a reload. A digest, so it
    /// reveals no secret; still, it is not shown by `Debug`.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// True for an express-mode API key (no project or location in request paths).
    pub fn is_api_key(&self) -> bool {
        matches!(self.source, Source::ApiKey(_))
    }

    /// The token source, for service-account and metadata-server credentials.
    pub fn token_source(&self) -> Option<&Arc<TokenSource>> {
        match &self.source {
            Source::Token(source) => Some(source),
            Source::ApiKey(_) => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Token(source) => f.debug_tuple("Credentials").field(source).finish(),
            Source::ApiKey(key) => f.debug_tuple("Credentials").field(key).finish(),
        }
    }
}

/// A sensitive header value holding `text`, or `None` if `text` cannot be one.
fn sensitive_header(text: String) -> Option<HeaderValue> {
    let mut header = HeaderValue::from_maybe_shared(Bytes::from(text)).ok()?;
    header.set_sensitive(true);
    // The first clone of bytes made from a `String` allocates their shared form; done here,
    // once, so that handing the header to a request never allocates.
    drop(header.clone());
    Some(header)
}

/// The file at `path`, if it is at most `limit` bytes; the error names the path.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{} is larger than {} KiB: not a key file",
            path.display(),
            limit / 1024
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
