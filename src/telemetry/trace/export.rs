//! The OTLP exporter: takes the encoded spans out of the workers' shards and sends them to
//! the collector in batches, over gRPC or HTTP/protobuf, on its own thread, until every
//! tracer is gone.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::{Duration, Instant};

use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use thread_priority::{ThreadPriority, ThreadPriorityValue};
use tokio::sync::Notify;

use super::proto::{Value, attribute, bytes_field, field_len, len_prefix};
use super::{Shard, Shards, lock_shard};
use crate::config::{OtlpProtocol, TracingConfig, UpstreamHttp};
use crate::telemetry::log_limit::LogLimiter;
use crate::telemetry::metrics::Metrics;
use crate::upstream::client;

/// Field number of `ScopeSpans.spans`: what the shards hold, back to back.
pub const SCOPE_SPANS_SPANS: u32 = 2;

/// The exporter thread's priority on the `thread-priority` crate's 0..=99 scale, which maps
/// to nice 19..-20 on Linux: 22 is nice 10.
const EXPORTER_PRIORITY: u8 = 22;

/// Export calls one exporter has in flight at most.
const EXPORTS_IN_FLIGHT: usize = 4;

/// The gRPC method of the OTLP trace service.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Export calls that fail in a row before the collector counts as down: requests then stop
/// encoding spans (they are dropped and counted at once) until a probe gets an answer.
const FAILURES_TO_TRIP: u32 = 3;

/// Sends span batches to the collector.
pub struct Exporter {
    shards: Shards,
    /// Rung by a request when its shard holds a batch, and by the tracer's drop.
    wake: Arc<Notify>,
    /// Set by the tracer's drop: take what is left, send it, stop.
    closed: Arc<AtomicBool>,
    transport: Transport,
    /// The encoded `Resource` and `InstrumentationScope` messages, the same in every batch.
    resource: Vec<u8>,
    scope: Vec<u8>,
    max_batch_spans: usize,
    max_batch_bytes: usize,
    interval: Duration,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Failed exports are logged at most once per [`FAILURE_LOG_INTERVAL`].
    failure_log: LogLimiter,
    started: Instant,
    /// Set after [`FAILURES_TO_TRIP`] failed exports in a row, cleared by a probe that gets
    /// an answer; shared with the tracer, which skips encoding while it is set.
    collector_down: Arc<AtomicBool>,
    failures_in_a_row: AtomicU32,
}

/// Shortest time between two logged export failures: with the collector down, every batch
/// fails (dozens a second under load), and the metric already counts each.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A batch as sent: the envelope (gRPC prefix, resource and scope), then the spans, still
/// in the shard's buffer.
type BatchBody = Full<Chain<Bytes, Bytes>>;

struct Transport {
    client: Client<HttpsConnector<HttpConnector>, BatchBody>,
    uri: Uri,
    protocol: OtlpProtocol,
    headers: HeaderMap,
}

impl Exporter {
    pub fn new(
        config: &TracingConfig,
        shards: Shards,
        wake: Arc<Notify>,
        closed: Arc<AtomicBool>,
        collector_down: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Result<Exporter, String> {
        let otlp = &config.otlp;
        let base = otlp.endpoint.trim_end_matches('/');
        let parsed: Uri = base
            .parse()
            .map_err(|e| format!("tracing.otlp.endpoint: not a URL: {e}"))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err("tracing.otlp.endpoint: an http:// or https:// URL with a host".into());
        }
        if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("tracing.otlp.endpoint: no credentials in the URL; use headers_env".into());
        }
        let has_path = parsed.path() != "/" && !parsed.path().is_empty();
        let full = match otlp.protocol {
            OtlpProtocol::Grpc => format!("{base}{GRPC_PATH}"),
            OtlpProtocol::HttpProtobuf if has_path => base.to_owned(),
            OtlpProtocol::HttpProtobuf => format!("{base}/v1/traces"),
        };
        let uri: Uri = full
            .parse()
            .map_err(|e| format!("tracing.otlp.endpoint: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &otlp.headers {
            insert_header(&mut headers, name, value, false)
                .map_err(|why| format!("tracing.otlp.headers.{name}: {why}"))?;
        }
        for (name, var) in &otlp.headers_env {
            let value = std::env::var(var).map_err(|_| {
                format!("tracing.otlp.headers_env.{name}: environment variable {var} is not set")
            })?;
            insert_header(&mut headers, name, &value, true)
                .map_err(|why| format!("tracing.otlp.headers_env.{name}: {why}"))?;
        }
        let http = match otlp.protocol {
            OtlpProtocol::Grpc => UpstreamHttp::Http2,
            OtlpProtocol::HttpProtobuf => UpstreamHttp::Auto,
        };
        let client = client::build_with(None, Duration::from_secs(5), 4, http)
            .map_err(|e| format!("tracing.otlp: {e}"))?;
        Ok(Exporter {
            shards,
            wake,
            closed,
            transport: Transport {
                client,
                uri,
                protocol: otlp.protocol,
                headers,
            },
            resource: resource(&config.service_name),
            scope: scope(),
            max_batch_spans: config.max_batch_spans,
            max_batch_bytes: config.max_batch_bytes,
            interval: config.export_interval.0,
            timeout: otlp.timeout.0,
            metrics,
            failure_log: LogLimiter::new(FAILURE_LOG_INTERVAL),
            started: Instant::now(),
            collector_down,
            failures_in_a_row: AtomicU32::new(0),
        })
    }

    /// Every `export_interval` (or when woken early), takes what every shard holds and
    /// exports it in batches; once every tracer is gone, sends what is left and returns.
    pub async fn run(self) {
        // Requests before spans: a worker that wakes preempts this thread. Nice 10 leaves
        // it about a tenth of a core that the workers want too, which is what exporting
        // takes at full sampling; at nice 19 (a seventieth) a saturated gateway dropped
        // almost half its spans. Past that, shards fill and spans are dropped and counted.
        let lowered = ThreadPriorityValue::try_from(EXPORTER_PRIORITY)
            .map_err(|why| format!("{why:?}"))
            .and_then(|value| {
                thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(value))
                    .map_err(|why| format!("{why:?}"))
            });
        if let Err(why) = lowered {
            tracing::debug!(error = %why, "cannot lower the span exporter's priority");
        }
        // Each shard's buffer is swapped with this one's, so both keep their capacity.
        let mut taken = Shard::default();
        loop {
            let _ = tokio::time::timeout(self.interval, self.wake.notified()).await;
            // Read before draining: once set, no request can add to the shards.
            let last = self.closed.load(Acquire);
            for shard in self.shards.iter() {
                std::mem::swap(&mut *lock_shard(shard), &mut taken);
                self.export_shard(&mut taken).await;
                taken.clear();
            }
            if last {
                return;
            }
            if self.collector_down.load(Relaxed) {
                self.probe().await;
            }
        }
    }

    /// Sends a shard's spans in batches, each one contiguous run of its bytes, up to
    /// [`EXPORTS_IN_FLIGHT`] at a time: a collector that answers slowly is not also made to
    /// wait for one batch after the other.
    ///
    /// The batches are sent from the shard's own buffer, without a copy; once they are
    /// sent, the buffer is taken back with its capacity (unless a batch is still held,
    /// after a timeout: then the shard starts a new one).
    async fn export_shard(&self, shard: &mut Shard) {
        if self.collector_down.load(Relaxed) {
            // Encoded before the collector was found down: not worth another failed call.
            let spans = shard.spans as u64;
            self.metrics
                .traces
                .dropped_export_failed
                .fetch_add(spans, Relaxed);
            return;
        }
        let batches = batches(&shard.requests, self.max_batch_spans, self.max_batch_bytes);
        let spans = Bytes::from(std::mem::take(&mut shard.bytes));
        futures_util::stream::iter(batches)
            .for_each_concurrent(EXPORTS_IN_FLIGHT, |(range, count)| {
                self.export(spans.slice(range), count)
            })
            .await;
        shard.bytes = reclaim(spans);
    }

    async fn export(&self, spans: Bytes, count: usize) {
        let body = self.request_body(spans);
        let sent = match tokio::time::timeout(self.timeout, self.transport.send(body)).await {
            Ok(sent) => sent,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        let counters = &self.metrics.traces;
        let count = count as u64;
        match sent {
            Ok(()) => {
                counters.exported.fetch_add(count, Relaxed);
                self.failures_in_a_row.store(0, Relaxed);
            }
            Err(why) => {
                counters.dropped_export_failed.fetch_add(count, Relaxed);
                self.count_failure();
                if let Some(not_logged) = self.failure_log.admit(self.started.elapsed()) {
                    tracing::warn!(spans = count, error = %why, earlier_failures_not_logged = not_logged,
                        "span export failed; spans dropped (all counted in tollgate_trace_spans_dropped_total)");
                }
            }
        }
    }

    /// One more failed export call in a row; the [`FAILURES_TO_TRIP`]th marks the collector
    /// down.
    fn count_failure(&self) {
        let in_a_row = self.failures_in_a_row.fetch_add(1, Relaxed) + 1;
        if in_a_row >= FAILURES_TO_TRIP && !self.collector_down.swap(true, Release) {
            tracing::warn!(
                failed_in_a_row = in_a_row,
                "the trace collector does not answer: spans are dropped without being encoded \
                 until it does (probed every export_interval)"
            );
        }
    }

    /// While the collector counts as down: an export with no spans; an answer brings tracing
    /// back.
    async fn probe(&self) {
        let empty = self.request_body(Bytes::new());
        let answer = tokio::time::timeout(self.timeout, self.transport.send(empty)).await;
        if answer.is_ok_and(|sent| sent.is_ok()) {
            self.failures_in_a_row.store(0, Relaxed);
            self.collector_down.store(false, Release);
            tracing::info!("the trace collector answers again: spans are exported again");
        }
    }

    /// One `ExportTraceServiceRequest` around `spans` (encoded `ScopeSpans.spans` fields),
    /// with the gRPC length prefix in front when the transport is gRPC: the envelope is
    /// written, the spans follow it as they are.
    pub fn request_body(&self, spans: Bytes) -> Chain<Bytes, Bytes> {
        let scope_spans = field_len(self.scope.len()) + spans.len();
        let resource_spans = field_len(self.resource.len()) + field_len(scope_spans);
        let message = field_len(resource_spans);
        let mut out = Vec::with_capacity(message - spans.len() + 5);
        if self.transport.protocol == OtlpProtocol::Grpc {
            // Length-prefixed message: no compression flag, then a big-endian length.
            out.push(0);
            out.extend_from_slice(&u32::try_from(message).unwrap_or(u32::MAX).to_be_bytes());
        }
        len_prefix(&mut out, 1, resource_spans);
        bytes_field(&mut out, 1, &self.resource);
        len_prefix(&mut out, 2, scope_spans);
        bytes_field(&mut out, 1, &self.scope);
        Bytes::from(out).chain(spans)
    }
}

/// The buffer behind `spans`, with its capacity, once no batch holds a part of it; else a
/// new empty one.
fn reclaim(spans: Bytes) -> Vec<u8> {
    spans.try_into_mut().map(Vec::from).unwrap_or_default()
}

/// Cuts requests' spans (their end offsets and counts) into batches of at most `max` spans
/// and `max_bytes` bytes; a request's spans are never split, so one request with more than
/// either goes alone.
fn batches(
    requests: &[(usize, usize)],
    max: usize,
    max_bytes: usize,
) -> Vec<(std::ops::Range<usize>, usize)> {
    let mut batches = Vec::new();
    let (mut start, mut end, mut spans) = (0usize, 0usize, 0usize);
    for &(request_end, count) in requests {
        if spans > 0 && (spans + count > max || request_end - start > max_bytes) {
            batches.push((start..end, spans));
            (start, spans) = (end, 0);
        }
        end = request_end;
        spans += count;
    }
    if spans > 0 {
        batches.push((start..end, spans));
    }
    batches
}

impl Transport {
    async fn send(&self, body: Chain<Bytes, Bytes>) -> Result<(), String> {
        let content_type = match self.protocol {
            OtlpProtocol::Grpc => "application/grpc",
            OtlpProtocol::HttpProtobuf => "application/x-protobuf",
        };
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self.protocol == OtlpProtocol::Grpc {
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the collector: {e}"))?;
        let status = response.status();
        let head_grpc_status = grpc_status(response.headers());
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("collector answer cut short: {e}"))?;
        if !status.is_success() {
            return Err(format!("collector answered HTTP {}", status.as_u16()));
        }
        if self.protocol == OtlpProtocol::Grpc {
            // A trailers-only answer carries grpc-status in its head.
            let code = collected
                .trailers()
                .and_then(grpc_status)
                .or(head_grpc_status)
                .ok_or("collector answer has no grpc-status")?;
            if code != 0 {
                return Err(format!("collector answered gRPC status {code}"));
            }
        }
        Ok(())
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn insert_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
    secret: bool,
) -> Result<(), String> {
    let name = HeaderName::try_from(name).map_err(|_| "not a valid header name".to_owned())?;
    let mut value =
        HeaderValue::try_from(value).map_err(|_| "not a valid header value".to_owned())?;
    value.set_sensitive(secret);
    headers.insert(name, value);
    Ok(())
}

/// The `Resource` message: who is sending.
fn resource(service_name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in [
        ("service.name", service_name),
        ("service.version", env!("CARGO_PKG_VERSION")),
        ("telemetry.sdk.name", "tollgate"),
        ("telemetry.sdk.language", "rust"),
    ] {
        attribute(&mut out, 1, key, &Value::Str(value));
    }
    out
}

/// The `InstrumentationScope` message.
fn scope() -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(&mut out, 1, b"tollgate");
    bytes_field(&mut out, 2, env!("CARGO_PKG_VERSION").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_max_spans_and_never_split_a_request() {
        // Four requests of 4, 4, 5 and 9 spans, ending at byte 10, 20, 30 and 40.
        let requests = [(10, 4), (20, 4), (30, 5), (40, 9)];
        assert_eq!(
            batches(&requests, 8, 1000),
            vec![(0..20, 8), (20..30, 5), (30..40, 9)]
        );
        assert_eq!(batches(&requests, 100, 1000), vec![(0..40, 22)]);
        assert_eq!(batches(&[], 8, 1000), vec![]);
    }

    #[test]
    fn a_sent_shard_buffer_is_taken_back_with_its_capacity() {
        let mut buffer = Vec::with_capacity(4096);
        buffer.extend_from_slice(&[7u8; 3000]);
        let address = buffer.as_ptr();
        let spans = Bytes::from(buffer);
        let (first, second) = (spans.slice(0..1000), spans.slice(1000..3000));
        drop((first, second));
        let back = reclaim(spans);
        assert_eq!((back.as_ptr(), back.capacity()), (address, 4096));
        // A batch still held (an export that timed out): a new buffer instead.
        let spans = Bytes::from(back);
        let held = spans.slice(0..10);
        assert_eq!(reclaim(spans).capacity(), 0);
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn batches_hold_at_most_max_bytes_and_a_larger_request_goes_alone() {
        // Requests of 10, 10, 25 and 5 bytes; at most 20 bytes a batch.
        let requests = [(10, 4), (20, 4), (45, 4), (50, 4)];
        assert_eq!(
            batches(&requests, 100, 20),
            vec![(0..20, 8), (20..45, 4), (45..50, 4)]
        );
    }
}
