//! Gateway errors and the one function that turns them into responses.
//!
//! Each step has its own small error enum; all of them convert into [`GatewayError`], whose
//! [`ErrorKind`] is a closed vocabulary that says whose fault it was. [`into_response`] is the
//! only place that chooses a status code and writes an error body; [`stream_error_event`]
//! writes the same body as the terminal SSE event once a stream has begun.

mod rescue;

pub use rescue::{Rescue, RescueLayer};

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::body::GatewayBody;

/// Response header saying whose fault an error was.
pub const ERROR_SOURCE_HEADER: HeaderName = HeaderName::from_static("x-tollgate-error-source");

/// Who caused an error. Exposed as `x-tollgate-error-source` and as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Client,
    Policy,
    Upstream,
    Gateway,
}

impl Fault {
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Policy => "policy",
            Fault::Upstream => "upstream",
            Fault::Gateway => "gateway",
        }
    }
}

/// The closed set of error kinds. Adding one means adding its status, type and code here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    MalformedRequest,
    HeadersTooLarge,
    HeaderReadTimeout,
    MalformedJson,
    InvalidField,
    MissingModel,
    UnsupportedMediaType,
    BodyTooLarge,
    BodyReadTimeout,
    BodyIncomplete,
    MethodNotAllowed,
    UnknownPath,
    ModelNotFound,
    VersionNotFound,
    MissingApiKey,
    InvalidApiKey,
    ModelNotAllowed,
    VersionPinNotAllowed,
    UnsupportedParameter,
    PromptNotFound,
    PromptVersionNotFound,
    PromptNotAllowed,
    InvalidPromptVariable,
    PromptRenderFailed,
    RateLimited,
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamProtocol,
    UpstreamStreamInterrupted,
    UpstreamStreamTruncated,
    UpstreamResponseTooLarge,
    UpstreamRateLimited,
    UpstreamStatus,
    UpstreamCredentialsUnavailable,
    UpstreamCredentialsRejected,
    Internal,
}

impl ErrorKind {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [ErrorKind; 36] = [
        ErrorKind::MalformedRequest,
        ErrorKind::HeadersTooLarge,
        ErrorKind::HeaderReadTimeout,
        ErrorKind::MalformedJson,
        ErrorKind::InvalidField,
        ErrorKind::MissingModel,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::BodyTooLarge,
        ErrorKind::BodyReadTimeout,
        ErrorKind::BodyIncomplete,
        ErrorKind::MethodNotAllowed,
        ErrorKind::UnknownPath,
        ErrorKind::ModelNotFound,
        ErrorKind::VersionNotFound,
        ErrorKind::MissingApiKey,
        ErrorKind::InvalidApiKey,
        ErrorKind::ModelNotAllowed,
        ErrorKind::VersionPinNotAllowed,
        ErrorKind::UnsupportedParameter,
        ErrorKind::PromptNotFound,
        ErrorKind::PromptVersionNotFound,
        ErrorKind::PromptNotAllowed,
        ErrorKind::InvalidPromptVariable,
        ErrorKind::PromptRenderFailed,
        ErrorKind::RateLimited,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamProtocol,
        ErrorKind::UpstreamStreamInterrupted,
        ErrorKind::UpstreamStreamTruncated,
        ErrorKind::UpstreamResponseTooLarge,
        ErrorKind::UpstreamRateLimited,
        ErrorKind::UpstreamStatus,
        ErrorKind::UpstreamCredentialsUnavailable,
        ErrorKind::UpstreamCredentialsRejected,
        ErrorKind::Internal,
    ];

    /// Status, OpenAI `error.type`, `error.code` and fault, in one table.
    #[rustfmt::skip]
    const fn spec(self) -> (StatusCode, &'static str, &'static str, Fault) {
        use ErrorKind::*;
        match self {
            MalformedRequest => (StatusCode::BAD_REQUEST, "invalid_request_error", "malformed_http_request", Fault::Client),
            HeadersTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "invalid_request_error", "request_headers_too_large", Fault::Client),
            HeaderReadTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", "header_read_timeout", Fault::Client),
            MalformedJson => (StatusCode::BAD_REQUEST, "invalid_request_error", "malformed_json", Fault::Client),
            InvalidField => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_field", Fault::Client),
            MissingModel => (StatusCode::BAD_REQUEST, "invalid_request_error", "missing_model", Fault::Client),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", "unsupported_media_type", Fault::Client),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "body_too_large", Fault::Client),
            BodyReadTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", "body_read_timeout", Fault::Client),
            BodyIncomplete => (StatusCode::BAD_REQUEST, "invalid_request_error", "body_incomplete", Fault::Client),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed", Fault::Client),
            UnknownPath => (StatusCode::NOT_FOUND, "invalid_request_error", "unknown_url", Fault::Client),
            ModelNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found", Fault::Client),
            VersionNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "version_not_found", Fault::Client),
            MissingApiKey => (StatusCode::UNAUTHORIZED, "authentication_error", "missing_api_key", Fault::Client),
            InvalidApiKey => (StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key", Fault::Client),
            ModelNotAllowed => (StatusCode::FORBIDDEN, "permission_error", "model_not_allowed", Fault::Policy),
            VersionPinNotAllowed => (StatusCode::FORBIDDEN, "permission_error", "version_pin_not_allowed", Fault::Policy),
            UnsupportedParameter => (StatusCode::BAD_REQUEST, "invalid_request_error", "unsupported_parameter", Fault::Client),
            PromptNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "prompt_not_found", Fault::Client),
            PromptVersionNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "prompt_version_not_found", Fault::Client),
            PromptNotAllowed => (StatusCode::FORBIDDEN, "permission_error", "prompt_not_allowed", Fault::Policy),
            InvalidPromptVariable => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_prompt_variable", Fault::Client),
            // The variables fit the schema but the template failed on them: a template bug
            // `tollgate check` could not reach with its example values. The prompt's author
            // is at fault, not the caller, and a canary that breaks so must show as errors.
            PromptRenderFailed => (StatusCode::INTERNAL_SERVER_ERROR, "gateway_error", "prompt_render_failed", Fault::Gateway),
            // A Tollgate limit refused the request (an upstream's 429 is `upstream_rate_limited`).
            RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_exceeded", Fault::Policy),
            UpstreamConnect => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_unreachable", Fault::Upstream),
            UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_error", "upstream_timeout", Fault::Upstream),
            UpstreamProtocol => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_bad_response", Fault::Upstream),
            UpstreamStreamInterrupted => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_stream_interrupted", Fault::Upstream),
            UpstreamStreamTruncated => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_stream_truncated", Fault::Upstream),
            UpstreamResponseTooLarge => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_response_too_large", Fault::Upstream),
            UpstreamRateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "upstream_rate_limited", Fault::Upstream),
            // An upstream error answer passed through as is; its own status wins.
            UpstreamStatus => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error_status", Fault::Upstream),
            // Tollgate could not get a token for the upstream (Vertex AI): the token server is
            // unreachable or failing, or it refused the credentials.
            UpstreamCredentialsUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "upstream_error", "upstream_credentials_unavailable", Fault::Upstream),
            UpstreamCredentialsRejected => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_credentials_rejected", Fault::Upstream),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "gateway_error", "internal_error", Fault::Gateway),
        }
    }

    pub const fn status(self) -> StatusCode {
        self.spec().0
    }

    pub const fn error_type(self) -> &'static str {
        self.spec().1
    }

    pub const fn code(self) -> &'static str {
        self.spec().2
    }

    pub const fn fault(self) -> Fault {
        self.spec().3
    }

    /// Dense index for per-kind metric arrays.
    pub fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// An error on its way to the caller: a kind, a human message, and the offending parameter.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
    pub param: Option<Cow<'static, str>>,
    pub retry_after: Option<Duration>,
    /// Another attempt (the same version or a fallback) may succeed: the upstream could not
    /// be reached, timed out before its first token, or answered 429/500/502/503/504.
    pub retryable: bool,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
            retryable: false,
        }
    }

    /// Marks the error as one another attempt may get past.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Names the request field at fault (`model`, `prompt.variables.question`).
    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for GatewayError {}

/// The OpenAI error JSON for `err`: `{"error":{"message","type","param","code"}}`.
fn error_json(err: &GatewayError) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "message": err.message,
            "type": err.kind.error_type(),
            "param": err.param,
            "code": err.kind.code(),
        }
    });
    // Serializing a `Value` of strings cannot fail; fall back to a fixed body rather than panic.
    serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"error":{"message":"internal error","type":"gateway_error","param":null,"code":"internal_error"}}"#.to_vec()
    })
}

/// The API dialect a caller speaks, which its errors are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// Google's `{"error":{"code","message","status"}}`, on the Vertex-native surface.
    Google,
}

/// The one function that turns an error into an HTTP response, in OpenAI's format.
pub fn into_response(err: &GatewayError) -> Response<GatewayBody> {
    into_response_in(err, Dialect::OpenAi)
}

/// An error as an HTTP response in `dialect`: the same status, headers and accounting.
pub fn into_response_in(err: &GatewayError, dialect: Dialect) -> Response<GatewayBody> {
    let body = match dialect {
        Dialect::OpenAi => error_json(err),
        Dialect::Google => crate::api::gemini::errors::error_body(err.kind.status(), &err.message),
    };
    let mut response = Response::new(GatewayBody::error(Bytes::from(body), err.kind));
    *response.status_mut() = err.kind.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        ERROR_SOURCE_HEADER,
        HeaderValue::from_static(err.kind.fault().as_str()),
    );
    if let Some(after) = err.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            // Whole seconds, rounded up: a client that waits what it is told gets in.
            HeaderValue::from((after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)),
        );
    }
    response
}

/// The same error body as a terminal SSE event, for errors after a stream has begun.
pub fn stream_error_event(err: &GatewayError) -> Bytes {
    let json = error_json(err);
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_code_and_index() {
        let mut codes: Vec<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn maps_faults_to_statuses() {
        assert_eq!(ErrorKind::MalformedJson.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ErrorKind::BodyTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ErrorKind::UnsupportedMediaType.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(ErrorKind::ModelNotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(ErrorKind::InvalidApiKey.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ErrorKind::ModelNotAllowed.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            ErrorKind::UpstreamTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ErrorKind::UpstreamTimeout.fault(), Fault::Upstream);
    }

    #[test]
    fn body_is_openai_error_json() {
        let err = GatewayError::new(
            ErrorKind::MissingModel,
            "you must provide a model parameter",
        )
        .with_param("model");
        let json: serde_json::Value = serde_json::from_slice(&error_json(&err)).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "missing_model");
        assert_eq!(json["error"]["param"], "model");
        assert_eq!(
            json["error"]["message"],
            "you must provide a model parameter"
        );
    }

    #[test]
    fn stream_event_is_one_sse_data_event() {
        let err = GatewayError::new(ErrorKind::UpstreamStreamInterrupted, "upstream went away");
        let event = stream_error_event(&err);
        assert!(event.starts_with(b"data: {\"error\""));
        assert!(event.ends_with(b"\n\n"));
        assert_eq!(event.iter().filter(|b| **b == b'\n').count(), 2);
    }
}
