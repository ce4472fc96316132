//! Rescue layer: every error from the layers below becomes one response, via
//! `into_response_in`, in the dialect of the surface the request came to.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use tower::{Layer, Service};

use super::{Dialect, GatewayError, into_response_in};
use crate::api::ApiRequest;
use crate::body::GatewayBody;

#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

/// The URL path of a request, which picks the dialect of its errors.
pub trait RequestPath {
    fn path(&self) -> &str;
}

impl RequestPath for ApiRequest {
    fn path(&self) -> &str {
        self.http.uri().path()
    }
}

impl<B> RequestPath for http::Request<B> {
    fn path(&self) -> &str {
        self.uri().path()
    }
}

impl<S, R: RequestPath> Service<R> for Rescue<S>
where
    S: Service<R, Response = Response<GatewayBody>, Error = GatewayError>,
{
    type Response = Response<GatewayBody>;
    type Error = std::convert::Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Layers below are always ready; an error here would have no request to answer.
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) | Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        // Vertex-native callers read Google's error format; everyone else OpenAI's.
        let dialect = if crate::api::native::is_native_path(req.path()) {
            Dialect::Google
        } else {
            Dialect::OpenAi
        };
        RescueFuture {
            inner: self.inner.call(req),
            dialect,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RescueFuture<F> {
        #[pin]
        inner: F,
        dialect: Dialect,
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<GatewayBody>, GatewayError>>,
{
    type Output = Result<Response<GatewayBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(err) => into_response_in(&err, *this.dialect),
        }))
    }
}
