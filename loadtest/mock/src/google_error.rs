//! Google's error format (`google.rpc.Status` as JSON) and the gRPC status -> HTTP table.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::MockBody;

/// A canonical gRPC status as Google's REST front ends report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GrpcStatus {
    pub(crate) name: &'static str,
    pub(crate) http: u16,
}

impl GrpcStatus {
    pub(crate) const INVALID_ARGUMENT: GrpcStatus = GrpcStatus::new("INVALID_ARGUMENT", 400);
    pub(crate) const UNAUTHENTICATED: GrpcStatus = GrpcStatus::new("UNAUTHENTICATED", 401);
    pub(crate) const PERMISSION_DENIED: GrpcStatus = GrpcStatus::new("PERMISSION_DENIED", 403);
    pub(crate) const NOT_FOUND: GrpcStatus = GrpcStatus::new("NOT_FOUND", 404);
    pub(crate) const INTERNAL: GrpcStatus = GrpcStatus::new("INTERNAL", 500);

    const fn new(name: &'static str, http: u16) -> Self {
        Self { name, http }
    }

    /// Looks a status up by name (any case) or by HTTP code (the first status mapped to it).
    pub(crate) fn parse(text: &str) -> Option<GrpcStatus> {
        let text = text.trim();
        match text.parse::<u16>() {
            Ok(code) => STATUSES.iter().find(|s| s.http == code).copied(),
            Err(_) => STATUSES
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(text))
                .copied(),
        }
    }

    /// The status named for an HTTP code, keeping the code itself even where no status maps
    /// to it (a 502 stays a 502, named `INTERNAL`).
    pub(crate) fn for_http(code: u16) -> GrpcStatus {
        let name = Self::parse(&code.to_string())
            .unwrap_or(match code {
                400..=499 => Self::INVALID_ARGUMENT,
                _ => Self::INTERNAL,
            })
            .name;
        GrpcStatus { name, http: code }
    }
}

/// Every status Google's REST surface returns, with its HTTP code (first of each code is the
/// one `HTTP code -> status` picks).
const STATUSES: [GrpcStatus; 16] = [
    GrpcStatus::new("INVALID_ARGUMENT", 400),
    GrpcStatus::new("FAILED_PRECONDITION", 400),
    GrpcStatus::new("OUT_OF_RANGE", 400),
    GrpcStatus::new("UNAUTHENTICATED", 401),
    GrpcStatus::new("PERMISSION_DENIED", 403),
    GrpcStatus::new("NOT_FOUND", 404),
    GrpcStatus::new("ABORTED", 409),
    GrpcStatus::new("ALREADY_EXISTS", 409),
    GrpcStatus::new("RESOURCE_EXHAUSTED", 429),
    GrpcStatus::new("CANCELLED", 499),
    GrpcStatus::new("INTERNAL", 500),
    GrpcStatus::new("UNKNOWN", 500),
    GrpcStatus::new("DATA_LOSS", 500),
    GrpcStatus::new("UNIMPLEMENTED", 501),
    GrpcStatus::new("UNAVAILABLE", 503),
    GrpcStatus::new("DEADLINE_EXCEEDED", 504),
];

/// One error in Google's JSON shape, with the optional details Google attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GoogleError {
    pub(crate) status: GrpcStatus,
    pub(crate) message: String,
    /// `google.rpc.RetryInfo.retryDelay`.
    pub(crate) retry: Option<Duration>,
    /// `google.rpc.ErrorInfo.reason`, as Google sets on auth failures.
    pub(crate) reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Status<'a>,
}

#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Detail {
    RetryInfo {
        #[serde(rename = "@type")]
        kind: &'static str,
        #[serde(rename = "retryDelay")]
        retry_delay: String,
    },
    ErrorInfo {
        #[serde(rename = "@type")]
        kind: &'static str,
        reason: &'static str,
        domain: &'static str,
    },
}

impl GoogleError {
    pub(crate) fn new(status: GrpcStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry: None,
            reason: None,
        }
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(GrpcStatus::INVALID_ARGUMENT, message)
    }

    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// `{"error":{"code","message","status","details"?}}`.
    pub(crate) fn json(&self) -> String {
        let mut details = Vec::new();
        if let Some(reason) = self.reason {
            details.push(Detail::ErrorInfo {
                kind: "type.googleapis.com/google.rpc.ErrorInfo",
                reason,
                domain: "googleapis.com",
            });
        }
        if let Some(delay) = self.retry {
            details.push(Detail::RetryInfo {
                kind: "type.googleapis.com/google.rpc.RetryInfo",
                retry_delay: duration_json(delay),
            });
        }
        let envelope = Envelope {
            error: Status {
                code: self.status.http,
                message: &self.message,
                status: self.status.name,
                details,
            },
        };
        // Plain strings and integers always serialize.
        serde_json::to_string(&envelope).unwrap_or_default()
    }

    /// The error as a whole response; `array` wraps it as `[{...}]`, the way the JSON-array
    /// stream endpoint (`:streamGenerateContent` without `alt=sse`) answers errors.
    pub(crate) fn response(&self, array: bool) -> Response<MockBody> {
        let json = self.json();
        let body = if array { format!("[{json}]") } else { json };
        let mut response = Response::new(MockBody::full(Bytes::from(body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        response
    }
}

/// A `google.protobuf.Duration` in its JSON form: seconds with 0, 3, 6 or 9 fractional digits
/// and an `s` suffix (`30s`, `1.500s`).
pub(crate) fn duration_json(d: Duration) -> String {
    let mut out = d.as_secs().to_string();
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let _ = if nanos.is_multiple_of(1_000_000) {
            write!(out, ".{:03}", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(out, ".{:06}", nanos / 1_000)
        } else {
            write!(out, ".{nanos:09}")
        };
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_by_name_and_code() {
        assert_eq!(GrpcStatus::parse("resource_exhausted").unwrap().http, 429);
        assert_eq!(GrpcStatus::parse("429").unwrap().name, "RESOURCE_EXHAUSTED");
        assert_eq!(GrpcStatus::parse("500").unwrap().name, "INTERNAL");
        assert_eq!(GrpcStatus::parse("CANCELLED").unwrap().http, 499);
        assert_eq!(GrpcStatus::parse("DEADLINE_EXCEEDED").unwrap().http, 504);
        assert!(GrpcStatus::parse("TEAPOT").is_none());
        assert_eq!(
            GrpcStatus::for_http(418),
            GrpcStatus::new("INVALID_ARGUMENT", 418)
        );
        assert_eq!(GrpcStatus::for_http(502), GrpcStatus::new("INTERNAL", 502));
        assert_eq!(
            GrpcStatus::for_http(503),
            GrpcStatus::new("UNAVAILABLE", 503)
        );
    }

    #[test]
    fn durations_use_proto_json_form() {
        assert_eq!(duration_json(Duration::from_secs(30)), "30s");
        assert_eq!(duration_json(Duration::from_millis(1500)), "1.500s");
        assert_eq!(duration_json(Duration::from_micros(1)), "0.000001s");
        assert_eq!(duration_json(Duration::from_nanos(5)), "0.000000005s");
    }

    #[test]
    fn error_json_shape() {
        let mut error = GoogleError::new(GrpcStatus::parse("429").unwrap(), "slow \"down\"");
        error.retry = Some(Duration::from_millis(1500));
        let v: serde_json::Value = serde_json::from_str(&error.json()).unwrap();
        assert_eq!(v["error"]["code"], 429);
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["error"]["message"], "slow \"down\"");
        let detail = &v["error"]["details"][0];
        assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.RetryInfo");
        assert_eq!(detail["retryDelay"], "1.500s");

        let plain = GoogleError::invalid_argument("bad").json();
        assert!(!plain.contains("details"));
        let auth = GoogleError::new(GrpcStatus::UNAUTHENTICATED, "no")
            .with_reason("CREDENTIALS_MISSING")
            .json();
        let v: serde_json::Value = serde_json::from_str(&auth).unwrap();
        assert_eq!(v["error"]["details"][0]["reason"], "CREDENTIALS_MISSING");
    }
}
