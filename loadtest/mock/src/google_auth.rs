//! Google auth as the mock plays it: credential checks on the Vertex paths, the OAuth token
//! endpoint (RFC 7523 JWT bearer grant, RS256 verified against the configured public key) and
//! the metadata server's token endpoint, with counters and failure knobs for refresh tests.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::watch;

use crate::body::MockBody;
use crate::fixtures::unix_now;
use crate::google_error::{GoogleError, GrpcStatus};
use crate::google_jwt::AssertionVerifier;
use crate::stats::MockStats;
use crate::vertex_config::{TokenEndpoint, VertexAuth};

/// Path of the metadata server's token for the instance's default service account.
pub(crate) const METADATA_TOKEN_PATH: &str =
    "/computeMetadata/v1/instance/service-accounts/default/token";

/// How an injected token-request failure answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFailure {
    /// HTTP 500 `{"error":"internal_failure",...}`.
    ServerError,
    /// HTTP 400 `{"error":"invalid_grant",...}`, as for a revoked or deleted key.
    InvalidGrant,
}

/// Token state shared by the listener and the [`crate::MockServer`] handle.
#[derive(Debug)]
pub(crate) struct AuthState {
    verifier: AssertionVerifier,
    settings: TokenEndpoint,
    /// Every token issued, with the instant it expires.
    issued: Mutex<HashMap<String, Instant>>,
    /// Token requests still to fail, and how.
    failures: Mutex<(u64, TokenFailure)>,
    /// Live [`TokenHold`]s; token answers wait while it is above zero.
    holds: watch::Sender<usize>,
    next_token: AtomicU64,
}

/// Holds every token and metadata answer until dropped, so a test can pile concurrent
/// requests behind one refresh without sleeping.
#[derive(Debug)]
pub struct TokenHold {
    state: Arc<AuthState>,
}

impl Drop for TokenHold {
    fn drop(&mut self) {
        self.state.holds.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent even if a panic interrupted it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Percent-decodes one `application/x-www-form-urlencoded` value.
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| form_decode(key).as_deref() == Some(name))
        .and_then(|(_, value)| form_decode(value))
}

fn json_response(status: StatusCode, body: String) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refusal_response(status: StatusCode, code: &str, description: &str) -> Response<MockBody> {
    let body = serde_json::json!({"error": code, "error_description": description});
    json_response(status, body.to_string())
}

impl AuthState {
    /// Parses the verification key; `addr` makes the default audience.
    pub(crate) fn new(settings: &TokenEndpoint, addr: SocketAddr) -> io::Result<Self> {
        if !settings.path.starts_with('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("token path `{}` must start with /", settings.path),
            ));
        }
        let audience = settings
            .audience
            .clone()
            .unwrap_or_else(|| format!("http://{addr}{}", settings.path));
        Ok(Self {
            verifier: AssertionVerifier::new(settings, audience)?,
            settings: settings.clone(),
            issued: Mutex::new(HashMap::new()),
            failures: Mutex::new((0, TokenFailure::ServerError)),
            holds: watch::Sender::new(0),
            next_token: AtomicU64::new(1),
        })
    }

    pub(crate) fn token_path(&self) -> &str {
        &self.settings.path
    }

    /// The `aud` assertions must carry.
    pub(crate) fn audience(&self) -> &str {
        self.verifier.audience()
    }

    pub(crate) fn fail_next(&self, n: u64, failure: TokenFailure) {
        *lock(&self.failures) = (n, failure);
    }

    pub(crate) fn hold(self: &Arc<Self>) -> TokenHold {
        self.holds.send_modify(|n| *n += 1);
        TokenHold {
            state: self.clone(),
        }
    }

    /// Makes every token issued so far invalid (the gateway should refresh on the 401).
    pub(crate) fn revoke_all(&self) {
        lock(&self.issued).clear();
    }

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        lock(&self.issued).keys().cloned().collect()
    }

    /// Checks the credentials of a Vertex request naming `project` (if its path does) and
    /// `resource` (its path, for the 403 message).
    pub(crate) fn check(
        &self,
        auth: &VertexAuth,
        headers: &HeaderMap,
        project: Option<&str>,
        resource: &str,
    ) -> Result<(), GoogleError> {
        if !auth.enforced() {
            return Ok(());
        }
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let api_key = text("x-goog-api-key");
        let bearer = text(AUTHORIZATION.as_str()).and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let unauthenticated = |message: &str, reason| {
            Err(GoogleError::new(GrpcStatus::UNAUTHENTICATED, message).with_reason(reason))
        };
        let key_ok = api_key.is_some_and(|k| auth.api_keys.iter().any(|a| a == k));
        if !key_ok {
            match (bearer, api_key) {
                (Some(token), _) if auth.bearer_tokens.iter().any(|t| t == token) => {}
                (Some(token), _) => match lock(&self.issued).get(token) {
                    Some(expiry) if *expiry > Instant::now() => {}
                    Some(_) => {
                        return unauthenticated(
                            "Request had invalid authentication credentials: the access token \
                             has expired.",
                            "ACCESS_TOKEN_EXPIRED",
                        );
                    }
                    None => {
                        return unauthenticated(
                            "Request had invalid authentication credentials. Expected OAuth 2 \
                             access token, login cookie or other valid authentication credential.",
                            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                        );
                    }
                },
                (None, Some(_)) => {
                    return unauthenticated(
                        "API key not valid. Please pass a valid API key.",
                        "API_KEY_INVALID",
                    );
                }
                (None, None) => {
                    return unauthenticated(
                        "Request is missing required authentication credential. Expected OAuth 2 \
                         access token, login cookie or other valid authentication credential.",
                        "CREDENTIALS_MISSING",
                    );
                }
            }
        }
        match project {
            Some(p) if !auth.projects.is_empty() && !auth.projects.iter().any(|a| a == p) => {
                Err(GoogleError::new(
                    GrpcStatus::PERMISSION_DENIED,
                    format!(
                        "Permission 'aiplatform.endpoints.predict' denied on resource \
                         '//aiplatform.googleapis.com{resource}' (or it may not exist)."
                    ),
                )
                .with_reason("IAM_PERMISSION_DENIED"))
            }
            _ => Ok(()),
        }
    }

    /// `POST {token path}`: the JWT bearer grant.
    pub(crate) async fn token(&self, body: &[u8], stats: &MockStats) -> Response<MockBody> {
        stats.token_requested();
        self.released().await;
        if let Some(failed) = self.injected_failure() {
            return failed;
        }
        let form = String::from_utf8_lossy(body);
        let grant_type = form_field(&form, "grant_type");
        if grant_type.as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return refusal_response(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {}", grant_type.unwrap_or_default()),
            );
        }
        let Some(assertion) = form_field(&form, "assertion") else {
            return refusal_response(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: assertion",
            );
        };
        match self.verifier.verify(&assertion, unix_now()) {
            Ok(()) => self.issue(stats),
            Err(refusal) => {
                refusal_response(StatusCode::BAD_REQUEST, refusal.code, &refusal.description)
            }
        }
    }

    /// `GET` of the metadata server's default-account token.
    pub(crate) async fn metadata(
        &self,
        headers: &HeaderMap,
        stats: &MockStats,
    ) -> Response<MockBody> {
        stats.metadata_requested();
        let flavor = headers.get("metadata-flavor").and_then(|v| v.to_str().ok());
        if flavor != Some("Google") {
            let mut response = Response::new(MockBody::full(Bytes::from_static(
                b"Missing required header: Metadata-Flavor: Google\n",
            )));
            *response.status_mut() = StatusCode::FORBIDDEN;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return response;
        }
        self.released().await;
        if let Some(failed) = self.injected_failure() {
            return failed;
        }
        let mut response = self.issue(stats);
        response
            .headers_mut()
            .insert("metadata-flavor", HeaderValue::from_static("Google"));
        response
    }

    async fn released(&self) {
        let mut holds = self.holds.subscribe();
        // Only fails if the sender is gone, which cannot happen while `self` lives.
        let _ = holds.wait_for(|n| *n == 0).await;
    }

    fn injected_failure(&self) -> Option<Response<MockBody>> {
        let mut failures = lock(&self.failures);
        if failures.0 == 0 {
            return None;
        }
        failures.0 -= 1;
        Some(match failures.1 {
            TokenFailure::ServerError => refusal_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_failure",
                "Injected token endpoint failure (tollgate-mock).",
            ),
            TokenFailure::InvalidGrant => refusal_response(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Invalid grant: account not found",
            ),
        })
    }

    fn issue(&self, stats: &MockStats) -> Response<MockBody> {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        let token = format!("ya29.mock-{n}-{:016x}", fastrand::u64(..));
        let expires_in = self.settings.expires_in;
        lock(&self.issued).insert(
            token.clone(),
            Instant::now() + Duration::from_secs(expires_in),
        );
        stats.token_issued();
        let body = serde_json::json!({
            "access_token": token,
            "expires_in": expires_in,
            "token_type": "Bearer",
        });
        json_response(StatusCode::OK, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AuthState {
        let settings = TokenEndpoint::default();
        AuthState::new(&settings, SocketAddr::from(([127, 0, 0, 1], 9))).unwrap()
    }

    #[test]
    fn default_audience_is_the_endpoint_url() {
        assert_eq!(state().audience(), "http://127.0.0.1:9/token");
    }

    #[test]
    fn parses_forms() {
        let body =
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b+c";
        assert_eq!(
            form_field(body, "grant_type").unwrap(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        assert_eq!(form_field(body, "assertion").unwrap(), "a.b c");
        assert!(form_field(body, "scope").is_none());
        assert!(form_decode("%zz").is_none());
    }
}
