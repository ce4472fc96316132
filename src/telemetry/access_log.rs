//! One structured access-log line and the request metrics, written when a response ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use crate::server::InboundBody;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::api::ApiRequest;
use crate::body::GatewayBody;
use crate::error::ErrorKind;
use crate::exchange::Exchange;
use crate::telemetry::metrics::Metrics;
use crate::upstream::stats::ExchangeStats;

/// The tracing target of access-log lines, so they can be filtered or routed on their own.
pub const TARGET: &str = "tollgate::access";

/// Records metrics and writes the access-log line for one finished (or abandoned) request.
/// `completed` is false when the client went away before the body ended.
pub fn record(
    exchange: &Exchange,
    metrics: &Metrics,
    status: u16,
    stats: &ExchangeStats,
    completed: bool,
) {
    let duration = exchange.arrived.elapsed();
    let route = exchange.route.get();
    let version = exchange.version();
    let route_metrics = version
        .map(|v| &v.metrics)
        .unwrap_or_else(|| metrics.unrouted());
    route_metrics.record_status(status);
    route_metrics.duration.observe(duration);
    if let Some(ttft) = stats.ttft {
        route_metrics.ttft.observe(ttft);
    }
    if let Some(usage) = stats.usage {
        route_metrics.record_tokens(usage.prompt_tokens, usage.completion_tokens);
    }
    if let Some(kind) = stats.error {
        metrics.record_error(kind);
    }

    tracing::info!(
        target: TARGET,
        request_id = std::str::from_utf8(&exchange.id.hex()).unwrap_or_default(),
        method = exchange.method.as_str(),
        path = &*exchange.path,
        status,
        tenant = exchange.tenant.get().map(|t| &*t.name),
        route = route.map(|r| &*r.alias),
        route_version = version.map(|v| &*v.name),
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
        "request"
    );
}

/// Access-log layer: the outermost API layer. Opens the per-request record, stamps the
/// request id on the response, and hands the record to the body, which reports at its end.
#[derive(Clone)]
pub struct AccessLogLayer {
    metrics: Arc<Metrics>,
}

impl AccessLogLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
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
        let exchange = Arc::new(Exchange::new(http.method().clone(), http.uri().path()));
        AccessLogFuture {
            inner: self.inner.call(ApiRequest {
                exchange: exchange.clone(),
                http,
            }),
            report: Some((exchange, self.metrics.clone())),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        report: Option<(Arc<Exchange>, Arc<Metrics>)>,
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
        if let Some((exchange, metrics)) = this.report.take() {
            if let Ok(id) = HeaderValue::from_bytes(&exchange.id.hex()) {
                response.headers_mut().insert(REQUEST_ID_HEADER, id);
            }
            if let Some(route) = exchange.route.get() {
                response
                    .headers_mut()
                    .insert(ROUTE_HEADER, route.alias_header.clone());
            }
            if let Some(version) = exchange.version() {
                response
                    .headers_mut()
                    .insert(ROUTE_VERSION_HEADER, version.name_header.clone());
            }
            let status = response.status().as_u16();
            response.body_mut().report_to(exchange, metrics, status);
        }
        Poll::Ready(Ok(response))
    }
}

/// Response header carrying the request id that the access log line also carries.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-tollgate-request-id");
/// Response header naming the model alias that served the request.
pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-tollgate-route");
/// Response header naming the route version that served the request.
pub const ROUTE_VERSION_HEADER: HeaderName = HeaderName::from_static("x-tollgate-route-version");
