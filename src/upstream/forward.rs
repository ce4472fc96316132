//! One upstream attempt against an OpenAI-compatible provider: send, then stream or read back.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::GatewayBody;
use crate::error::{ErrorKind, GatewayError};
use crate::exchange::Exchange;
use crate::providers::OpenAiProvider;
use crate::providers::endpoints;
use crate::providers::openai::Transport;
use crate::snapshot::{Limits, Version};
use crate::telemetry::metrics::Operation;
use crate::upstream::client::HttpClient;
use crate::upstream::google;
use crate::upstream::h1::{self, SendError};
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

impl Surface {
    /// The surface's `gen_ai.operation.name`.
    pub fn operation(self) -> Operation {
        match self {
            Surface::Chat => Operation::Chat,
            Surface::Completions => Operation::TextCompletion,
            Surface::Embeddings => Operation::Embeddings,
        }
    }
}

/// What the caller asked for, as far as forwarding is concerned.
pub struct Outbound {
    pub surface: Surface,
    pub body: Bytes,
    pub stream: bool,
    /// Drop the usage-only chunk: the gateway asked for it, the client did not.
    pub strip_usage: bool,
    pub arrived: Instant,
    pub call: Call,
}

/// Where and how an attempt is sent.
pub enum Call {
    /// To the endpoint's own OpenAI surface paths, with the provider's static headers.
    OpenAi,
    /// To Vertex AI: a path of its own and a credentials header. Boxed: rare beside OpenAI
    /// calls, and large.
    Vertex(Box<VertexCall>),
}

/// A Vertex AI call.
pub struct VertexCall {
    /// Path and query on the endpoint, e.g. `/v1/projects/p/locations/l/publishers/google/
    /// models/m:streamGenerateContent?alt=sse`.
    pub path: String,
    /// The credentials' header (`authorization` or `x-goog-api-key`).
    pub auth: (HeaderName, HeaderValue),
    /// `Some(model)`: `body` is in Gemini's format and the answer is translated back to
    /// OpenAI's (`model` names it until Gemini's `modelVersion` does). `None`: Vertex's
    /// OpenAI-compatible endpoint, OpenAI's format both ways.
    pub gemini: Option<Box<str>>,
}

/// Headers that describe one hop, not the message; never copied from upstream to client.
/// `HeaderName`s rather than strings: removing by a string parses it first, eight times over.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

/// Sends `out` to `provider` for `version` and returns the client's response. Time spent
/// waiting on the upstream is added to `exchange`'s wait, so it does not count as overhead.
pub async fn forward(
    exchange: &Exchange,
    provider: &OpenAiProvider,
    version: &Version,
    limits: &Limits,
    out: Outbound,
) -> Result<Response<GatewayBody>, GatewayError> {
    let deadlines = StreamTimeouts::from_now(&version.timeouts);
    let accept = if out.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let (endpoint, all_ejected) = provider.pick();
    if exchange.is_recording()
        && let Some(index) = provider
            .endpoints
            .iter()
            .position(|e| std::ptr::eq(e, endpoint))
    {
        exchange.attempt_endpoint(index);
    }
    let trace = TraceHeaders::of(exchange);
    let in_flight = endpoint.health.start();
    let started = Instant::now();
    let sending = async {
        match &endpoint.transport {
            Transport::Lean { client, prefixes } => {
                let [traceparent, tracestate] = trace.lines();
                let request = match &out.call {
                    Call::OpenAi => {
                        let prefix = &prefixes[OpenAiProvider::surface_index(out.surface)];
                        let lines = [&version.header_lines[..], traceparent, tracestate];
                        h1::encode_request(prefix, &lines, accept, &out.body)
                    }
                    // Built per request: the path depends on the model and the token on
                    // the time; next to a remote model's latency the copy is nothing.
                    Call::Vertex(call) => {
                        let prefix =
                            h1::request_prefix(&call.path, &endpoint.label, &provider.headers);
                        let auth = google::header_line(&call.auth.0, &call.auth.1);
                        let lines = [&version.header_lines[..], &auth, traceparent, tracestate];
                        h1::encode_request(&prefix, &lines, accept, &out.body)
                    }
                };
                let (head, body) = client
                    .send(&request)
                    .await
                    .map_err(|err| lean_error(provider, err))?;
                Ok((head.status, head.headers, Source::H1(body)))
            }
            Transport::Hyper {
                clients,
                per_worker,
                turns,
            } => {
                let (uri, auth) = match &out.call {
                    Call::OpenAi => (endpoint.uri(out.surface).clone(), None),
                    Call::Vertex(call) => (
                        google::uri(endpoint.uri(out.surface), &call.path)?,
                        Some(&call.auth),
                    ),
                };
                let (status, headers, incoming) = send_hyper(
                    provider,
                    version,
                    Transport::hyper_client(clients, *per_worker, turns),
                    (uri, auth),
                    accept,
                    out.body.clone(),
                    &trace,
                )
                .await?;
                Ok((status, headers, Source::Http(incoming)))
            }
        }
    };
    let sent = match tokio::time::timeout_at(deadlines.first_event, sending).await {
        Err(_) => Err(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            "upstream did not answer in time",
        )
        .retryable()),
        Ok(result) => result,
    };
    exchange.add_wait(started.elapsed());
    // The endpoint's health learns from every head or failure.
    let now = endpoints::now();
    let (status, headers, source) = match sent {
        Ok(head) => head,
        Err(mut err) => {
            if err.retryable {
                endpoint
                    .health
                    .failed(&provider.ejection, err.retry_after, now);
            }
            if all_ejected {
                err.message = format!(
                    "{} (every endpoint of provider `{}` is ejected after failures; tried the one due back soonest)",
                    err.message, provider.name
                )
                .into();
            }
            return Err(err);
        }
    };
    let stats = ExchangeStats {
        upstream_status: Some(status.as_u16()),
        ..ExchangeStats::for_exchange(exchange, out.stream)
    };
    if let Call::Vertex(_) = &out.call
        && !status.is_success()
    {
        // Google puts the retry delay in the body: read it before the endpoint learns.
        let reading = Instant::now();
        let answer = google::error_answer(
            status,
            headers.clone(),
            source,
            limits,
            deadlines.total,
            stats,
        )
        .await;
        exchange.add_wait(reading.elapsed());
        match &answer {
            Ok(response) => learn(
                endpoint,
                provider,
                response.status(),
                response.headers(),
                started,
                now,
            ),
            Err(_) => learn(endpoint, provider, status, &headers, started, now),
        }
        return answer;
    }
    learn(endpoint, provider, status, &headers, started, now);
    let mut answer = answer(
        exchange,
        (status, headers, source),
        limits,
        deadlines,
        out,
        stats,
    )
    .await;
    if let Ok(response) = &mut answer {
        response.body_mut().hold(in_flight);
    }
    answer
}

/// The endpoint's health learns from an answer's status (and its retry-after).
fn learn(
    endpoint: &crate::providers::openai::Endpoint,
    provider: &OpenAiProvider,
    status: StatusCode,
    headers: &HeaderMap,
    started: Instant,
    now: u64,
) {
    if retryable_status(status) {
        let asked = crate::upstream::retry_after(headers);
        endpoint.health.failed(&provider.ejection, asked, now);
    } else {
        endpoint.health.succeeded(started.elapsed(), now);
    }
}

/// The client's response from an upstream head and body source.
async fn answer(
    exchange: &Exchange,
    (status, mut headers, source): (StatusCode, HeaderMap, Source),
    limits: &Limits,
    deadlines: StreamTimeouts,
    out: Outbound,
    mut stats: ExchangeStats,
) -> Result<Response<GatewayBody>, GatewayError> {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !status.is_success() {
        let reading = Instant::now();
        let answer = upstream_error(status, headers, source, limits, deadlines.total, stats).await;
        exchange.add_wait(reading.elapsed());
        return answer;
    }
    if out.stream {
        if let Call::Vertex(call) = &out.call
            && let Some(model) = &call.gemini
        {
            // Gemini frames its stream as SSE or as a JSON array; the translator tells which.
            let source = google::translated(source, model);
            let tee = Tee::new(source, out.strip_usage, deadlines, out.arrived);
            let mut response = Response::new(GatewayBody::stream(tee, stats));
            *response.headers_mut() = headers;
            set_stream_headers(response.headers_mut());
            return Ok(response);
        }
        let is_sse = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_sse {
            return Err(GatewayError::new(
                ErrorKind::UpstreamProtocol,
                "upstream answered a streaming request without text/event-stream",
            ));
        }
        let tee = Tee::new(source, out.strip_usage, deadlines, out.arrived);
        let mut response = Response::new(GatewayBody::stream(tee, stats));
        *response.headers_mut() = headers;
        set_stream_headers(response.headers_mut());
        return Ok(response);
    }

    let reading = Instant::now();
    let body = read_body(source, limits, deadlines.total).await;
    exchange.add_wait(reading.elapsed());
    let mut body = body?;
    if let Call::Vertex(call) = &out.call
        && let Some(model) = &call.gemini
    {
        body = google::completion_body(&body, model)?;
    }
    let view = AnswerView::parse(&body).map_err(|_| {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            "upstream answered with malformed JSON",
        )
    })?;
    stats.capture_from(&view);
    stats.usage = view.usage;
    stats.finish_reason = view.choices.finish_reason;
    stats.ttft = Some(out.arrived.elapsed());
    let mut response = Response::new(GatewayBody::full(body, stats));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn lean_error(provider: &OpenAiProvider, err: SendError) -> GatewayError {
    match err {
        SendError::Connect(_) => GatewayError::new(
            ErrorKind::UpstreamConnect,
            format!("cannot connect to provider `{}`", provider.name),
        )
        .retryable(),
        SendError::Io(why) => GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!(
                "provider `{}` failed before answering: {why}",
                provider.name
            ),
        )
        .retryable(),
        SendError::Protocol(why) => GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!("provider `{}` answered badly: {why}", provider.name),
        ),
    }
}

/// Sends through hyper's client (TLS and HTTP/2 upstreams).
async fn send_hyper(
    provider: &OpenAiProvider,
    version: &Version,
    client: Option<&HttpClient>,
    (uri, auth): (http::Uri, Option<&(HeaderName, HeaderValue)>),
    accept: &'static str,
    body: Bytes,
    trace: &TraceHeaders,
) -> Result<(StatusCode, HeaderMap, Incoming), GatewayError> {
    let client =
        client.ok_or_else(|| GatewayError::new(ErrorKind::Internal, "provider has no client"))?;
    let mut request = Request::post(uri).body(Full::new(body)).map_err(|err| {
        GatewayError::new(
            ErrorKind::Internal,
            format!("cannot build upstream request: {err}"),
        )
    })?;
    let headers = request.headers_mut();
    headers.clone_from(&provider.headers);
    headers.extend(version.headers.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    if let Some((name, value)) = auth {
        headers.insert(name.clone(), value.clone());
    }
    trace.insert_into(headers);
    match client.request(request).await {
        Ok(response) => {
            let (parts, incoming) = response.into_parts();
            Ok((parts.status, parts.headers, incoming))
        }
        Err(err) if err.is_connect() => Err(GatewayError::new(
            ErrorKind::UpstreamConnect,
            format!("cannot connect to provider `{}`", provider.name),
        )
        .retryable()),
        Err(err) => Err(GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!(
                "provider `{}` failed before answering: {}",
                provider.name,
                source_chain(&err)
            ),
        )
        .retryable()),
    }
}

/// Headers every streamed answer carries, so no proxy in between buffers it.
pub fn set_stream_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
}

/// Reads a whole upstream body within the response-size limit and the total deadline.
pub(super) async fn read_body(
    mut source: Source,
    limits: &Limits,
    total: Instant,
) -> Result<Bytes, GatewayError> {
    let collect = async {
        let mut first: Option<Bytes> = None;
        let mut more: Option<BytesMut> = None;
        let mut len = 0usize;
        while let Some(chunk) = std::future::poll_fn(|cx| source.poll_chunk(cx)).await {
            let chunk = chunk.map_err(|why| {
                GatewayError::new(
                    ErrorKind::UpstreamStreamInterrupted,
                    format!("upstream body failed: {why}"),
                )
            })?;
            len += chunk.len();
            if len > limits.max_response_bytes {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamResponseTooLarge,
                    format!(
                        "upstream response is larger than {} bytes",
                        limits.max_response_bytes
                    ),
                ));
            }
            // A body in one chunk (the common case) is passed on without a copy.
            match (&mut first, &mut more) {
                (None, _) => first = Some(chunk),
                (Some(head), None) => {
                    let mut joined = BytesMut::with_capacity(len.max(head.len() * 2));
                    joined.extend_from_slice(head);
                    joined.extend_from_slice(&chunk);
                    more = Some(joined);
                }
                (Some(_), Some(joined)) => joined.extend_from_slice(&chunk),
            }
        }
        Ok(more.map(BytesMut::freeze).or(first).unwrap_or_default())
    };
    match tokio::time::timeout_at(total, collect).await {
        Err(_) => Err(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            "upstream body did not finish in time",
        )),
        Ok(result) => result,
    }
}

/// An upstream error status. A JSON error body is the upstream's answer to the caller and is
/// passed through with its status; anything else is replaced by a gateway error.
async fn upstream_error(
    status: StatusCode,
    headers: HeaderMap,
    source: Source,
    limits: &Limits,
    total: Instant,
    stats: ExchangeStats,
) -> Result<Response<GatewayBody>, GatewayError> {
    let body = read_body(source, limits, total).await?;
    openai_error_answer(status, headers, body, stats, "an OpenAI")
}

/// An upstream error status with its body read: an OpenAI error body passes with its status
/// and headers; anything else (`expected` names what was hoped for) is a gateway error.
pub(super) fn openai_error_answer(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stats: ExchangeStats,
    expected: &str,
) -> Result<Response<GatewayBody>, GatewayError> {
    if AnswerView::parse(&body).is_ok_and(|view| view.error.is_some()) {
        return Ok(error_response(status, headers, body, stats));
    }
    let retry_after = crate::upstream::retry_after(&headers);
    Err(unexplained_error(status, retry_after, expected))
}

/// An upstream error status whose body is not an error in the upstream's own format
/// (`expected`, e.g. "an OpenAI"): replaced by a gateway error.
fn unexplained_error(
    status: StatusCode,
    retry_after: Option<std::time::Duration>,
    expected: &str,
) -> GatewayError {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        ErrorKind::UpstreamRateLimited
    } else {
        ErrorKind::UpstreamProtocol
    };
    let mut err = GatewayError::new(
        kind,
        format!(
            "upstream answered HTTP {} without {expected} error body",
            status.as_u16()
        ),
    );
    err.retry_after = retry_after;
    err.retryable = retryable_status(status);
    err
}

/// An upstream's error answer in OpenAI's format, passed to the client with `status` and
/// `headers`, marked as the upstream's.
pub(super) fn error_response(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
    mut stats: ExchangeStats,
) -> Response<GatewayBody> {
    // A 429 is the upstream rate-limiting Tollgate, whatever its body says: counted apart
    // from other upstream errors, and apart from Tollgate's own `rate_limit_exceeded`.
    stats.error = Some(if status == StatusCode::TOO_MANY_REQUESTS {
        ErrorKind::UpstreamRateLimited
    } else {
        ErrorKind::UpstreamStatus
    });
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        crate::error::ERROR_SOURCE_HEADER,
        HeaderValue::from_static(crate::error::Fault::Upstream.as_str()),
    );
    let mut response = Response::new(GatewayBody::full(body, stats));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Statuses worth another attempt: overload and server-side failures, never client errors.
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
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

/// The trace context headers of one upstream attempt.
pub struct TraceHeaders {
    /// `traceparent: ...\r\n`, when there is a trace to continue.
    traceparent: Option<[u8; 13 + 55 + 2]>,
    /// `tracestate: ...\r\n`, forwarded unchanged with the traceparent.
    tracestate: Option<Vec<u8>>,
}

impl TraceHeaders {
    pub fn of(exchange: &Exchange) -> Self {
        let Some(parent) = exchange.upstream_traceparent() else {
            return Self {
                traceparent: None,
                tracestate: None,
            };
        };
        let mut line = [0u8; 70];
        line[..13].copy_from_slice(b"traceparent: ");
        line[13..68].copy_from_slice(&parent);
        line[68..].copy_from_slice(b"\r\n");
        let tracestate = exchange.trace.tracestate.as_ref().map(|state| {
            let mut line = Vec::with_capacity(state.len() + 14);
            line.extend_from_slice(b"tracestate: ");
            line.extend_from_slice(state.as_bytes());
            line.extend_from_slice(b"\r\n");
            line
        });
        Self {
            traceparent: Some(line),
            tracestate,
        }
    }

    /// Header lines for the lean HTTP/1.1 client (empty when absent).
    pub fn lines(&self) -> [&[u8]; 2] {
        [
            self.traceparent.as_ref().map_or(&[][..], |line| &line[..]),
            self.tracestate.as_deref().unwrap_or_default(),
        ]
    }

    /// The same headers, for hyper's client.
    fn insert_into(&self, headers: &mut HeaderMap) {
        let value = |line: &[u8], name_len: usize| {
            HeaderValue::from_bytes(&line[name_len..line.len() - 2]).ok()
        };
        if let Some(v) = self.traceparent.as_ref().and_then(|l| value(l, 13)) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
        if let Some(v) = self.tracestate.as_ref().and_then(|l| value(l, 12)) {
            headers.insert(HeaderName::from_static("tracestate"), v);
        }
    }
}
