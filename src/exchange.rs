//! The per-request record that the layers fill in and the response body reports at its end.
//!
//! It is the one allocation every request makes on purpose: the access log and metrics must be
//! written when the response body ends, after the handler has returned, so what the layers
//! learned (snapshot, tenant, route) has to outlive them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::time::Instant;

use crate::auth::Tenant;
use crate::error::ErrorKind;
use crate::prompt::PromptVersion;
use crate::ratelimit::{Admission, Limit};
use crate::snapshot::{Route, Snapshot, Version};
use crate::telemetry::metrics::Operation;
use crate::telemetry::trace::Tracer;
use crate::telemetry::trace::context::{TraceContext, format_traceparent, new_span_id};
use crate::telemetry::trace::record::{
    AttemptRecord, RequestParams, SpanLog, Step, StepKind, nanos,
};

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
    /// The prompt template version the request rendered, if it named one.
    pub prompt: OnceLock<Arc<PromptVersion>>,
    /// The limits of the key the caller presented, if it has any.
    pub key_limits: OnceLock<Arc<Limit>>,
    /// What the request took from its limits: trued up and given back when it ends; its
    /// report becomes the rate-limit headers (on a refusal too).
    pub admission: OnceLock<Admission>,
    /// What attempts took from the limits of their versions (the chosen version's, then each
    /// fallback's): settled as failed when the next attempt starts, else with the request.
    /// Created by the first such admission, so a request without version limits takes no
    /// lock for it.
    version_admissions: OnceLock<Mutex<Vec<Admission>>>,
    /// `gen_ai.operation.name`, once the API surface is known.
    pub operation: OnceLock<Operation>,
    /// Index of the route version serving the request, in `route.versions` (`usize::MAX`
    /// until chosen). It changes when a fallback takes over.
    version: AtomicUsize,
    /// Upstream attempts made (more than one after retries or fallbacks).
    attempts: AtomicUsize,
    /// A mirrored copy of a request, sent to a shadow version; its answer is dropped.
    pub shadow: bool,
    /// The request's place in its trace.
    pub trace: TraceContext,
    /// Tracing is on: upstream requests name the gateway's attempt span as their parent.
    /// Off, an inbound `traceparent` is passed upstream unchanged.
    tracing: bool,
    /// The spans of a sampled request, while it runs, and where they go when it ends.
    spans: Option<Mutex<SpanLog>>,
    tracer: Option<Arc<Tracer>>,
    /// Nanoseconds since arrival spent waiting on upstreams (and on retry backoff).
    waited: AtomicU64,
    /// When the current attempt started, in nanoseconds since arrival.
    attempt_started: AtomicU64,
    /// The current attempt's span id: the parent id its upstream request carries.
    attempt_span: AtomicU64,
}

impl Exchange {
    /// A request that is not traced (tests, and requests answered before any layer runs).
    pub fn new(method: Method, path: &str) -> Self {
        Self::traced(
            method,
            path,
            TraceContext::passthrough(&http::HeaderMap::new()),
            None,
        )
    }

    /// A request at `trace`. With a tracer, a sampled request records its spans for it.
    pub fn traced(
        method: Method,
        path: &str,
        trace: TraceContext,
        tracer: Option<&Arc<Tracer>>,
    ) -> Self {
        let recording = tracer.filter(|_| trace.sampled);
        let spans = recording.map(|_| Mutex::new(SpanLog::new()));
        Self {
            id: RequestId::random(),
            arrived: Instant::now(),
            method,
            path: path.into(),
            snapshot: OnceLock::new(),
            tenant: OnceLock::new(),
            route: OnceLock::new(),
            prompt: OnceLock::new(),
            key_limits: OnceLock::new(),
            admission: OnceLock::new(),
            version_admissions: OnceLock::new(),
            operation: OnceLock::new(),
            version: AtomicUsize::new(usize::MAX),
            attempts: AtomicUsize::new(0),
            shadow: false,
            trace,
            tracing: tracer.is_some(),
            spans,
            tracer: recording.cloned(),
            waited: AtomicU64::new(0),
            attempt_started: AtomicU64::new(0),
            attempt_span: AtomicU64::new(0),
        }
    }

    /// The record of `primary`'s mirror to version `index` of its route: same request id,
    /// caller and trace (as a child of the primary's span), its own version, timing and
    /// outcome.
    pub fn shadow_of(primary: &Exchange, route: Arc<Route>, index: usize) -> Self {
        let trace = if primary.tracing {
            TraceContext {
                trace_id: primary.trace.trace_id,
                remote_parent: Some(primary.trace.server_span),
                server_span: new_span_id(),
                sampled: primary.trace.sampled,
                flags: primary.trace.flags,
                tracestate: primary.trace.tracestate.clone(),
            }
        } else {
            // Tracing off: the copy passes on the caller's context, as the primary does.
            primary.trace.clone()
        };
        let mut shadow = Self::traced(
            primary.method.clone(),
            &primary.path,
            trace,
            primary.tracer.as_ref(),
        );
        shadow.tracing = primary.tracing;
        shadow.id = primary.id;
        shadow.snapshot = primary.snapshot.clone();
        shadow.tenant = primary.tenant.clone();
        shadow.route = OnceLock::from(route);
        shadow.prompt = primary.prompt.clone();
        shadow.operation = primary.operation.clone();
        shadow.shadow = true;
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

    /// Nanoseconds since the request arrived.
    pub fn since_arrival(&self) -> u64 {
        nanos(self.arrived.elapsed())
    }

    /// Keeps an attempt's admission to its version's limits until the attempt or the request
    /// ends.
    pub fn hold_version_admission(&self, admission: Admission) {
        lock(self.version_admissions.get_or_init(Mutex::default)).push(admission);
    }

    /// Another attempt is about to be made, so the attempts before it failed: they produced
    /// no tokens, and give back their places in their versions' limits now.
    pub fn release_failed_attempts(&self, now: u64) {
        let Some(held) = self.version_admissions.get() else {
            return;
        };
        for earlier in lock(held).iter() {
            earlier.settle(
                crate::ratelimit::admit::Outcome {
                    failed_before_answer: true,
                    ..Default::default()
                },
                now,
            );
        }
    }

    /// The request ended: every admission it holds is trued up and given back.
    pub fn settle_admissions(&self, outcome: crate::ratelimit::admit::Outcome, now: u64) {
        if let Some(admission) = self.admission.get() {
            admission.settle(outcome, now);
        }
        let Some(held) = self.version_admissions.get() else {
            return;
        };
        for admission in lock(held).iter() {
            admission.settle(outcome, now);
        }
    }

    /// Records the version the route chose, before any attempt (a request refused by a
    /// limit of that version still counts under it).
    pub fn choose_version(&self, index: usize) {
        self.version.store(index, Relaxed);
    }

    /// Records that an attempt goes to version `index` of the route. An attempt at another
    /// version than the one before it is a fallback.
    pub fn start_attempt(&self, index: usize) {
        let previous = self.version.swap(index, Relaxed);
        let n = self.attempts.fetch_add(1, Relaxed);
        if let Some(version) = self.route.get().and_then(|r| r.versions.get(index)) {
            version.metrics.record_attempt(n > 0 && previous != index);
        }
        let start = self.since_arrival();
        self.attempt_started.store(start, Relaxed);
        let span_id = if self.tracing { new_span_id() } else { 0 };
        self.attempt_span.store(span_id, Relaxed);
        if let Some(spans) = &self.spans {
            lock(spans).attempts.push(AttemptRecord {
                span_id,
                version: index,
                endpoint: None,
                start,
                end: None,
                status: None,
                error: None,
            });
        }
    }

    /// Records which endpoint of its provider the current attempt went to.
    pub fn attempt_endpoint(&self, endpoint: usize) {
        if let Some(spans) = &self.spans
            && let Some(attempt) = lock(spans).attempts.last_mut()
        {
            attempt.endpoint = Some(endpoint);
        }
    }

    /// Ends the current attempt, which failed and will not serve the answer.
    pub fn attempt_failed(&self, status: Option<u16>, error: Option<ErrorKind>) {
        let elapsed = self.attempt_elapsed();
        if let Some(version) = self.version() {
            let op = self.operation.get().copied().unwrap_or(Operation::Chat);
            version
                .genai
                .operation(op)
                .attempt_duration(error.or(Some(ErrorKind::UpstreamStatus)))
                .observe_duration(elapsed);
        }
        if let Some(spans) = &self.spans
            && let Some(attempt) = lock(spans).attempts.last_mut()
        {
            attempt.end = Some(self.since_arrival());
            attempt.status = status;
            attempt.error = error;
        }
    }

    /// Time since the current attempt started.
    pub fn attempt_elapsed(&self) -> Duration {
        Duration::from_nanos(
            self.since_arrival()
                .saturating_sub(self.attempt_started.load(Relaxed)),
        )
    }

    /// Upstream attempts made so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Relaxed)
    }

    /// Counts `wait` as time spent waiting on upstreams rather than working.
    pub fn add_wait(&self, wait: Duration) {
        self.waited.fetch_add(nanos(wait), Relaxed);
    }

    /// Time inside the gateway so far, minus the time spent waiting on upstreams.
    pub fn overhead(&self) -> Duration {
        Duration::from_nanos(
            self.since_arrival()
                .saturating_sub(self.waited.load(Relaxed)),
        )
    }

    /// Records an INTERNAL span for `kind`, which started `start` nanoseconds after arrival
    /// and ends now. `flag` is the step's yes/no outcome (see [`crate::telemetry::trace::Step`]).
    pub fn step(&self, kind: StepKind, start: u64, flag: bool) {
        if let Some(spans) = &self.spans {
            let end = self.since_arrival();
            lock(spans).steps.push(Step {
                kind,
                span_id: new_span_id(),
                start,
                end,
                flag,
            });
        }
    }

    /// Whether this request's spans are recorded.
    pub fn is_recording(&self) -> bool {
        self.spans.is_some()
    }

    /// Keeps the generation parameters sent upstream, for the attempt spans.
    pub fn record_request(&self, params: RequestParams) {
        if let Some(spans) = &self.spans {
            lock(spans).request = params;
        }
    }

    /// Keeps the request's prompt for its spans (routes that record content).
    pub fn record_input(&self, input: Bytes) {
        if let Some(spans) = &self.spans {
            lock(spans).input = Some(input);
        }
    }

    /// The recorded spans and their tracer, taken once, when the request ends.
    pub fn take_spans(&self) -> Option<(SpanLog, &Arc<Tracer>)> {
        let spans = self.spans.as_ref()?;
        let tracer = self.tracer.as_ref()?;
        Some((std::mem::take(&mut *lock(spans)), tracer))
    }

    /// The `traceparent` for the current attempt's upstream request: the gateway's attempt
    /// span as parent when tracing is on, the caller's own header value otherwise.
    pub fn upstream_traceparent(&self) -> Option<[u8; 55]> {
        if self.tracing {
            return Some(self.trace.traceparent(self.attempt_span.load(Relaxed)));
        }
        self.trace
            .remote_parent
            .map(|parent| format_traceparent(self.trace.trace_id, parent, self.trace.flags))
    }
}

/// Locks a span log; a poisoned lock still holds usable timestamps.
/// Locks one of the request's own records; a poisoned lock still holds a usable record.
fn lock<T>(record: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    record.lock().unwrap_or_else(|e| e.into_inner())
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
