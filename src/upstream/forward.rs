//! One upstream attempt against an OpenAI-compatible provider: send, then stream or read back.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::GatewayBody;
use crate::error::{ErrorKind, GatewayError};
use crate::providers::OpenAiProvider;
use crate::snapshot::{Limits, Route};
use crate::upstream::openai_view::AnswerView;
use crate::upstream::source::Source;
use crate::upstream::stats::ExchangeStats;
use crate::upstream::tee::{StreamTimeouts, Tee};

/// The OpenAI surfaces that are forwarded upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Chat,
    Completions,
    Embeddings,
}

/// What the caller asked for, as far as forwarding is concerned.
pub struct Outbound {
    pub surface: Surface,
    pub body: Bytes,
    pub stream: bool,
    /// Drop the usage-only chunk: the gateway asked for it, the client did not.
    pub strip_usage: bool,
    pub arrived: Instant,
}

/// Headers that describe one hop, not the message; never copied from upstream to client.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// Sends `out` to `provider` for `route` and returns the client's response.
pub async fn forward(
    provider: &OpenAiProvider,
    route: &Route,
    limits: &Limits,
    out: Outbound,
) -> Result<Response<GatewayBody>, GatewayError> {
    let deadlines = StreamTimeouts::from_now(&route.timeouts);

    let mut request = Request::post(provider.uri(out.surface).clone())
        .body(Full::new(out.body))
        .map_err(|err| {
            GatewayError::new(
                ErrorKind::Internal,
                format!("cannot build upstream request: {err}"),
            )
        })?;
    let headers = request.headers_mut();
    headers.clone_from(&provider.headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(if out.stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );

    let response =
        match tokio::time::timeout_at(deadlines.first_event, provider.client().request(request))
            .await
        {
            Err(_) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream did not answer in time",
                ));
            }
            Ok(Err(err)) if err.is_connect() => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamConnect,
                    format!("cannot connect to provider `{}`", provider.name),
                ));
            }
            Ok(Err(err)) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    format!(
                        "provider `{}` failed before answering: {}",
                        provider.name,
                        source_chain(&err)
                    ),
                ));
            }
            Ok(Ok(response)) => response,
        };
    let (mut parts, incoming) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let mut stats = ExchangeStats {
        stream: out.stream,
        upstream_status: Some(parts.status.as_u16()),
        ..ExchangeStats::default()
    };

    if !parts.status.is_success() {
        return upstream_error(
            parts.status,
            parts.headers,
            incoming,
            limits,
            deadlines.total,
            stats,
        )
        .await;
    }
    if out.stream {
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_sse {
            return Err(GatewayError::new(
                ErrorKind::UpstreamProtocol,
                "upstream answered a streaming request without text/event-stream",
            ));
        }
        let tee = Tee::new(
            Source::Http(incoming),
            out.strip_usage,
            deadlines,
            out.arrived,
        );
        let mut response = Response::from_parts(parts, GatewayBody::stream(tee, stats));
        set_stream_headers(response.headers_mut());
        return Ok(response);
    }

    let body = read_body(incoming, limits, deadlines.total).await?;
    let view = AnswerView::parse(&body).map_err(|_| {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            "upstream answered with malformed JSON",
        )
    })?;
    stats.usage = view.usage;
    stats.finish_reason = view.choices.finish_reason;
    stats.ttft = Some(out.arrived.elapsed());
    Ok(Response::from_parts(parts, GatewayBody::full(body, stats)))
}

/// Headers every streamed answer carries, so no proxy in between buffers it.
pub fn set_stream_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Reads a whole upstream body within the response-size limit and the total deadline.
async fn read_body(
    incoming: Incoming,
    limits: &Limits,
    total: Instant,
) -> Result<Bytes, GatewayError> {
    let limited = Limited::new(incoming, limits.max_response_bytes);
    match tokio::time::timeout_at(total, limited.collect()).await {
        Err(_) => Err(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            "upstream body did not finish in time",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(GatewayError::new(
            ErrorKind::UpstreamResponseTooLarge,
            format!(
                "upstream response is larger than {} bytes",
                limits.max_response_bytes
            ),
        )),
        Ok(Err(err)) => Err(GatewayError::new(
            ErrorKind::UpstreamStreamInterrupted,
            format!("upstream body failed: {err}"),
        )),
    }
}

/// An upstream error status. A JSON error body is the upstream's answer to the caller and is
/// passed through with its status; anything else is replaced by a gateway error.
async fn upstream_error(
    status: StatusCode,
    mut headers: HeaderMap,
    incoming: Incoming,
    limits: &Limits,
    total: Instant,
    mut stats: ExchangeStats,
) -> Result<Response<GatewayBody>, GatewayError> {
    let body = read_body(incoming, limits, total).await?;
    let is_openai_error = AnswerView::parse(&body).is_ok_and(|view| view.error.is_some());
    if !is_openai_error {
        let mut err = GatewayError::new(
            if status == StatusCode::TOO_MANY_REQUESTS {
                ErrorKind::UpstreamRateLimited
            } else {
                ErrorKind::UpstreamProtocol
            },
            format!(
                "upstream answered HTTP {} without an OpenAI error body",
                status.as_u16()
            ),
        );
        err.retry_after = crate::upstream::retry_after(&headers);
        return Err(err);
    }
    stats.error = Some(ErrorKind::UpstreamStatus);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-tollgate-error-source",
        HeaderValue::from_static("upstream"),
    );
    let mut response = Response::new(GatewayBody::full(body, stats));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The error and its causes, for messages about failures hyper reports in layers.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
