//! Google's error format (`{"error":{code,message,status,details}}`, array-wrapped on the
//! stream endpoints) as an OpenAI error, with the HTTP status Google's status stands for
//! and the retry delay its `RetryInfo` asks for.

use std::borrow::Cow;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    error: GoogleError<'a>,
}

#[derive(Deserialize)]
struct GoogleError<'a> {
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    details: Vec<Detail<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail<'a> {
    #[serde(rename = "@type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    retry_delay: Option<Cow<'a, str>>,
    /// `google.rpc.ErrorInfo.reason`, e.g. `API_KEY_INVALID`.
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// A Google error, as the OpenAI client gets it.
#[derive(Debug, PartialEq, Eq)]
pub struct TranslatedError {
    pub status: StatusCode,
    /// `{"error":{"message","type","param","code"}}`.
    pub body: Vec<u8>,
    /// From `google.rpc.RetryInfo.retryDelay`.
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct OpenAiEnvelope<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: String,
}

/// The HTTP status of a `google.rpc.Code` name.
pub fn http_status(status: &str) -> Option<StatusCode> {
    let code = match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNKNOWN" | "INTERNAL" | "DATA_LOSS" => 500,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => return None,
    };
    StatusCode::from_u16(code).ok()
}

/// OpenAI's error `type` for an HTTP status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        502 => "upstream_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

/// The OpenAI error for a Google error body (an object, or the one-element array the stream
/// endpoints send), or `None` when `body` is not one. `http` is the status the body came
/// with; Google's status name decides when it has one, since a stream's error arrives after
/// a 200.
pub fn translate(body: &[u8], http: StatusCode) -> Option<TranslatedError> {
    // By the first byte: serde would also read a struct from an array, field by position.
    let array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let envelope: Envelope<'_> = if array {
        serde_json::from_slice::<[Envelope<'_>; 1]>(body).map(|[one]| one)
    } else {
        serde_json::from_slice(body)
    }
    .ok()?;
    let error = envelope.error;
    let status = (error.status.as_deref().and_then(http_status))
        .or_else(|| error.code.and_then(|code| StatusCode::from_u16(code).ok()))
        .filter(|status| status.is_client_error() || status.is_server_error())
        .unwrap_or(if http.is_success() {
            StatusCode::BAD_GATEWAY
        } else {
            http
        });
    let retry_after = error
        .details
        .iter()
        .filter(|detail| detail.kind.ends_with("google.rpc.RetryInfo"))
        .find_map(|detail| detail.retry_delay.as_deref().and_then(proto_duration));
    // Google refusing the gateway's own credentials is not the caller's auth failure: it
    // is a 502 another version may get past, and Google's text (which names the project)
    // stays out of the caller's answer.
    let credentials_refused = matches!(
        error.status.as_deref(),
        Some("UNAUTHENTICATED" | "PERMISSION_DENIED")
    ) || error
        .details
        .iter()
        .any(|detail| detail.reason.as_deref() == Some("API_KEY_INVALID"));
    let (status, code, message) = if credentials_refused {
        (
            StatusCode::BAD_GATEWAY,
            "upstream_credentials_rejected".to_owned(),
            format!(
                "Vertex AI refused the gateway's credentials ({})",
                error.status.as_deref().unwrap_or("API_KEY_INVALID")
            ),
        )
    } else {
        let code = match &error.status {
            Some(name) => name.to_ascii_lowercase(),
            None => format!("http_{}", status.as_u16()),
        };
        (status, code, format!("Vertex AI: {}", error.message))
    };
    let body = serde_json::to_vec(&OpenAiEnvelope {
        error: OpenAiError {
            message: &message,
            kind: openai_type(status),
            param: None,
            code,
        },
    })
    .ok()?;
    Some(TranslatedError {
        status,
        body,
        retry_after,
    })
}

/// A `google.protobuf.Duration` in its JSON form: seconds with up to nine decimals and an
/// `s` (`"30s"`, `"1.5s"`).
pub fn proto_duration(text: &str) -> Option<Duration> {
    let seconds = text.strip_suffix('s')?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    // A day is longer than any wait a caller is told to make; larger values are nonsense.
    if whole > 86_400 {
        return None;
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some(Duration::new(whole, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn every_status_name_maps_to_the_reference_status() {
        let table = [
            ("INVALID_ARGUMENT", 400),
            ("FAILED_PRECONDITION", 400),
            ("OUT_OF_RANGE", 400),
            ("UNAUTHENTICATED", 401),
            ("PERMISSION_DENIED", 403),
            ("NOT_FOUND", 404),
            ("ALREADY_EXISTS", 409),
            ("ABORTED", 409),
            ("RESOURCE_EXHAUSTED", 429),
            ("CANCELLED", 499),
            ("UNKNOWN", 500),
            ("INTERNAL", 500),
            ("DATA_LOSS", 500),
            ("UNIMPLEMENTED", 501),
            ("UNAVAILABLE", 503),
            ("DEADLINE_EXCEEDED", 504),
        ];
        for (name, code) in table {
            assert_eq!(http_status(name).map(|s| s.as_u16()), Some(code), "{name}");
        }
        assert_eq!(http_status("OK"), None);
    }

    #[test]
    fn resource_exhausted_with_retry_info() {
        let body = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED"},
                       {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
        let out = translate(body, StatusCode::TOO_MANY_REQUESTS).unwrap();
        assert_eq!(out.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(out.retry_after, Some(Duration::from_millis(1500)));
        let error = &json(&out.body)["error"];
        assert_eq!(error["type"], "rate_limit_error");
        assert_eq!(error["code"], "resource_exhausted");
        assert_eq!(error["message"], "Vertex AI: Quota exceeded");
        assert!(error["param"].is_null());
    }

    #[test]
    fn array_wrapped_stream_error_after_a_200() {
        let body = br#"[{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}]"#;
        let out = translate(body, StatusCode::OK).unwrap();
        assert_eq!(out.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(&out.body)["error"]["type"], "server_error");
        assert_eq!(out.retry_after, None);
    }

    #[test]
    fn the_status_name_decides_over_the_code_and_unknown_names_fall_back() {
        let body = br#"{"error":{"code":400,"message":"m","status":"NOT_FOUND"}}"#;
        assert_eq!(
            translate(body, StatusCode::BAD_REQUEST).unwrap().status,
            StatusCode::NOT_FOUND
        );
        let body = br#"{"error":{"code":403,"message":"m","status":"SOMETHING_NEW"}}"#;
        let out = translate(body, StatusCode::FORBIDDEN).unwrap();
        assert_eq!(out.status, StatusCode::FORBIDDEN);
        assert_eq!(json(&out.body)["error"]["code"], "something_new");
        let body = br#"{"error":{"message":"no status, no code"}}"#;
        let out = translate(body, StatusCode::OK).unwrap();
        assert_eq!(out.status, StatusCode::BAD_GATEWAY);
        assert_eq!(json(&out.body)["error"]["code"], "http_502");
    }

    #[test]
    fn refused_credentials_are_a_502_without_googles_text() {
        for body in [
            &br#"{"error":{"code":401,"message":"Request had invalid authentication credentials for projects/secret-project","status":"UNAUTHENTICATED"}}"#[..],
            br#"{"error":{"code":403,"message":"Permission denied on resource projects/secret-project","status":"PERMISSION_DENIED"}}"#,
            br#"{"error":{"code":400,"message":"API key not valid for secret-project","status":"INVALID_ARGUMENT",
                "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
        ] {
            let out = translate(body, StatusCode::UNAUTHORIZED).unwrap();
            assert_eq!(out.status, StatusCode::BAD_GATEWAY);
            let text = String::from_utf8(out.body.clone()).unwrap();
            assert!(!text.contains("secret-project"), "{text}");
            let error = &json(&out.body)["error"];
            assert_eq!(error["code"], "upstream_credentials_rejected");
            assert_eq!(error["type"], "upstream_error");
        }
    }

    #[test]
    fn bodies_that_are_not_google_errors() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"[]",
            b"{\"error\":\"text\"}",
            b"[{}, {}]",
        ] {
            assert_eq!(translate(body, StatusCode::BAD_GATEWAY), None, "{body:?}");
        }
    }

    #[test]
    fn proto_durations() {
        assert_eq!(proto_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(proto_duration("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(proto_duration("1.000000001s"), Some(Duration::new(1, 1)));
        for bad in [
            "30",
            "s",
            "1.2.3s",
            "-1s",
            "1.0000000001s",
            "1.x5s",
            "18446744073709551615.5s",
        ] {
            assert_eq!(proto_duration(bad), None, "{bad}");
        }
    }
}
