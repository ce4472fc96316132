//! The per-request record that the layers fill in and the response body reports at its end.
//!
//! It is the one allocation every request makes on purpose: the access log and metrics must be
//! written when the response body ends, after the handler has returned, so what the layers
//! learned (snapshot, tenant, route) has to outlive them.

use std::sync::{Arc, OnceLock};

use http::Method;
use tokio::time::Instant;

use crate::auth::Tenant;
use crate::snapshot::{Route, Snapshot};

/// A request id: random, printed as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub u64);

impl RequestId {
    pub fn random() -> Self {
        Self(fastrand::u64(..))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One request, as the gateway saw it.
#[derive(Debug)]
pub struct Exchange {
    pub id: RequestId,
    pub arrived: Instant,
    pub method: Method,
    /// The request path, copied: a clone of the request URI would share hyper's read buffer
    /// and keep all of it alive for as long as a stream runs.
    pub path: Box<str>,
    pub snapshot: OnceLock<Arc<Snapshot>>,
    pub tenant: OnceLock<Arc<Tenant>>,
    pub route: OnceLock<Arc<Route>>,
}

impl Exchange {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            id: RequestId::random(),
            arrived: Instant::now(),
            method,
            path: path.into(),
            snapshot: OnceLock::new(),
            tenant: OnceLock::new(),
            route: OnceLock::new(),
        }
    }

    /// The snapshot this request uses. Set by the snapshot layer before any handler runs.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.snapshot.get()
    }
}
