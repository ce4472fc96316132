//! Per-request handling: routing, request parsing, and fault application.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::{AbortState, Ending, EventPlan, MockBody, SseBody, SsePlan};
use crate::config::{Effective, MockConfig};
use crate::fault::Fault;
use crate::google_auth::{AuthState, METADATA_TOKEN_PATH};
use crate::google_error::{GoogleError, GrpcStatus};
use crate::responses::{self, Generated, Surface, Usage};
use crate::sse::SseRender;
use crate::stats::{MockStats, RecordedRequest, StreamGuard};

/// Request bodies above this are refused, so a runaway client cannot exhaust memory.
const MAX_BODY: usize = 32 * 1024 * 1024;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// State shared by all connections of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) stats: Arc<MockStats>,
    pub(crate) auth: Arc<AuthState>,
    next_id: AtomicU64,
}

impl Shared {
    /// `addr` is where the server listens: the token endpoint's default audience names it.
    pub(crate) fn new(
        config: MockConfig,
        stats: Arc<MockStats>,
        addr: SocketAddr,
    ) -> io::Result<Self> {
        let auth = Arc::new(AuthState::new(&config.vertex.token, addr)?);
        Ok(Self {
            config,
            stats,
            auth,
            next_id: AtomicU64::new(1),
        })
    }

    /// A number no other response of this server has had.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Which wire format error bodies take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    /// Google's `{"error":{code,message,status}}`; `array` wraps it as `[...]` (the JSON-array
    /// stream endpoint).
    Google {
        array: bool,
    },
}

impl Dialect {
    fn json_type(self) -> HeaderValue {
        match self {
            Dialect::OpenAi => JSON,
            Dialect::Google { .. } => HeaderValue::from_static("application/json; charset=UTF-8"),
        }
    }

    fn error(self, code: u16, message: &str) -> Response<MockBody> {
        match self {
            Dialect::OpenAi => error_response(code, message),
            Dialect::Google { array } => {
                GoogleError::new(GrpcStatus::for_http(code), message).response(array)
            }
        }
    }
}

#[derive(Deserialize)]
struct GenerationRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: &'a RawValue,
}

/// A successful answer before faults are applied.
pub(crate) enum Prepared<P = SsePlan> {
    /// A 200 JSON body, sent after `delay` (the simulated generation time).
    Json {
        body: Bytes,
        delay: Duration,
    },
    Stream(P),
}

/// The hyper service function. `Err` makes hyper drop the connection without a response.
pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<MockBody>, io::Error> {
    let (parts, incoming) = req.into_parts();
    let body = match Limited::new(incoming, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Ok(error_response(413, "request body too large"));
        }
        // The client failed mid-body; nobody is left to answer.
        Err(_) => return Ok(error_response(400, "could not read request body")),
    };
    shared.stats.record(RecordedRequest {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: parts.headers.clone(),
        body: body.clone(),
        version: parts.version,
    });

    if let Some(project) = crate::vertex::openai_route(parts.uri.path()) {
        // Vertex's OpenAI-compatible endpoints: Google's auth, then the OpenAI chat surface.
        if let Err(error) = shared.auth.check(
            &shared.config.vertex.auth,
            &parts.headers,
            Some(project),
            parts.uri.path(),
        ) {
            return Ok(error.response(false));
        }
        return openai_surface(Some(Surface::Chat), &parts, &body, &shared).await;
    }
    if let Some(route) = crate::vertex::route(parts.uri.path()) {
        return crate::vertex::handle(route, &parts, &body, &shared).await;
    }
    if parts.uri.path() == shared.auth.token_path() {
        if parts.method != Method::POST {
            return Ok(error_response(405, "the token endpoint takes POST"));
        }
        return Ok(shared.auth.token(&body, &shared.stats).await);
    }
    if parts.uri.path() == METADATA_TOKEN_PATH {
        if parts.method != Method::GET {
            return Ok(error_response(405, "the metadata token takes GET"));
        }
        return Ok(shared.auth.metadata(&parts.headers, &shared.stats).await);
    }
    let surface = match (parts.uri.path(), &parts.method) {
        ("/v1/chat/completions", &Method::POST) => Some(Surface::Chat),
        ("/v1/completions", &Method::POST) => Some(Surface::Completion),
        ("/v1/embeddings", &Method::POST) | ("/v1/models", &Method::GET) => None,
        ("/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/models", _) => {
            return Ok(error_response(405, "method not allowed"));
        }
        (path, _) => return Ok(error_response(404, &format!("no route for {path}"))),
    };
    openai_surface(surface, &parts, &body, &shared).await
}

/// The OpenAI surfaces: a generation (`surface`), or the models list and embeddings.
async fn openai_surface(
    surface: Option<Surface>,
    parts: &http::request::Parts,
    body: &Bytes,
    shared: &Arc<Shared>,
) -> Result<Response<MockBody>, io::Error> {
    let eff = match Effective::resolve(&shared.config, &parts.headers) {
        Ok(eff) => eff,
        Err(message) => return Ok(error_response(400, &message)),
    };
    let prepared = match surface {
        Some(surface) => generation(surface, body, &eff, shared),
        None if parts.method == Method::GET => Ok(Prepared::Json {
            body: Bytes::from_static(responses::MODELS_JSON.as_bytes()),
            delay: Duration::ZERO,
        }),
        None => embeddings(body),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(message) => return Ok(error_response(400, &message)),
    };
    respond(prepared, &eff, shared, Dialect::OpenAi).await
}

fn generation(
    surface: Surface,
    body: &[u8],
    eff: &Effective,
    shared: &Shared,
) -> Result<Prepared, String> {
    let req: GenerationRequest<'_> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let model = req.model.as_deref().unwrap_or("mock-model");
    let cap = req
        .max_completion_tokens
        .or(req.max_tokens)
        .map(|c| usize::try_from(c).unwrap_or(usize::MAX));
    let (completion, finish_reason) = match cap {
        Some(cap) if cap < eff.tokens => (cap, "length"),
        _ => (eff.tokens, "stop"),
    };
    let prompt = responses::prompt_tokens(body.len());
    let id = surface.id(shared.next_id());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if req.stream.unwrap_or(false) {
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        return Ok(Prepared::Stream(SsePlan {
            render: SseRender::new(surface, &id, created, model, eff.line_ending, eff.keepalive),
            completion_tokens: completion,
            finish_reason,
            prompt_tokens: prompt,
            include_usage,
            ttft: eff.ttft,
            inter_token: eff.inter_token,
            malformed_first: false,
        }));
    }
    let text = responses::generated_text(completion);
    let body = responses::completion_json(&Generated {
        surface,
        id: &id,
        created,
        model,
        text: &text,
        finish_reason,
        usage: Usage::new(prompt, completion as u64),
    });
    // A real server answers a non-streaming request only after generating every token.
    let steps = u32::try_from(completion.saturating_sub(1)).unwrap_or(u32::MAX);
    let delay = eff.ttft + eff.inter_token.saturating_mul(steps);
    Ok(Prepared::Json { body, delay })
}

fn is_number(value: &RawValue) -> bool {
    value
        .get()
        .starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

fn embeddings(body: &[u8]) -> Result<Prepared, String> {
    let req: EmbeddingRequest<'_> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    // An array of strings (or of token arrays) is a batch; a string or a single
    // token array is one input.
    let batch: Vec<&RawValue> = match serde_json::from_str::<Vec<&RawValue>>(req.input.get()) {
        Ok(items) if items.is_empty() => return Err("input must not be empty".into()),
        Ok(items) if !items.iter().any(|i| is_number(i)) => items,
        _ => vec![req.input],
    };
    let model = req.model.as_deref().unwrap_or("mock-model");
    let prompt = responses::prompt_tokens(body.len());
    Ok(Prepared::Json {
        body: responses::embeddings_json(model, &batch, prompt),
        delay: Duration::ZERO,
    })
}

/// Applies the fault (if any), waits out the pre-header delays, and builds the response;
/// `dialect` shapes the error bodies faults produce.
pub(crate) async fn respond<P: EventPlan + 'static>(
    prepared: Prepared<P>,
    eff: &Effective,
    shared: &Shared,
    dialect: Dialect,
) -> Result<Response<MockBody>, io::Error> {
    let mut pre_headers = shared.config.latency.sample();
    let response = match (&eff.fault, prepared) {
        (Some(Fault::ResetBeforeHeaders), _) => return Err(crate::body::injected_reset()),
        (
            Some(Fault::Status {
                code,
                retry_after,
                body,
            }),
            _,
        ) => status_response(*code, *retry_after, body.as_deref(), dialect),
        (Some(Fault::WrongContentType), _) => with_type(
            StatusCode::OK,
            MockBody::full(Bytes::from_static(b"tollgate-mock: this is not JSON\n")),
            HeaderValue::from_static("text/plain"),
        ),
        (fault, Prepared::Json { body, delay }) => {
            pre_headers += delay;
            json_with_fault(fault.as_ref(), body, dialect)
        }
        (fault, Prepared::Stream(mut plan)) => {
            // Created before any wait so a client leaving during the wait counts as a cancel.
            let guard = StreamGuard::new(shared.stats.clone());
            let total = plan.total_events();
            let content = plan.content_events();
            let (limit, ending) = match fault {
                Some(Fault::ResetAfter(n)) => (*n, Ending::Reset),
                Some(Fault::StallAfter(n)) => (*n, Ending::Stall),
                // Capped at the content chunks so usage and [DONE] never precede the cut.
                Some(Fault::TruncateAfter(n)) => ((*n).min(content), Ending::Clean),
                Some(Fault::ErrorAfter(n)) => ((*n).min(content), Ending::Error),
                Some(Fault::Malformed) => {
                    plan.malform_first();
                    (total, Ending::Clean)
                }
                _ => (total, Ending::Clean),
            };
            let content_type = plan.content_type();
            let body = MockBody::Sse(Box::new(SseBody::new(plan, limit, ending, guard)));
            let mut response = with_type(StatusCode::OK, body, content_type);
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    if let Some(Fault::SlowHeaders(extra)) = eff.fault {
        pre_headers += extra;
    }
    if !pre_headers.is_zero() {
        tokio::time::sleep(pre_headers).await;
    }
    Ok(response)
}

/// A 200 JSON answer, altered by a fault that applies to whole bodies.
fn json_with_fault(fault: Option<&Fault>, body: Bytes, dialect: Dialect) -> Response<MockBody> {
    // Only faulted paths slice: slicing a fresh `Bytes` costs an allocation.
    let half = |body: &Bytes| body.slice(..body.len() / 2);
    let declared = body.len() as u64;
    let body = match fault {
        Some(Fault::ResetAfter(_)) => MockBody::Abort {
            sent: Some(half(&body)),
            declared,
            failed: AbortState::Flush,
        },
        Some(Fault::StallAfter(_)) => MockBody::Stall { declared },
        Some(Fault::TruncateAfter(_)) => MockBody::full(half(&body)),
        Some(Fault::Malformed) => {
            MockBody::full(Bytes::from_static(responses::MALFORMED_JSON.as_bytes()))
        }
        // There is no "mid-stream" without a stream: fail the whole request the same way.
        Some(Fault::ErrorAfter(_)) if dialect == Dialect::OpenAi => {
            let error =
                responses::error_json("mock mid-stream failure", "server_error", "mock_error");
            return with_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                MockBody::full(error),
                JSON,
            );
        }
        Some(Fault::ErrorAfter(_)) => return dialect.error(500, "mock mid-stream failure"),
        _ => MockBody::full(body),
    };
    with_type(StatusCode::OK, body, dialect.json_type())
}

fn with_type(status: StatusCode, body: MockBody, content_type: HeaderValue) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn status_response(
    code: u16,
    retry_after: Option<u64>,
    raw: Option<&str>,
    dialect: Dialect,
) -> Response<MockBody> {
    let mut response = match raw {
        Some(raw) => {
            // A raw body that does not look like JSON is labelled as text, like a proxy's error page.
            let content_type = if raw.trim_start().starts_with('{') {
                JSON
            } else {
                HeaderValue::from_static("text/plain")
            };
            let body = MockBody::full(Bytes::copy_from_slice(raw.as_bytes()));
            with_type(status_code(code), body, content_type)
        }
        None => dialect.error(code, &format!("mock fault: status {code}")),
    };
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// An OpenAI error response whose type/code follow the status.
fn error_response(code: u16, message: &str) -> Response<MockBody> {
    let (kind, error_code) = responses::error_kind(code);
    let body = MockBody::full(responses::error_json(message, kind, error_code));
    with_type(status_code(code), body, JSON)
}
