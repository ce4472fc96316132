//! Distributed tracing: W3C trace context in and out, spans recorded per sampled request,
//! exported over OTLP (gRPC or HTTP/protobuf) off the hot path.
//!
//! A request records timestamps and outcomes only (see [`record`]). When it ends, the record
//! goes into a bounded queue; the exporter, on a thread of its own, builds the spans and
//! their attributes, encodes them as OTLP protobuf and sends them in batches. A full queue or
//! a failed export drops spans and counts them (`tollgate_trace_spans_dropped_total`): a slow
//! or absent collector never slows or fails a request.
//!
//! The OpenTelemetry SDK's span pipeline was not used here: it builds attribute maps and
//! owned strings per span on the request's thread, which at full sampling costs several
//! times the gateway's own work per request. See the README's tracing section.

pub mod content;
pub mod context;
pub mod export;
pub mod proto;
pub mod record;
pub mod spans;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::HeaderMap;
use tokio::sync::mpsc;

pub use context::TraceContext;
pub use record::{AnswerFacts, RequestParams, SpanLog, Step, StepKind};

use crate::config::TracingConfig;
use crate::exchange::Exchange;
use crate::telemetry::metrics::Metrics;

/// A request whose spans are ready to export.
pub struct Finished {
    pub exchange: Arc<Exchange>,
    pub spans: SpanLog,
    pub answer: AnswerFacts,
    /// Nanoseconds from arrival to the end of the response.
    pub end: u64,
}

/// The request-side half of tracing: sampling, and the queue to the exporter.
#[derive(Debug)]
pub struct Tracer {
    ratio: f64,
    queue: mpsc::Sender<Finished>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("spans", &self.spans.span_count())
            .finish()
    }
}

impl Tracer {
    /// The tracer and the exporter it feeds, from the `tracing:` section. Errors name the
    /// offending key.
    pub fn new(
        config: &TracingConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Tracer>, export::Exporter), String> {
        if !(0.0..=1.0).contains(&config.sampling_ratio) {
            return Err("tracing.sampling_ratio: a fraction between 0 and 1".into());
        }
        if config.queue_size == 0 || config.max_batch_spans == 0 {
            return Err("tracing.queue_size and tracing.max_batch_spans must be above 0".into());
        }
        let (queue, receiver) = mpsc::channel(config.queue_size);
        let exporter = export::Exporter::new(config, receiver, metrics.clone())?;
        let tracer = Arc::new(Tracer {
            ratio: config.sampling_ratio,
            queue,
            metrics,
        });
        Ok((tracer, exporter))
    }

    /// The trace context of an inbound request.
    pub fn context(&self, headers: &HeaderMap) -> TraceContext {
        TraceContext::from_headers(headers, self.ratio)
    }

    /// Queues a finished request's spans, or drops and counts them when the queue is full.
    pub fn submit(&self, finished: Finished) {
        if let Err(err) = self.queue.try_send(finished) {
            let lost = match err {
                mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => {
                    f.spans.span_count()
                }
            };
            self.metrics
                .traces
                .dropped_queue_full
                .fetch_add(lost as u64, Relaxed);
        }
    }
}
