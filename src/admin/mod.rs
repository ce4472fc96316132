//! The admin listener: liveness, readiness, Prometheus metrics, the active config and live
//! reload, apart from client traffic.

mod control;

pub use control::read_token;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::error::{ErrorKind, GatewayError};
use crate::server::Shared;
use crate::upstream::stats::ExchangeStats;

/// Answers `/healthz`, `/readyz`, `/metrics`, `/admin/config` and `POST /admin/reload`.
#[derive(Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn answer(&self, req: &Request<Incoming>) -> Result<Response<GatewayBody>, GatewayError> {
        let path = req.uri().path();
        if !matches!(path, "/healthz" | "/readyz" | "/metrics" | "/admin/config") {
            return Err(GatewayError::new(
                ErrorKind::UnknownPath,
                "admin URLs: /healthz, /readyz, /metrics, /admin/config, POST /admin/reload",
            ));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(GatewayError::new(
                ErrorKind::MethodNotAllowed,
                "admin URLs accept GET only",
            ));
        }
        let (status, content_type, body) = match path {
            "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            "/readyz" if self.shared.ready.load(Ordering::Acquire) => {
                let version = self.shared.live.load().version.clone();
                (
                    StatusCode::OK,
                    "text/plain",
                    Bytes::from(format!("ready config_version={version}\n")),
                )
            }
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from_static(b"not ready\n"),
            ),
            "/admin/config" => (
                StatusCode::OK,
                "application/json",
                control::config_status(&self.shared),
            ),
            _ => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from({
                    let mut text = self.shared.metrics.encode();
                    crate::ratelimit::encode_rejections(
                        &self.shared.live.load().rate_limits,
                        &mut text,
                    );
                    text
                }),
            ),
        };
        Ok(respond(status, content_type, body))
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body, ExchangeStats::default()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

type AdminFuture =
    Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, GatewayError>> + Send>>;

impl tower::Service<Request<Incoming>> for AdminService {
    type Response = Response<GatewayBody>;
    type Error = GatewayError;
    type Future = AdminFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path() == "/admin/reload" {
            let shared = self.shared.clone();
            return Box::pin(async move {
                if req.method() != Method::POST {
                    return Err(GatewayError::new(
                        ErrorKind::MethodNotAllowed,
                        "/admin/reload accepts POST only",
                    ));
                }
                let (status, body) = control::reload(&shared, req.headers()).await;
                Ok(respond(status, "application/json", body))
            });
        }
        let answer = self.answer(&req);
        Box::pin(async move { answer })
    }
}
