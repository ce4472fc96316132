//! Reads a client's request body: content type, size limit and read deadline enforced.

use crate::server::InboundBody;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};

use crate::error::{ErrorKind, GatewayError};
use crate::snapshot::Limits;

/// Checks the content type and reads the body of a JSON request.
pub async fn read(
    headers: &HeaderMap,
    body: InboundBody,
    limits: &Limits,
) -> Result<Bytes, GatewayError> {
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        let essence = value
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let is_json = essence.eq_ignore_ascii_case("application/json")
            || essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json");
        if !is_json {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedMediaType,
                "request body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    let too_large = || {
        GatewayError::new(
            ErrorKind::BodyTooLarge,
            format!(
                "request body is larger than {} bytes",
                limits.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Err(_) => Err(GatewayError::new(
            ErrorKind::BodyReadTimeout,
            "request body was not received in time",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(GatewayError::new(
            ErrorKind::BodyIncomplete,
            "request body could not be read to its end",
        )),
    }
}
