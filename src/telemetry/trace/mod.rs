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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tracer_error(section: &str) -> String {
        let config = Config::from_yaml(&format!("tracing:\n{section}")).unwrap();
        match Tracer::new(config.tracing.as_ref().unwrap(), Arc::new(Metrics::new())) {
            Ok(_) => panic!("accepted"),
            Err(err) => err,
        }
    }

    #[test]
    fn bad_tracing_sections_name_their_key() {
        let otlp = "  otlp:\n    endpoint: http://127.0.0.1:4317\n";
        assert!(tracer_error(&format!("{otlp}  sampling_ratio: 1.5\n")).contains("sampling_ratio"));
        assert!(tracer_error(&format!("{otlp}  queue_size: 0\n")).contains("queue_size"));
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
