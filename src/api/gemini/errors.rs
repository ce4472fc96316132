//! Errors on the Vertex-native surface, in Google's format
//! (`{"error":{"code","message","status"}}`), from the gateway's own errors and from OpenAI
//! error bodies of upstreams that speak OpenAI.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// The `google.rpc.Code` name Google answers with for an HTTP status.
pub fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 | 422 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 | 405 => "NOT_FOUND",
        409 => "ABORTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// Google's error body for `status` and `message`.
pub fn error_body(status: StatusCode, message: &str) -> Vec<u8> {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": status_name(status),
    }});
    // A `Value` of a number and strings always serializes; fall back to a fixed body anyway.
    serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"error":{"code":500,"message":"internal error","status":"INTERNAL"}}"#.to_vec()
    })
}

#[derive(Deserialize)]
struct OpenAiEnvelope<'a> {
    #[serde(borrow)]
    error: OpenAiError<'a>,
}

/// OpenAI's error object, or the bare string TGI answers with.
#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiError<'a> {
    Object {
        #[serde(borrow, default)]
        message: std::borrow::Cow<'a, str>,
    },
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
}

/// Google's error body for an OpenAI error body answered with `status`, or `None` when
/// `body` is not one.
pub fn from_openai(body: &[u8], status: StatusCode) -> Option<Vec<u8>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let envelope: OpenAiEnvelope<'_> = serde_json::from_slice(body).ok()?;
    let message = match &envelope.error {
        OpenAiError::Object { message } | OpenAiError::Text(message) => message,
    };
    Some(error_body(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_back_to_googles_names() {
        for (code, name) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (409, "ABORTED"),
            (429, "RESOURCE_EXHAUSTED"),
            (499, "CANCELLED"),
            (500, "INTERNAL"),
            (501, "UNIMPLEMENTED"),
            (503, "UNAVAILABLE"),
            (504, "DEADLINE_EXCEEDED"),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_name(status), name, "{code}");
            // The reverse of the provider's table, where one exists.
            assert_eq!(
                crate::providers::vertex::errors::http_status(name),
                Some(status),
                "{name}"
            );
        }
    }

    #[test]
    fn openai_errors_become_google_errors() {
        let body = br#"{"error":{"message":"model overloaded","type":"server_error","param":null,"code":null}}"#;
        let out = from_openai(body, StatusCode::SERVICE_UNAVAILABLE).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!({"error": {"code": 503, "message": "model overloaded", "status": "UNAVAILABLE"}})
        );
        // TGI's errors are a string.
        let tgi = from_openai(
            br#"{"error":"Input validation error","error_type":"validation"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&tgi).unwrap();
        assert_eq!(value["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(value["error"]["message"], "Input validation error");
        assert_eq!(from_openai(b"<html>", StatusCode::BAD_GATEWAY), None);
        assert_eq!(from_openai(b"[{}]", StatusCode::BAD_GATEWAY), None);
    }
}
