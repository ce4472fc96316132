//! Prometheus metrics: lock-free recording on the hot path, text exposition on scrape.
//!
//! Series handles are created when a snapshot is compiled (per route version, and per route
//! version and tenant) and carried across reloads, so recording a request is a few relaxed
//! atomic adds with no lookup, hashing, locking or allocation. The exposition is Prometheus
//! text format 0.0.4, which `promtool check metrics` reads without lint findings.

mod gauge;
mod histogram;
mod series;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use gauge::ShardedGauge;
pub use histogram::Histogram;
pub use series::{Operation, OperationMetrics, RequestCounters, VersionMetrics};

use crate::error::ErrorKind;
use crate::providers::endpoints::EndpointHealth;

/// Two names identifying a set of series (provider and endpoint, say).
type SeriesKey = (Box<str>, Box<str>);

/// What a version's series are keyed by: route, version, `gen_ai.provider.name`, model. A
/// reload that changes the provider kind or the model starts new series.
type VersionKey = (Box<str>, Box<str>, Box<str>, Box<str>);

/// What request counters are keyed by: route, version, tenant.
type RequestKey = (Box<str>, Box<str>, Box<str>);

/// Span export outcomes, counted for `tollgate_trace_spans_*`.
#[derive(Debug, Default)]
pub struct TraceExportCounters {
    pub exported: AtomicU64,
    /// Dropped because the export queue was full (the collector is slow or down).
    pub dropped_queue_full: AtomicU64,
    /// Dropped because the collector refused them or could not be reached.
    pub dropped_export_failed: AtomicU64,
}

/// All of the process's metrics. Lives as long as the process; snapshots hold handles into it.
#[derive(Debug)]
pub struct Metrics {
    versions: Mutex<BTreeMap<VersionKey, Arc<VersionMetrics>>>,
    requests: Mutex<BTreeMap<RequestKey, Arc<RequestCounters>>>,
    unrouted: Arc<VersionMetrics>,
    /// Requests answered before any tenant was known (bad HTTP, failed auth).
    unauthenticated: Arc<RequestCounters>,
    errors: Box<[AtomicU64]>,
    in_flight: ShardedGauge,
    streams_active: ShardedGauge,
    config_version: Mutex<Box<str>>,
    /// Reload outcomes: swapped, unchanged, failed.
    reloads: [AtomicU64; 3],
    /// Shadow copies not sent because too many were in flight.
    shadows_skipped: AtomicU64,
    /// Load and health of each provider endpoint, by (provider, endpoint).
    endpoints: Mutex<BTreeMap<SeriesKey, Arc<EndpointHealth>>>,
    pub traces: TraceExportCounters,
}

/// How a reload ended, as the `result` label of `tollgate_config_reloads_total`.
#[derive(Clone, Copy, Debug)]
pub enum ReloadResult {
    Swapped,
    Unchanged,
    Failed,
}

impl ReloadResult {
    const ALL: [ReloadResult; 3] = [
        ReloadResult::Swapped,
        ReloadResult::Unchanged,
        ReloadResult::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            ReloadResult::Swapped => "swapped",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Failed => "failed",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A request counted in `tollgate_requests_in_flight` until this is dropped.
#[derive(Debug)]
pub struct InFlightRequest(Arc<Metrics>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.add(-1);
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            versions: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(BTreeMap::new()),
            unrouted: Arc::new(VersionMetrics::new("", "", "", "")),
            unauthenticated: Arc::new(RequestCounters::new("", "", "")),
            errors: ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            in_flight: ShardedGauge::default(),
            streams_active: ShardedGauge::default(),
            config_version: Mutex::new("".into()),
            reloads: Default::default(),
            shadows_skipped: AtomicU64::new(0),
            endpoints: Mutex::new(BTreeMap::new()),
            traces: TraceExportCounters::default(),
        }
    }

    /// The series of `version` of `alias`, created on first use and kept across reloads.
    /// `provider` is the version's `gen_ai.provider.name`, `model` its upstream model.
    /// Called when a snapshot is compiled, never per request.
    pub fn version(
        &self,
        alias: &str,
        version: &str,
        provider: &str,
        model: &str,
    ) -> Arc<VersionMetrics> {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions
            .entry((alias.into(), version.into(), provider.into(), model.into()))
            .or_insert_with(|| Arc::new(VersionMetrics::new(alias, version, provider, model)))
            .clone()
    }

    /// The request counters of (`alias`, `version`, `tenant`), created on first use and kept
    /// across reloads. `alias` and `version` are `""` for requests that never found a route.
    pub fn requests(&self, alias: &str, version: &str, tenant: &str) -> Arc<RequestCounters> {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests
            .entry((alias.into(), version.into(), tenant.into()))
            .or_insert_with(|| Arc::new(RequestCounters::new(alias, version, tenant)))
            .clone()
    }

    /// The health of `endpoint` of `provider`, created on first use and kept across reloads
    /// (an ejected endpoint stays ejected). Called when a snapshot is compiled.
    pub fn endpoint(&self, provider: &str, endpoint: &str) -> Arc<EndpointHealth> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints
            .entry((provider.into(), endpoint.into()))
            .or_default()
            .clone()
    }

    /// Series of requests that never resolved a route version.
    pub fn unrouted(&self) -> &Arc<VersionMetrics> {
        &self.unrouted
    }

    /// Counters of requests answered before a tenant was known.
    pub fn unauthenticated(&self) -> &Arc<RequestCounters> {
        &self.unauthenticated
    }

    pub fn record_error(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Relaxed);
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.add(1);
        InFlightRequest(self.clone())
    }

    pub fn requests_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn stream_started(&self) {
        self.streams_active.add(1);
    }

    pub fn stream_ended(&self) {
        self.streams_active.add(-1);
    }

    pub fn streams_active(&self) -> i64 {
        self.streams_active.get()
    }

    pub fn record_shadow_skipped(&self) {
        self.shadows_skipped.fetch_add(1, Relaxed);
    }

    pub fn record_reload(&self, result: ReloadResult) {
        self.reloads[result as usize].fetch_add(1, Relaxed);
    }

    pub fn set_config_version(&self, version: &str) {
        *self
            .config_version
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = version.into();
    }

    /// Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        let versions: Vec<Arc<VersionMetrics>> = {
            let map = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::once(self.unrouted.clone())
                .chain(map.values().cloned())
                .collect()
        };
        let requests: Vec<Arc<RequestCounters>> = {
            let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::once(self.unauthenticated.clone())
                .chain(map.values().cloned())
                .collect()
        };

        for (name, help) in GENAI_FAMILIES {
            family(&mut out, name, "histogram", help);
            for version in &versions {
                version.encode_genai(&mut out, name);
            }
        }

        family(
            &mut out,
            "tollgate_requests_total",
            "counter",
            "Requests answered, by model alias, route version, tenant, status class and error type.",
        );
        for counters in &requests {
            counters.encode(&mut out);
        }

        family(
            &mut out,
            "tollgate_gateway_overhead_seconds",
            "histogram",
            "Time inside the gateway minus time waiting on upstreams, up to the response head.",
        );
        for version in &versions {
            if version.overhead.count() > 0 {
                version.overhead.encode(
                    &mut out,
                    "tollgate_gateway_overhead_seconds",
                    version.labels(),
                );
            }
        }

        for (name, help) in [
            (
                "tollgate_upstream_attempts_total",
                "Upstream attempts, by the route version they went to.",
            ),
            (
                "tollgate_upstream_retries_total",
                "Failed upstream attempts that were retried, by the route version that failed.",
            ),
            (
                "tollgate_upstream_fallbacks_total",
                "Attempts a fallback version made after another version failed.",
            ),
        ] {
            family(&mut out, name, "counter", help);
            for version in &versions {
                version.encode_counter(&mut out, name);
            }
        }

        family(
            &mut out,
            "tollgate_request_errors_total",
            "counter",
            "Requests that ended in an error, by error code and whose fault it was.",
        );
        for (kind, count) in ErrorKind::ALL.iter().zip(self.errors.iter()) {
            let _ = writeln!(
                out,
                "tollgate_request_errors_total{{code=\"{}\",fault=\"{}\"}} {}",
                kind.code(),
                kind.fault().as_str(),
                count.load(Relaxed)
            );
        }

        gauge(
            &mut out,
            "tollgate_requests_in_flight",
            "Requests received and not yet answered to the end.",
            self.requests_in_flight(),
        );
        gauge(
            &mut out,
            "tollgate_streams_active",
            "Streaming responses in flight.",
            self.streams_active(),
        );

        counter(
            &mut out,
            "tollgate_access_log_dropped_total",
            "Access-log lines dropped because stdout could not keep up.",
            super::access_sink::dropped(),
        );

        family(
            &mut out,
            "tollgate_config_info",
            "gauge",
            "The config version in force (content hash).",
        );
        let version = self
            .config_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "tollgate_config_info{{version=\"{}\"}} 1",
            escape(&version)
        );

        self.encode_endpoints(&mut out);

        counter(
            &mut out,
            "tollgate_shadow_skipped_total",
            "Shadow copies not sent because the in-flight limit was reached.",
            self.shadows_skipped.load(Relaxed),
        );

        family(
            &mut out,
            "tollgate_config_reloads_total",
            "counter",
            "Config reloads by result: swapped in, unchanged, or refused (the old config stays).",
        );
        for result in ReloadResult::ALL {
            let _ = writeln!(
                out,
                "tollgate_config_reloads_total{{result=\"{}\"}} {}",
                result.label(),
                self.reloads[result as usize].load(Relaxed)
            );
        }

        counter(
            &mut out,
            "tollgate_trace_spans_exported_total",
            "Spans the OTLP collector accepted.",
            self.traces.exported.load(Relaxed),
        );
        family(
            &mut out,
            "tollgate_trace_spans_dropped_total",
            "counter",
            "Spans dropped instead of slowing requests: the export queue was full, or the collector failed.",
        );
        for (reason, counter) in [
            ("queue_full", &self.traces.dropped_queue_full),
            ("export_failed", &self.traces.dropped_export_failed),
        ] {
            let _ = writeln!(
                out,
                "tollgate_trace_spans_dropped_total{{reason=\"{reason}\"}} {}",
                counter.load(Relaxed)
            );
        }

        family(
            &mut out,
            "tollgate_build_info",
            "gauge",
            "Build of the running binary.",
        );
        let _ = writeln!(
            out,
            "tollgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }

    fn encode_endpoints(&self, out: &mut String) {
        let endpoints: Vec<(SeriesKey, Arc<EndpointHealth>)> = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = crate::providers::endpoints::now();
        for (name, kind, help) in [
            (
                "tollgate_endpoint_outstanding",
                "gauge",
                "Requests in flight to a provider endpoint.",
            ),
            (
                "tollgate_endpoint_ejected",
                "gauge",
                "1 while a provider endpoint is ejected after failures.",
            ),
            (
                "tollgate_endpoint_ejections_total",
                "counter",
                "Times a provider endpoint was ejected.",
            ),
        ] {
            family(out, name, kind, help);
            for ((provider, endpoint), health) in &endpoints {
                let value = match name {
                    "tollgate_endpoint_outstanding" => health.outstanding.load(Relaxed),
                    "tollgate_endpoint_ejected" => u64::from(health.is_ejected(now)),
                    _ => health.ejections_total.load(Relaxed),
                };
                let _ = writeln!(
                    out,
                    "{name}{{provider=\"{}\",endpoint=\"{}\"}} {value}",
                    escape(provider),
                    escape(endpoint)
                );
            }
        }
    }
}

/// The GenAI histogram families (OTel GenAI conventions, dots as underscores; seconds).
const GENAI_FAMILIES: [(&str, &str); 5] = [
    (
        "gen_ai_client_token_usage",
        "Tokens per request reported by upstreams, by token type (input or output).",
    ),
    (
        "gen_ai_server_request_duration",
        "Seconds from request arrival to the end of the response, with error_type on failures.",
    ),
    (
        "gen_ai_server_time_to_first_token",
        "Seconds from request arrival to the first streamed event (or the whole answer).",
    ),
    (
        "gen_ai_server_time_per_output_token",
        "Seconds per output token after the first, for streamed answers.",
    ),
    (
        "gen_ai_client_operation_duration",
        "Seconds per upstream attempt, with error_type on failed attempts.",
    ),
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value per the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_histograms_appear_under_their_labels() {
        let metrics = Metrics::new();
        metrics
            .requests("demo", "default", "anonymous")
            .record(200, None);
        let version = metrics.version("demo", "default", "tollgate.demo", "demo");
        version
            .overhead
            .observe_duration(std::time::Duration::from_micros(40));
        let text = metrics.encode();
        assert!(text.contains(
            "tollgate_requests_total{route=\"demo\",version=\"default\",tenant=\"anonymous\",status_class=\"2xx\",error_type=\"\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "tollgate_gateway_overhead_seconds_bucket{route=\"demo\",version=\"default\",le=\"0.00005\"} 1\n"
        ), "{text}");
        // Every GenAI family is announced even before its first observation.
        for (name, _) in GENAI_FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{name}"
            );
        }
    }

    #[test]
    fn endpoint_health_is_one_per_provider_endpoint_and_survives_recompiles() {
        let metrics = Metrics::new();
        let health = metrics.endpoint("vllm", "10.0.0.1:8000");
        health.ejected_until.store(u64::MAX, Relaxed);
        // A recompile asks again by name and gets the same state: still ejected.
        let again = metrics.endpoint("vllm", "10.0.0.1:8000");
        assert!(Arc::ptr_eq(&health, &again));
        assert!(!Arc::ptr_eq(
            &health,
            &metrics.endpoint("vllm", "10.0.0.2:8000")
        ));
        assert!(
            metrics.encode().contains(
                "tollgate_endpoint_ejected{provider=\"vllm\",endpoint=\"10.0.0.1:8000\"} 1"
            )
        );
    }

    #[test]
    fn series_survive_being_asked_for_again() {
        let metrics = Metrics::new();
        assert!(Arc::ptr_eq(
            &metrics.version("a", "v1", "p", "m"),
            &metrics.version("a", "v1", "p", "m")
        ));
        assert!(!Arc::ptr_eq(
            &metrics.version("a", "v1", "p", "m"),
            &metrics.version("a", "v1", "p", "other-model")
        ));
        assert!(Arc::ptr_eq(
            &metrics.requests("a", "v1", "t"),
            &metrics.requests("a", "v1", "t")
        ));
    }

    #[test]
    fn in_flight_guard_counts_until_dropped() {
        let metrics = Arc::new(Metrics::new());
        let first = metrics.request_started();
        let second = metrics.request_started();
        assert_eq!(metrics.requests_in_flight(), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.requests_in_flight(), 0);
        assert!(metrics.encode().contains("tollgate_requests_in_flight 0\n"));
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
