//! The per-request record that the layers fill in and the response body reports at its end.
//!
//! It is the one allocation every request makes on purpose: the access log and metrics must be
//! written when the response body ends, after the handler has returned, so what the layers
//! learned (snapshot, tenant, route) has to outlive them.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use http::Method;
use tokio::time::Instant;

use crate::auth::Tenant;
use crate::snapshot::{Route, Snapshot, Version};

/// A request id: random, printed as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub u64);

impl RequestId {
    pub fn random() -> Self {
        Self(fastrand::u64(..))
    }

    /// The id as 16 lowercase hex digits, without the formatting machinery (it is written
    /// twice per request: response header and access line).
    pub fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        std::array::from_fn(|i| DIGITS[((self.0 >> (60 - 4 * i)) & 0xf) as usize])
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
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
    /// Index of the route version serving the request, in `route.versions` (`usize::MAX`
    /// until chosen). It changes when a fallback takes over.
    version: AtomicUsize,
    /// Upstream attempts made (more than one after retries or fallbacks).
    attempts: AtomicUsize,
    /// A mirrored copy of a request, sent to a shadow version; its answer is dropped.
    pub shadow: bool,
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
            version: AtomicUsize::new(usize::MAX),
            attempts: AtomicUsize::new(0),
            shadow: false,
        }
    }

    /// The record of `primary`'s mirror to version `index` of its route: same request id and
    /// caller, its own version, timing and outcome.
    pub fn shadow_of(primary: &Exchange, route: Arc<Route>, index: usize) -> Self {
        let shadow = Self {
            id: primary.id,
            arrived: Instant::now(),
            method: primary.method.clone(),
            path: primary.path.clone(),
            snapshot: primary.snapshot.clone(),
            tenant: primary.tenant.clone(),
            route: OnceLock::from(route),
            version: AtomicUsize::new(usize::MAX),
            attempts: AtomicUsize::new(0),
            shadow: true,
        };
        shadow.start_attempt(index);
        shadow
    }

    /// The snapshot this request uses. Set by the snapshot layer before any handler runs.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.snapshot.get()
    }

    /// The route version serving the request, once the route is chosen.
    pub fn version(&self) -> Option<&Version> {
        let route = self.route.get()?;
        route.versions.get(self.version.load(Relaxed))
    }

    /// Records that an attempt goes to version `index` of the route.
    pub fn start_attempt(&self, index: usize) {
        self.version.store(index, Relaxed);
        self.attempts.fetch_add(1, Relaxed);
    }

    /// Upstream attempts made so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_print_as_sixteen_hex_digits() {
        for id in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            let hex = RequestId(id).hex();
            assert_eq!(std::str::from_utf8(&hex).unwrap(), format!("{id:016x}"));
            assert_eq!(RequestId(id).to_string(), format!("{id:016x}"));
        }
    }
}
