//! The Vertex AI side of an upstream exchange: where a call goes, Google's errors, and
//! Gemini's answers (whole bodies, streams) put in OpenAI's terms for the client.

use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use tokio::time::Instant;

use super::forward::{error_response, openai_error_answer, read_body};
use super::source::Source;
use super::stats::ExchangeStats;
use crate::body::GatewayBody;
use crate::error::{ErrorKind, GatewayError};
use crate::providers::vertex::{errors, response, stream::StreamTranslator};
use crate::snapshot::Limits;

/// `name: value\r\n`, for the lean HTTP/1.1 client.
pub fn header_line(name: &HeaderName, value: &HeaderValue) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.as_str().len() + value.len() + 4);
    line.extend_from_slice(name.as_str().as_bytes());
    line.extend_from_slice(b": ");
    line.extend_from_slice(value.as_bytes());
    line.extend_from_slice(b"\r\n");
    line
}

/// `path` on the scheme and authority of `endpoint_uri`.
pub fn uri(endpoint_uri: &Uri, path: &str) -> Result<Uri, GatewayError> {
    let mut builder = Uri::builder().path_and_query(path);
    if let Some(scheme) = endpoint_uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = endpoint_uri.authority() {
        builder = builder.authority(authority.clone());
    }
    builder.build().map_err(|err| {
        GatewayError::new(
            ErrorKind::Internal,
            format!("cannot build the Vertex AI URL: {err}"),
        )
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A whole Gemini answer as an OpenAI chat completion body.
pub fn completion_body(body: &[u8], model: &str) -> Result<Bytes, GatewayError> {
    response::chat_completion(body, model, unix_now()).map(Bytes::from)
}

/// A Vertex AI error answer, in OpenAI's error format with the status Google's status name
/// stands for; its `RetryInfo` becomes `retry-after`, which retries and ejection read. An
/// OpenAI error (from a model served behind Vertex's OpenAI-compatible endpoint) passes as
/// is; any other body is replaced by a gateway error.
pub async fn error_answer(
    status: StatusCode,
    upstream_headers: HeaderMap,
    source: Source,
    limits: &Limits,
    total: Instant,
    stats: ExchangeStats,
) -> Result<Response<GatewayBody>, GatewayError> {
    let body = read_body(source, limits, total).await?;
    let Some(translated) = errors::translate(&body, status) else {
        return openai_error_answer(status, upstream_headers, body, stats, "a Google or OpenAI");
    };
    let mut headers = HeaderMap::new();
    // RetryInfo says when; without it, the HTTP header may.
    if let Some(after) = upstream_headers.get(header::RETRY_AFTER) {
        headers.insert(header::RETRY_AFTER, after.clone());
    }
    if let Some(delay) = translated.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_seconds(delay)),
        );
    }
    Ok(error_response(
        translated.status,
        headers,
        Bytes::from(translated.body),
        stats,
    ))
}

/// A Gemini stream as a source of OpenAI SSE bytes, for the tee.
pub fn translated(inner: Source, model: &str) -> Source {
    Source::Gemini(Box::new(TranslatedStream {
        inner,
        translator: StreamTranslator::new(model, unix_now()),
        ready: BytesMut::new(),
        ended: false,
        failure: None,
    }))
}

/// An upstream Gemini stream and its translator.
pub struct TranslatedStream {
    inner: Source,
    translator: StreamTranslator,
    /// Translated bytes not yet handed to the tee.
    ready: BytesMut,
    /// The upstream body ended (cleanly or not).
    ended: bool,
    /// A translation failure, handed over once the events translated before it are out.
    failure: Option<String>,
}

impl TranslatedStream {
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        loop {
            if !self.ready.is_empty() {
                return Poll::Ready(Some(Ok(self.ready.split().freeze())));
            }
            if let Some(why) = self.failure.take() {
                return Poll::Ready(Some(Err(why)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(self.inner.poll_chunk(cx)) {
                Some(Ok(chunk)) => {
                    // Events translated before a failing one still go out first.
                    if let Err(why) = self.translator.feed(&chunk, &mut self.ready) {
                        self.ended = true;
                        self.inner = Source::Closed;
                        self.failure = Some(why);
                    }
                }
                Some(Err(why)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(why)));
                }
                None => {
                    self.translator.finish(&mut self.ready);
                    self.ended = true;
                }
            }
        }
    }
}

/// A `RetryInfo` delay as `retry-after`: whole seconds (it has no fractions), rounded up so
/// no retry comes early, and at least one.
fn retry_after_seconds(delay: Duration) -> u64 {
    (delay.as_secs())
        .saturating_add(u64::from(delay.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keeps_scheme_and_authority() {
        let base: Uri = "https://aiplatform.googleapis.com/chat/completions"
            .parse()
            .unwrap();
        let uri = uri(&base, "/v1/publishers/google/models/m:generateContent").unwrap();
        assert_eq!(
            uri.to_string(),
            "https://aiplatform.googleapis.com/v1/publishers/google/models/m:generateContent"
        );
    }

    #[test]
    fn retry_delays_round_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
