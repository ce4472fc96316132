//! Snapshot layer: loads the live snapshot once per request; the request uses it to the end.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::Live;
use crate::api::ApiRequest;

#[derive(Clone)]
pub struct SnapshotLayer {
    live: Live,
}

impl SnapshotLayer {
    pub fn new(live: Live) -> Self {
        Self { live }
    }
}

impl<S> Layer<S> for SnapshotLayer {
    type Service = LoadSnapshot<S>;
    fn layer(&self, inner: S) -> LoadSnapshot<S> {
        LoadSnapshot {
            inner,
            live: self.live.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LoadSnapshot<S> {
    inner: S,
    live: Live,
}

impl<S: Service<ApiRequest>> Service<ApiRequest> for LoadSnapshot<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ApiRequest) -> S::Future {
        // `load_full` is one atomic increment; the exchange keeps the Arc so the access log
        // can name the config version even after the handler is gone.
        let _ = req.exchange.snapshot.set(self.live.load_full());
        self.inner.call(req)
    }
}
