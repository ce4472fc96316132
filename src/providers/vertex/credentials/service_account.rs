//! A service-account key file (Google's JSON) and the token fetch it allows: sign a JWT with
//! its private key and exchange it at its `token_uri` for an access token.

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use ring::signature::RsaKeyPair;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

use super::error::CredentialsError;
use super::jwt::{self, AssertionSigner};
use super::refresh::{FetchToken, FetchedToken};
use super::token_http::{TokenClient, read_token_answer};

/// Where Google's key files send their assertions; used when a file names no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The one key-file `type` this module reads.
const SERVICE_ACCOUNT_TYPE: &str = "service_account";

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// A parsed service-account key: who it is, where it gets tokens, and its signing key.
///
/// The private key is held only in parsed form, inside the signer; neither `Debug` nor any
/// error shows it.
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: String,
    project_id: Option<String>,
    token_uri: Uri,
    /// `token_uri` as the file spells it: the assertion's audience must match it exactly.
    audience: String,
    signer: AssertionSigner,
}

impl ServiceAccountKey {
    /// Parses a key file's JSON. The error names the field at fault and never repeats the
    /// file's content.
    pub fn from_json(json: &[u8]) -> Result<ServiceAccountKey, String> {
        // Read as a plain map, not through a derive: serde's messages for a mistyped field
        // can quote the value, and a value here may be the private key.
        let fields: Value = serde_json::from_slice(json).map_err(|err| {
            format!(
                "not JSON (syntax error at line {} column {})",
                err.line(),
                err.column()
            )
        })?;
        let Value::Object(fields) = fields else {
            return Err("not a JSON object".into());
        };
        match field(&fields, "type")? {
            SERVICE_ACCOUNT_TYPE => {}
            other if is_simple_word(other) => {
                return Err(format!(
                    "`type` is `{other}`; only `{SERVICE_ACCOUNT_TYPE}` key files are supported"
                ));
            }
            _ => return Err(format!("`type` is not `{SERVICE_ACCOUNT_TYPE}`")),
        }
        let client_email = field(&fields, "client_email")?.to_owned();
        let private_key_id = field(&fields, "private_key_id")?.to_owned();
        let project_id = optional_field(&fields, "project_id")?.map(str::to_owned);
        let token_uri = optional_field(&fields, "token_uri")?.unwrap_or(DEFAULT_TOKEN_URI);
        let audience = token_uri.to_owned();
        let token_uri = token_uri_checked(token_uri)?;
        let pem = field(&fields, "private_key")?;
        // The PEM parser's own errors may quote the line they stopped at: not repeated.
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "`private_key` is not a PEM `PRIVATE KEY` (PKCS#8) block".to_owned())?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|why| {
            format!("`private_key` is not an RSA key of 2048 to 8192 bits ({why})")
        })?;
        let signer = AssertionSigner::new(key, &private_key_id)?;
        Ok(ServiceAccountKey {
            client_email,
            private_key_id,
            project_id,
            token_uri,
            audience,
            signer,
        })
    }

    /// The service account's email, the assertion's issuer.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's id, the JWT header's `kid`.
    pub fn private_key_id(&self) -> &str {
        &self.private_key_id
    }

    /// The project the account belongs to, if the file says.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// Where assertions are exchanged for tokens.
    pub fn token_uri(&self) -> &Uri {
        &self.token_uri
    }

    /// A signed assertion issued now.
    fn assertion(&self) -> Result<String, CredentialsError> {
        // Wall-clock time: Google checks `iat` and `exp` against its own clock.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| CredentialsError::unavailable("the system clock is before 1970"))?;
        self.signer
            .assertion(&self.client_email, &self.audience, now.as_secs())
    }
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("project_id", &self.project_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// A required string field, non-empty.
fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    optional_field(fields, name)?.ok_or_else(|| format!("`{name}` is missing"))
}

/// An optional string field; present but empty counts as missing.
fn optional_field<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Err(format!("`{name}` is empty")),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("`{name}` is not a string")),
    }
}

/// A short identifier-like word, safe to repeat in an error.
fn is_simple_word(text: &str) -> bool {
    text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The token URI, if it is one the gateway will send a signed assertion to: `https://`, or
/// plain `http://` to a loopback address (a local mock), as a signed assertion is a bearer
/// credential for up to an hour and must not cross a network in the clear.
fn token_uri_checked(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| "`token_uri` is not a URL".to_owned())?;
    let Some(host) = uri.host() else {
        return Err("`token_uri` has no host".into());
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("`token_uri` must not hold credentials".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "`token_uri` must be https:// (plain http:// only to a loopback address), not to {host}"
        )),
        _ => Err("`token_uri` must be an https:// URL".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Fetches tokens for a service account from its `token_uri`.
pub struct ServiceAccountFetch {
    key: ServiceAccountKey,
    client: TokenClient,
    /// `the token endpoint URI`, for errors and logs.
    peer: String,
}

impl ServiceAccountFetch {
    pub(super) fn new(key: ServiceAccountKey, client: TokenClient) -> ServiceAccountFetch {
        let peer = format!("the token endpoint {}", key.token_uri);
        ServiceAccountFetch { key, client, peer }
    }

    async fn fetch_once(&self) -> Result<FetchedToken, CredentialsError> {
        let form = jwt::grant_form(&self.key.assertion()?);
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.key.token_uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(FORM_CONTENT_TYPE))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(form)))
            .map_err(|err| {
                CredentialsError::unavailable(format!("cannot build the request: {err}"))
            })?;
        let (status, body) = self.client.send(request, &self.peer).await?;
        read_token_answer(status, &body, &self.peer)
    }
}

impl FetchToken for ServiceAccountFetch {
    fn fetch(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<FetchedToken, CredentialsError>> + Send + '_>> {
        Box::pin(self.fetch_once())
    }

    fn describe(&self) -> String {
        format!(
            "service account {} via {}",
            self.key.client_email, self.key.token_uri
        )
    }
}

impl std::fmt::Debug for ServiceAccountFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountFetch")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "service_account_tests.rs"]
mod tests;
