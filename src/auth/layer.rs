//! Auth layer: resolves the caller's tenant before any request body is read.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::authenticate;
use crate::api::ApiRequest;
use crate::error::{ErrorKind, GatewayError};
use crate::telemetry::trace::StepKind;

#[derive(Clone, Copy, Debug, Default)]
pub struct AuthLayer;

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
}

impl<S, T> Service<ApiRequest> for Authenticate<S>
where
    S: Service<ApiRequest, Response = T, Error = GatewayError>,
{
    type Response = T;
    type Error = GatewayError;
    type Future = Either<Ready<Result<T, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ApiRequest) -> Self::Future {
        let Some(snapshot) = req.exchange.snapshot() else {
            let err = GatewayError::new(ErrorKind::Internal, "no config snapshot loaded");
            return Either::Left(ready(Err(err)));
        };
        let started = req.exchange.since_arrival();
        let tenant = match &snapshot.keys {
            None => snapshot.anonymous.clone(),
            Some(keys) => match authenticate(keys, req.http.headers()) {
                Ok((tenant, key_limits)) => {
                    if let Some(limits) = key_limits {
                        let _ = req.exchange.key_limits.set(limits.clone());
                    }
                    tenant.clone()
                }
                Err(err) => {
                    req.exchange.step(StepKind::Auth, started, false);
                    return Either::Left(ready(Err(err)));
                }
            },
        };
        let _ = req.exchange.tenant.set(tenant);
        req.exchange.step(StepKind::Auth, started, true);
        Either::Right(self.inner.call(req))
    }
}
