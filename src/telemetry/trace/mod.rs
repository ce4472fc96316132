//! Distributed tracing: W3C trace context in and out, spans recorded per sampled request,
//! exported over OTLP (gRPC or HTTP/protobuf) off the hot path.
//!
//! A request records timestamps and outcomes only while it runs (see [`record`]). Once its
//! response is out, its spans are encoded as OTLP protobuf into its worker's shard of a
//! bounded queue; the exporter, on a thread of its own, sends the shards in batches. A full
//! queue or a failed export drops spans and counts them (`tollgate_trace_spans_dropped_total`):
//! a slow or absent collector never slows or fails a request.
//!
//! The OpenTelemetry SDK's span pipeline was not used here: it builds attribute maps and
//! owned strings per span and converts them again for export. See the README's tracing
//! section for what Tollgate does instead, and what it costs.

pub mod content;
pub mod context;
pub mod export;
pub mod proto;
pub mod record;
pub mod spans;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderMap;
use tokio::sync::Notify;

pub use context::TraceContext;
pub use record::{AnswerFacts, RequestParams, SpanLog, Step, StepKind};

use crate::config::TracingConfig;
use crate::exchange::Exchange;
use crate::server::workers::worker_index;
use crate::telemetry::metrics::Metrics;

/// A request whose spans are ready to encode: borrowed from the request as it ends.
pub struct Finished<'a> {
    pub exchange: &'a Exchange,
    pub spans: &'a SpanLog,
    pub answer: AnswerFacts<'a>,
    /// Nanoseconds from arrival to the end of the response.
    pub end: u64,
}

/// Encoded spans waiting for export: one worker's share of the queue.
#[derive(Debug, Default)]
pub struct Shard {
    /// `Span` messages, back to back, as `ScopeSpans.spans` fields.
    pub bytes: Vec<u8>,
    /// Where each request's spans end in `bytes`, and how many there are.
    pub requests: Vec<(usize, usize)>,
    pub spans: usize,
}

impl Shard {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.requests.clear();
        self.spans = 0;
    }
}

/// The queue between requests and the exporter: a shard per worker, so a request only ever
/// takes its own worker's (uncontended) lock; the exporter swaps each shard's buffer out.
pub type Shards = Arc<[Mutex<Shard>]>;

/// Locks a shard; a poisoned lock still holds whole encoded spans.
pub fn lock_shard(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request-side half of tracing: sampling, and encoding a finished request's spans into
/// its worker's shard of the export queue.
///
/// Spans are encoded on the request's own thread, right as it ends, while everything they
/// read is in its cache; the exporter only copies bytes to the collector. A request never
/// wakes the exporter for itself: it drains every `export_interval`, and early only when a
/// shard holds a full batch. (Handing whole request records to the exporter thread, one
/// wake-up each, cost about four times as much at full sampling.)
#[derive(Debug)]
pub struct Tracer {
    ratio: f64,
    shards: Shards,
    /// Requests a shard holds at most; more are dropped and counted.
    shard_requests: usize,
    /// Spans, or bytes, in a shard that wake the exporter early: a full batch.
    wake_spans: usize,
    wake_bytes: usize,
    wake: Arc<Notify>,
    /// Set when the tracer is gone, before the exporter is woken for the last time.
    closed: Arc<AtomicBool>,
    /// Set by the exporter while the collector does not answer: spans are not encoded.
    collector_down: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Drop for Tracer {
    /// The tracer is gone (no request can submit any more): the exporter sends what is
    /// left and stops.
    fn drop(&mut self) {
        self.closed.store(true, Release);
        self.wake.notify_one();
    }
}

impl Tracer {
    /// The tracer for `workers` worker threads and the exporter it feeds, from the
    /// `tracing:` section. Errors name the offending key.
    pub fn new(
        config: &TracingConfig,
        workers: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Tracer>, export::Exporter), String> {
        if !(0.0..=1.0).contains(&config.sampling_ratio) {
            return Err("tracing.sampling_ratio: a fraction between 0 and 1".into());
        }
        if config.queue_size == 0 || config.max_batch_spans == 0 || config.max_batch_bytes == 0 {
            return Err(
                "tracing.queue_size, max_batch_spans and max_batch_bytes must be above 0".into(),
            );
        }
        if config.export_interval.0.is_zero() || config.otlp.timeout.0.is_zero() {
            return Err("tracing.export_interval and tracing.otlp.timeout must be above 0".into());
        }
        let workers = workers.max(1);
        let shards: Shards = (0..workers).map(|_| Mutex::new(Shard::default())).collect();
        let wake = Arc::new(Notify::new());
        let closed = Arc::new(AtomicBool::new(false));
        let collector_down = Arc::new(AtomicBool::new(false));
        let exporter = export::Exporter::new(
            config,
            shards.clone(),
            wake.clone(),
            closed.clone(),
            collector_down.clone(),
            metrics.clone(),
        )?;
        let tracer = Arc::new(Tracer {
            ratio: config.sampling_ratio,
            shards,
            shard_requests: config.queue_size.div_ceil(workers),
            wake_spans: config.max_batch_spans,
            wake_bytes: config.max_batch_bytes,
            wake,
            closed,
            collector_down,
            metrics,
        });
        Ok((tracer, exporter))
    }

    /// The export queue: one shard per worker.
    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    /// The trace context of an inbound request.
    pub fn context(&self, headers: &HeaderMap) -> TraceContext {
        TraceContext::from_headers(headers, self.ratio)
    }

    /// Encodes a finished request's spans into its worker's shard, or drops and counts them
    /// when the shard is full (the collector is slow) or the collector does not answer.
    pub fn submit(&self, finished: &Finished<'_>) {
        let count = finished.spans.span_count();
        if self.collector_down.load(Relaxed) {
            self.metrics
                .traces
                .dropped_export_failed
                .fetch_add(count as u64, Relaxed);
            return;
        }
        let mut shard = lock_shard(&self.shards[worker_index() % self.shards.len()]);
        if shard.requests.len() >= self.shard_requests {
            drop(shard);
            self.metrics
                .traces
                .dropped_queue_full
                .fetch_add(count as u64, Relaxed);
            return;
        }
        spans::encode(&mut shard.bytes, export::SCOPE_SPANS_SPANS, finished);
        let end = shard.bytes.len();
        shard.requests.push((end, count));
        shard.spans += count;
        if shard.spans >= self.wake_spans || end >= self.wake_bytes {
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tracer_error(section: &str) -> String {
        let config = Config::from_yaml(&format!("tracing:\n{section}")).unwrap();
        match Tracer::new(
            config.tracing.as_ref().unwrap(),
            1,
            Arc::new(Metrics::new()),
        ) {
            Ok(_) => panic!("accepted"),
            Err(err) => err,
        }
    }

    #[test]
    fn bad_tracing_sections_name_their_key() {
        let otlp = "  otlp:\n    endpoint: http://127.0.0.1:4317\n";
        assert!(tracer_error(&format!("{otlp}  sampling_ratio: 1.5\n")).contains("sampling_ratio"));
        assert!(tracer_error(&format!("{otlp}  queue_size: 0\n")).contains("queue_size"));
        assert!(tracer_error(&format!("{otlp}  max_batch_bytes: 0\n")).contains("max_batch_bytes"));
        assert!(
            tracer_error(&format!("{otlp}  export_interval: 0ms\n")).contains("export_interval")
        );
        assert!(
            tracer_error("  otlp:\n    endpoint: ftp://collector\n")
                .contains("tracing.otlp.endpoint")
        );
        assert!(
            tracer_error("  otlp:\n    endpoint: http://user:pw@collector:4317\n")
                .contains("no credentials")
        );
        let missing = tracer_error(&format!(
            "{otlp}    headers_env: {{x-api-key: TOLLGATE_TEST_UNSET_VARIABLE}}\n"
        ));
        assert!(
            missing.contains("TOLLGATE_TEST_UNSET_VARIABLE"),
            "{missing}"
        );
        assert!(
            tracer_error(&format!("{otlp}    headers: {{\"bad header\": x}}\n"))
                .contains("headers")
        );
    }
}
