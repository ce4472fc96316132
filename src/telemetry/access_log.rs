//! One structured access-log line and the request metrics, written when a response ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::server::InboundBody;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::api::ApiRequest;
use crate::body::GatewayBody;
use crate::error::ErrorKind;
use crate::exchange::Exchange;
use crate::snapshot::Version;
use crate::telemetry::metrics::{InFlightRequest, Metrics, Operation};
use crate::telemetry::trace::context::trace_id_hex;
use crate::telemetry::trace::{AnswerFacts, Finished, TraceContext, Tracer};
use crate::upstream::stats::ExchangeStats;
use crate::upstream::stats::ShortText;

/// The tracing target of access-log lines, so they can be filtered or routed on their own.
pub const TARGET: &str = "tollgate::access";

/// Records metrics and writes the access-log line for one finished (or abandoned) request.
/// `completed` is false when the client went away before the body ended. The request's
/// spans go separately ([`submit_spans`]), once the response is out.
pub fn record(
    exchange: &Exchange,
    metrics: &Metrics,
    status: u16,
    stats: &ExchangeStats,
    completed: bool,
) {
    let duration = exchange.arrived.elapsed();
    exchange.settle_admissions(
        crate::ratelimit::admit::Outcome {
            usage: stats.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            streamed: stats.stream,
            events: u64::from(stats.events),
            failed_before_answer: stats.error.is_some() && stats.events == 0,
        },
        crate::ratelimit::clock::now_ns(),
    );
    record_metrics(exchange, metrics, status, stats, duration);
    let route = exchange.route.get();
    let version = exchange.version();
    let tenant = exchange.tenant.get();

    tracing::info!(
        target: TARGET,
        request_id = std::str::from_utf8(&exchange.id.hex()).unwrap_or_default(),
        method = exchange.method.as_str(),
        path = &*exchange.path,
        status,
        tenant = tenant.map(|t| &*t.name),
        route = route.map(|r| &*r.alias),
        route_version = version.map(|v| &*v.name),
        prompt = exchange.prompt.get().map(|p| p.reference_str()),
        prompt_hash = exchange.prompt.get().map(|p| &*p.hash),
        attempts = exchange.attempts(),
        shadow = exchange.shadow.then_some(true),
        config_version = exchange.snapshot().map(|s| &*s.version),
        stream = stats.stream,
        upstream_status = stats.upstream_status,
        duration_ms = duration.as_secs_f64() * 1e3,
        ttft_ms = stats.ttft.map(|t| t.as_secs_f64() * 1e3),
        events = stats.events,
        input_tokens = stats.usage.map(|u| u.prompt_tokens),
        output_tokens = stats.usage.map(|u| u.completion_tokens),
        finish_reason = stats.finish_reason.as_ref().map(|f| f.as_str()),
        error = stats.error.map(ErrorKind::code),
        client_disconnected = !completed,
        trace_id = exchange
            .is_recording()
            .then_some(&trace_id_hex(exchange.trace.trace_id))
            .and_then(|hex| std::str::from_utf8(hex).ok()),
        "request"
    );
}

/// Encodes a sampled request's spans into the export queue: called once its response is
/// out (the response body is dropped), so the client never waits for it. Does nothing for
/// requests whose spans are not recorded.
pub fn submit_spans(exchange: &Exchange, status: u16, stats: &ExchangeStats, completed: bool) {
    let Some((spans, tracer)) = exchange.take_spans() else {
        return;
    };
    tracer.submit(&Finished {
        exchange,
        spans: &spans,
        answer: AnswerFacts {
            status,
            upstream_status: stats.upstream_status,
            error: stats.error,
            stream: stats.stream,
            ttft: stats.ttft,
            usage: stats.usage,
            finish_reason: stats.finish_reason.as_ref(),
            response_id: stats.response_id.as_ref().map(ShortText::as_str),
            response_model: stats.response_model.as_ref().map(ShortText::as_str),
            output: stats.output.as_deref(),
            completed,
        },
        end: exchange.since_arrival(),
    });
}

/// The metrics of one finished request: its request counter, the GenAI histograms of its
/// route version, its error. Relaxed atomic adds on handles the snapshot resolved: no lock,
/// no allocation, no lookup by name.
pub fn record_metrics(
    exchange: &Exchange,
    metrics: &Metrics,
    status: u16,
    stats: &ExchangeStats,
    duration: Duration,
) {
    let version = exchange.version();
    let tenant = exchange.tenant.get();
    let counters = match (version, tenant) {
        (Some(version), Some(tenant)) => version.requests.get(tenant.slot),
        (None, Some(tenant)) => exchange
            .snapshot()
            .and_then(|snapshot| snapshot.unrouted.get(tenant.slot)),
        _ => None,
    };
    counters
        .unwrap_or_else(|| metrics.unauthenticated())
        .record(status, stats.error);
    if let Some(version) = version {
        record_genai(exchange, version, duration, stats);
        if let Some(reason) = &stats.finish_reason {
            version.metrics.record_finish(reason);
        }
    }
    if let Some(kind) = stats.error {
        metrics.record_error(kind);
    }
    if let Some(prompt) = exchange.prompt.get()
        && !exchange.shadow
    {
        let tokens = stats.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
        prompt.metrics.record(status, stats.error, tokens);
    }
}

/// The GenAI histograms of a request that reached a route version.
fn record_genai(exchange: &Exchange, version: &Version, duration: Duration, stats: &ExchangeStats) {
    let op = exchange.operation.get().copied().unwrap_or(Operation::Chat);
    let series = version.genai.operation(op);
    series.duration(stats.error).observe_duration(duration);
    if exchange.attempts() > 0 {
        series
            .attempt_duration(stats.error)
            .observe_duration(exchange.attempt_elapsed());
    }
    if let Some(ttft) = stats.ttft {
        series.ttft.observe_duration(ttft);
    }
    if let Some(usage) = stats.usage {
        series.input_tokens.observe(usage.prompt_tokens);
        if op != Operation::Embeddings {
            series.output_tokens.observe(usage.completion_tokens);
        }
        // Time per output token after the first, for answers that streamed to the end.
        if let (true, None, Some(ttft)) = (stats.stream, stats.error, stats.ttft)
            && usage.completion_tokens > 1
        {
            let per_token = duration.saturating_sub(ttft)
                / (usage.completion_tokens - 1).min(u64::from(u32::MAX)) as u32;
            series.time_per_output_token.observe_duration(per_token);
        }
    }
}

/// Access-log layer: the outermost API layer. Opens the per-request record (with its trace
/// context), counts the request in flight, stamps the request id on the response, records
/// the gateway's overhead, and hands the record to the body, which reports at its end.
#[derive(Clone)]
pub struct AccessLogLayer {
    metrics: Arc<Metrics>,
    tracer: Option<Arc<Tracer>>,
}

impl AccessLogLayer {
    pub fn new(metrics: Arc<Metrics>, tracer: Option<Arc<Tracer>>) -> Self {
        Self { metrics, tracer }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
            tracer: self.tracer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
    tracer: Option<Arc<Tracer>>,
}

impl<S> Service<Request<InboundBody>> for AccessLog<S>
where
    S: Service<ApiRequest, Response = Response<GatewayBody>, Error = Infallible>,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, http: Request<InboundBody>) -> Self::Future {
        let in_flight = self.metrics.request_started();
        let trace = match &self.tracer {
            Some(tracer) => tracer.context(http.headers()),
            None => TraceContext::passthrough(http.headers()),
        };
        let exchange = Arc::new(Exchange::traced(
            http.method().clone(),
            http.uri().path(),
            trace,
            self.tracer.as_ref(),
        ));
        AccessLogFuture {
            inner: self.inner.call(ApiRequest {
                exchange: exchange.clone(),
                http,
            }),
            report: Some(Report {
                exchange,
                metrics: self.metrics.clone(),
                in_flight: Some(in_flight),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        report: Option<Report>,
    }
}

impl<F> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<GatewayBody>, Infallible>>,
{
    type Output = Result<Response<GatewayBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if let Some(report) = this.report.take() {
            let exchange = &report.exchange;
            if let Ok(id) = HeaderValue::from_bytes(&exchange.id.hex()) {
                response.headers_mut().insert(REQUEST_ID_HEADER, id);
            }
            if let Some(route) = exchange.route.get() {
                response
                    .headers_mut()
                    .insert(ROUTE_HEADER, route.alias_header.clone());
            }
            let version = exchange.version();
            if let Some(version) = version {
                response
                    .headers_mut()
                    .insert(ROUTE_VERSION_HEADER, version.name_header.clone());
            }
            if let Some(prompt) = exchange.prompt.get() {
                let headers = response.headers_mut();
                headers.insert(PROMPT_VERSION_HEADER, prompt.reference.clone());
                headers.insert(PROMPT_HASH_HEADER, prompt.hash_header.clone());
            }
            if let Some(admission) = exchange.admission.get() {
                admission.report.write(response.headers_mut());
            }
            // The response head is ready: what the gateway spent so far is its overhead.
            version
                .map_or_else(|| report.metrics.unrouted(), |v| &v.metrics)
                .overhead
                .observe_duration(exchange.overhead());
            let status = response.status().as_u16();
            response.body_mut().report_to(report, status);
        }
        Poll::Ready(Ok(response))
    }
}

/// What a response body reports to when it ends.
pub struct Report {
    pub exchange: Arc<Exchange>,
    pub metrics: Arc<Metrics>,
    /// Counts the request in flight until the report is dropped; `None` for shadow copies,
    /// which are not requests of their own.
    pub in_flight: Option<InFlightRequest>,
}

/// Response header carrying the request id that the access log line also carries.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-tollgate-request-id");
/// Response header naming the model alias that served the request.
pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-tollgate-route");
/// Response header naming the route version that served the request.
pub const ROUTE_VERSION_HEADER: HeaderName = HeaderName::from_static("x-tollgate-route-version");
/// Response header naming the prompt version the request rendered: `id@version`.
pub const PROMPT_VERSION_HEADER: HeaderName = HeaderName::from_static("x-tollgate-prompt-version");
/// Response header with that prompt version's content hash.
pub const PROMPT_HASH_HEADER: HeaderName = HeaderName::from_static("x-tollgate-prompt-hash");
