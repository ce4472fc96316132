//! The small HTTP client that asks for access tokens, and the reading of the answer: Google's
//! token endpoint and the metadata server both answer `{access_token, expires_in, token_type}`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;

use super::TokenHttp;
use super::error::CredentialsError;
use super::refresh::FetchedToken;
use crate::config::UpstreamHttp;
use crate::upstream::client;

/// Longest answer read from a token server: a real one is under 2 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Longest piece of a token server's error text repeated in our own errors.
const MAX_QUOTED_CHARS: usize = 200;

/// Connections kept idle between fetches: none. A token is fetched about once an hour, so a
/// kept connection would only go stale; and the refresher may move to another worker's
/// runtime, which must not inherit a connection driven by one that has ended.
const IDLE_CONNECTIONS: usize = 0;

/// Sends token requests: TLS with the webpki roots (and the provider's extra CA file), or
/// plain HTTP (the metadata server, a loopback mock).
pub(super) struct TokenClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl TokenClient {
    /// Builds the client; the error says why (a CA file that cannot be read, say).
    pub(super) fn new(settings: &TokenHttp<'_>) -> Result<TokenClient, String> {
        let client = client::build_with(
            settings.ca_file,
            settings.connect_timeout,
            IDLE_CONNECTIONS,
            UpstreamHttp::Auto,
        )?;
        Ok(TokenClient { client })
    }

    /// Sends `request` to `peer` (named in errors) and reads the whole answer, up to
    /// [`MAX_ANSWER_BYTES`]. The refresher bounds the time it takes.
    pub(super) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        peer: &str,
    ) -> Result<(StatusCode, Bytes), CredentialsError> {
        let response = self.client.request(request).await.map_err(|err| {
            CredentialsError::unavailable(format!("cannot reach {peer}: {}", error_chain(&err)))
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| {
                CredentialsError::unavailable(format!(
                    "{peer} answered {status} but its body broke off or passed {} KiB",
                    MAX_ANSWER_BYTES / 1024
                ))
            })?;
        Ok((status, body.to_bytes()))
    }
}

/// `err` and its causes, `: `-separated ("client error (Connect): tcp connect error: ...").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    // Bounded: a chain is a handful of links; a cycle must not loop forever.
    for _ in 0..6 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a token server's answer into a token, or the reason there is none.
pub(super) fn read_token_answer(
    status: StatusCode,
    body: &[u8],
    peer: &str,
) -> Result<FetchedToken, CredentialsError> {
    if !status.is_success() {
        return Err(refusal(status, body, peer));
    }
    let not_expected =
        |what: &str| CredentialsError::unavailable(format!("{peer} answered {status} with {what}"));
    // serde_json's messages can quote the input (which would be the token), so only the
    // position of a syntax error is repeated.
    let answer: Value = serde_json::from_slice(body).map_err(|err| {
        not_expected(&format!(
            "a body that is not JSON (at line {} column {})",
            err.line(),
            err.column()
        ))
    })?;
    let Value::Object(answer) = answer else {
        return Err(not_expected("JSON that is not an object"));
    };
    let access_token = match answer.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token,
        Some(_) => {
            return Err(not_expected(
                "an `access_token` that is not a non-empty string",
            ));
        }
        None => return Err(not_expected("no `access_token`")),
    };
    let expires_in = match answer.get("expires_in") {
        Some(Value::Number(seconds)) => seconds
            .as_u64()
            .or_else(|| seconds.as_f64().filter(|s| *s >= 1.0).map(|s| s as u64))
            .filter(|seconds| *seconds > 0),
        _ => None,
    };
    let Some(expires_in) = expires_in else {
        return Err(not_expected(
            "no positive number of seconds in `expires_in`",
        ));
    };
    match answer.get("token_type") {
        None => {}
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(not_expected("a `token_type` other than Bearer")),
    }
    Ok(FetchedToken::new(
        access_token.clone(),
        Duration::from_secs(expires_in),
    ))
}

/// The error for a non-success answer: its status and, when the body is an OAuth error
/// (`{error, error_description}`) or a Google API error (`{error: {message}}`), its words.
fn refusal(status: StatusCode, body: &[u8], peer: &str) -> CredentialsError {
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|answer| oauth_reason(&answer));
    let message = match reason {
        Some(reason) => format!("{peer} answered {status}: {reason}"),
        None => format!("{peer} answered {status}"),
    };
    // The caller's credentials or setup are wrong (bad key, unknown account, wrong URI);
    // everything else (429, 5xx, odd statuses) may pass on its own.
    match status.as_u16() {
        400 | 401 | 403 | 404 => CredentialsError::rejected(message),
        _ => CredentialsError::unavailable(message),
    }
}

fn oauth_reason(answer: &Value) -> Option<String> {
    let (code, description) = match answer.get("error")? {
        Value::String(code) => (
            code.as_str(),
            answer.get("error_description").and_then(Value::as_str),
        ),
        Value::Object(error) => (
            error.get("status").and_then(Value::as_str).unwrap_or(""),
            error.get("message").and_then(Value::as_str),
        ),
        _ => return None,
    };
    let code = quoted(code);
    Some(match description.map(quoted) {
        Some(description) if !description.is_empty() => format!("{code} ({description})"),
        _ => code,
    })
}

/// `text` made safe to repeat: printable characters only, at most [`MAX_QUOTED_CHARS`].
fn quoted(text: &str) -> String {
    let mut kept: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED_CHARS)
        .collect();
    if text.chars().count() > MAX_QUOTED_CHARS {
        kept.push('…');
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::vertex::credentials::error::CredentialsErrorKind;

    const PEER: &str = "the token endpoint";

    #[test]
    fn reads_a_token_answer() {
        let body =
            br#"{"access_token":"ya29.secret-token","expires_in":3599,"token_type":"Bearer"}"#;
        let token = read_token_answer(StatusCode::OK, body, PEER).unwrap();
        assert_eq!(token.expires_in(), Duration::from_secs(3599));
        assert_eq!(token.access_token(), "ya29.secret-token");
        assert!(!format!("{token:?}").contains("secret-token"));
    }

    #[test]
    fn odd_answers_are_refused_without_quoting_the_body() {
        let cases: [(&[u8], &str); 6] = [
            (b"\"ya29.secret-token\"", "not an object"),
            (b"{\"access_token\":\"ya29.secret-token\"", "not JSON"),
            (b"{\"access_token\":\"ya29.secret-token\"}", "expires_in"),
            (b"{\"access_token\":\"ya29.secret-token\",\"expires_in\":0}", "expires_in"),
            (b"{\"expires_in\":3599}", "no `access_token`"),
            (
                b"{\"access_token\":\"ya29.secret-token\",\"expires_in\":3599,\"token_type\":\"MAC\"}",
                "token_type",
            ),
        ];
        for (body, expected) in cases {
            let err = read_token_answer(StatusCode::OK, body, PEER).unwrap_err();
            assert_eq!(err.kind(), CredentialsErrorKind::Unavailable);
            assert!(err.message().contains(expected), "{err}");
            assert!(
                !format!("{err} {err:?}").contains("secret-token"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn refusals_carry_the_oauth_error_and_a_kind_by_status() {
        let body = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        let err = read_token_answer(StatusCode::BAD_REQUEST, body, PEER).unwrap_err();
        assert_eq!(err.kind(), CredentialsErrorKind::Rejected);
        assert_eq!(
            err.message(),
            "the token endpoint answered 400 Bad Request: invalid_grant (Invalid JWT Signature.)"
        );
        let err = read_token_answer(StatusCode::SERVICE_UNAVAILABLE, b"busy", PEER).unwrap_err();
        assert_eq!(err.kind(), CredentialsErrorKind::Unavailable);
        assert_eq!(
            err.message(),
            "the token endpoint answered 503 Service Unavailable"
        );
        let google =
            br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#;
        let err = read_token_answer(StatusCode::FORBIDDEN, google, PEER).unwrap_err();
        assert!(
            err.message()
                .ends_with("PERMISSION_DENIED (Permission denied)"),
            "{err}"
        );
    }

    #[test]
    fn quoted_text_is_bounded_and_printable() {
        let long = "x".repeat(500);
        assert_eq!(quoted(&long).chars().count(), MAX_QUOTED_CHARS + 1);
        assert_eq!(quoted("a\nb\u{1b}c"), "abc");
    }
}
