//! The client-facing surfaces (OpenAI's, and the Vertex-native one in `native`): decode the
//! request, pick the route, hand it to a provider.

mod attempts;
pub mod choose;
pub mod decode;
pub mod gemini;
mod limited;
pub mod native;
mod prompted;
mod request_body;
mod shadow;
pub mod unsupported;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::server::InboundBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use crate::body::GatewayBody;
use crate::error::{ErrorKind, GatewayError};
use crate::exchange::Exchange;
use crate::providers::Provider;
use crate::providers::demo::{self, DemoKind, DemoPlan, DemoStream};
use crate::telemetry::trace::StepKind;
use crate::upstream::source::Source;
use crate::upstream::stats::ExchangeStats;
use crate::upstream::tee::{StreamTimeouts, Tee};
use crate::upstream::{self, Outbound, Surface};
use decode::RequestFields;

/// A request on its way through the stack, with the record every layer writes into.
pub struct ApiRequest {
    pub exchange: Arc<Exchange>,
    pub http: Request<InboundBody>,
}

/// The innermost service: the API surfaces themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiService;

type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, GatewayError>> + Send>>;

impl tower::Service<ApiRequest> for ApiService {
    type Response = Response<GatewayBody>;
    type Error = GatewayError;
    // One box per request: the handler's state machine is large and lives across awaits.
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ApiRequest) -> HandlerFuture {
        Box::pin(handle(req))
    }
}

async fn handle(req: ApiRequest) -> Result<Response<GatewayBody>, GatewayError> {
    if let Some(call) = native::parse_path(req.http.uri().path(), req.http.uri().query()) {
        // The alias is copied out: the request moves into the handler.
        let (alias, method) = (call.alias.to_owned(), call.method);
        return native::handle(req, &alias, method).await;
    }
    let surface = match req.http.uri().path() {
        "/v1/models" if req.http.method() == Method::GET => return models(&req.exchange),
        "/v1/prompts" if req.http.method() == Method::GET => return prompts(&req.exchange),
        "/v1/prompts" => return Err(method_not_allowed("GET")),
        "/v1/chat/completions" => Surface::Chat,
        "/v1/completions" => Surface::Completions,
        "/v1/embeddings" => Surface::Embeddings,
        "/v1/models" => return Err(method_not_allowed("GET")),
        path => {
            return Err(GatewayError::new(
                ErrorKind::UnknownPath,
                format!("unknown URL {}", choose::truncate(path, 200)),
            ));
        }
    };
    if req.http.method() != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    generate(req, surface).await
}

fn method_not_allowed(allowed: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::MethodNotAllowed,
        format!("this URL accepts {allowed} only"),
    )
}

fn snapshot_of(exchange: &Exchange) -> Result<&Arc<crate::snapshot::Snapshot>, GatewayError> {
    exchange
        .snapshot()
        .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "no config snapshot loaded"))
}

fn tenant_of(exchange: &Exchange) -> Result<&Arc<crate::auth::Tenant>, GatewayError> {
    exchange.tenant.get().ok_or_else(|| {
        GatewayError::new(
            ErrorKind::Internal,
            "request reached the API unauthenticated",
        )
    })
}

fn models(exchange: &Exchange) -> Result<Response<GatewayBody>, GatewayError> {
    listing(tenant_of(exchange)?.models_body.clone())
}

/// `GET /v1/prompts`: the prompts this tenant may use, with versions and labels.
fn prompts(exchange: &Exchange) -> Result<Response<GatewayBody>, GatewayError> {
    listing(tenant_of(exchange)?.prompts_body.clone())
}

/// A JSON list built when the snapshot compiled.
fn listing(body: Bytes) -> Result<Response<GatewayBody>, GatewayError> {
    let mut response = Response::new(GatewayBody::full(body, ExchangeStats::default()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Largest prompt (raw JSON) recorded on a span for routes that record content; a larger
/// one is left out, so queued spans stay small.
const MAX_TRACED_INPUT: usize = 64 * 1024;

async fn generate(
    req: ApiRequest,
    surface: Surface,
) -> Result<Response<GatewayBody>, GatewayError> {
    let ApiRequest { exchange, http } = req;
    let _ = exchange.operation.set(surface.operation());
    let snapshot = snapshot_of(&exchange)?.clone();
    let (parts, body) = http.into_parts();
    let body = request_body::read(&parts.headers, body, &snapshot.limits).await?;
    serve(&exchange, &parts.headers, &body, surface).await
}

/// Serves a request whose OpenAI body is read: route, version, attempts.
async fn serve(
    exchange: &Arc<Exchange>,
    headers: &http::HeaderMap,
    body: &Bytes,
    surface: Surface,
) -> Result<Response<GatewayBody>, GatewayError> {
    let snapshot = snapshot_of(exchange)?;
    let prompt_header = headers.contains_key(crate::prompt::reference::PROMPT_HEADER);
    let fields = RequestFields::parse_for(body, prompt_header)?;
    let tenant = tenant_of(exchange)?;
    // A prompt request becomes the body it renders to; the rest of the path serves that.
    let rendered;
    let (body, fields) = match prompted::render_request(
        exchange, snapshot, tenant, &fields, body, headers, surface,
    )? {
        None => (body, fields),
        Some(prompted) => {
            rendered = prompted;
            (&rendered, RequestFields::parse(&rendered)?)
        }
    };
    let wanted = choose::Wanted {
        model: &fields.model,
        user: fields.user.as_deref(),
        headers,
    };
    let routing = exchange.since_arrival();
    let choice = choose::route_and_version(snapshot, tenant, &wanted);
    // The decision has a span whether it found a version or refused the request.
    if let Ok(choice) = &choice {
        let _ = exchange.route.set(choice.route.clone());
    }
    exchange.step(
        StepKind::Route,
        routing,
        choice.as_ref().is_ok_and(|c| c.pinned),
    );
    let choice = choice?;
    limited::admit_request(exchange, snapshot, tenant, &choice, &fields, surface)?;
    let route = choice.route.clone();
    if exchange.is_recording() {
        let stream = fields.stream && surface != Surface::Embeddings;
        let version = &route.versions[choice.version];
        exchange.record_request(fields.span_params(stream, &version.defaults));
        // The prompt field of this surface, kept (zero-copy) unless it is larger than what
        // a span should carry.
        if route.trace_content
            && let Some(input) = fields.content(surface.operation())
            && input.get().len() <= MAX_TRACED_INPUT
        {
            exchange.record_input(body.slice_ref(input.get().as_bytes()));
        }
    }
    // Embeddings never stream, whatever the body says.
    let stream = fields.stream && surface != Surface::Embeddings;
    if !route.shadows.is_empty() {
        shadow::mirror(exchange, &route, body, surface, stream, snapshot.limits);
    }
    let request = attempts::Request {
        fields: &fields,
        body,
        surface,
        stream,
        strip_usage: stream && !fields.include_usage,
        limits: &snapshot.limits,
        unsupported_params: route.unsupported_params,
    };
    attempts::run(exchange, &choice, &request).await
}

/// One attempt at `version`: its provider, its upstream model, its timeouts.
async fn attempt(
    exchange: &Exchange,
    version: &crate::snapshot::Version,
    request: &attempts::Request<'_>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let fields = request.fields;
    let rewrite =
        (*fields.model != *version.upstream_model).then_some(&*version.upstream_model_json);
    let out = Outbound {
        surface: request.surface,
        body: fields.upstream_body(request.body, rewrite, request.stream, &version.defaults)?,
        stream: request.stream,
        strip_usage: request.strip_usage,
        arrived: exchange.arrived,
        call: upstream::Call::OpenAi,
    };
    match &version.provider {
        Provider::Openai(provider) => {
            upstream::forward(exchange, provider, version, request.limits, out).await
        }
        Provider::Vertex(provider) => {
            let out = provider
                .call(exchange, version, request.unsupported_params, out)
                .await?;
            upstream::forward(exchange, &provider.upstream, version, request.limits, out).await
        }
        Provider::Demo(provider) => demo_answer(exchange, provider, version, out).await,
    }
}

/// Answers from the built-in demo provider, through the same tee as real upstreams.
async fn demo_answer(
    exchange: &Exchange,
    provider: &demo::DemoProvider,
    version: &crate::snapshot::Version,
    out: Outbound,
) -> Result<Response<GatewayBody>, GatewayError> {
    let mut stats = ExchangeStats::for_exchange(exchange, out.stream);
    let kind = match out.surface {
        Surface::Embeddings => {
            let body = demo::embeddings_body(provider, &out.body)?;
            stats.ttft = Some(out.arrived.elapsed());
            stats.usage = upstream::openai_view::AnswerView::parse(&body)
                .ok()
                .and_then(|v| v.usage);
            return Ok(json_response(body, stats));
        }
        Surface::Chat => DemoKind::Chat,
        Surface::Completions => DemoKind::Completion,
    };
    let plan = DemoPlan::new(provider, kind, &out.body)?;
    if out.stream {
        let timeouts = StreamTimeouts::from_now(&version.timeouts);
        let source = Source::Demo(DemoStream::new(plan, provider));
        let tee = Tee::new(source, out.strip_usage, timeouts, out.arrived);
        let mut response = Response::new(GatewayBody::stream(tee, stats));
        upstream::set_stream_headers(response.headers_mut());
        return Ok(response);
    }
    // A non-streaming answer arrives when the whole text would have been generated: the
    // demo's stand-in for waiting on an upstream.
    let generating = plan.generation_time(provider);
    tokio::time::sleep(generating).await;
    exchange.add_wait(generating);
    let body = plan.response_body();
    let view = upstream::openai_view::AnswerView::parse(&body).ok();
    if let Some(view) = &view {
        stats.capture_from(view);
    }
    stats.usage = view.as_ref().and_then(|v| v.usage);
    stats.finish_reason = view.and_then(|v| v.choices.finish_reason);
    stats.ttft = Some(out.arrived.elapsed());
    Ok(json_response(body, stats))
}

fn json_response(body: Bytes, stats: ExchangeStats) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body, stats));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
