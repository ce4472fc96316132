//! Prometheus metrics: lock-free recording on the hot path, text exposition on scrape.
//!
//! Series handles are created when a snapshot is compiled (one [`RouteMetrics`] per alias,
//! carried across reloads), so recording a request is a few relaxed atomic adds with no
//! lookup, hashing or locking. The exposition is Prometheus text format 0.0.4, which
//! `promtool check metrics` reads without lint findings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ErrorKind;
use crate::providers::endpoints::EndpointHealth;

/// Request duration buckets (seconds): sub-millisecond gateway answers up to long streams.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
    10.24, 20.48, 40.96, 81.92,
];

/// Time-to-first-token buckets (seconds), from the OTel GenAI conventions.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// A fixed-bucket histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos
            .fetch_add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Lowest and highest HTTP status codes recorded individually.
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;

/// Series for one version of one model alias. Requests that never resolved a route use the
/// alias and version `""`.
#[derive(Debug)]
pub struct RouteMetrics {
    /// `route="ALIAS",version="VERSION"`, escaped once.
    labels: Box<str>,
    statuses: Box<[AtomicU64]>,
    pub duration: Histogram,
    pub ttft: Histogram,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    /// Failed attempts at this version that were retried (here or at a fallback).
    retries: AtomicU64,
}

impl RouteMetrics {
    fn new(alias: &str, version: &str) -> Self {
        Self {
            labels: format!(
                "route=\"{}\",version=\"{}\"",
                escape(alias),
                escape(version)
            )
            .into(),
            statuses: (STATUS_MIN..=STATUS_MAX)
                .map(|_| AtomicU64::new(0))
                .collect(),
            duration: Histogram::new(DURATION_BUCKETS),
            ttft: Histogram::new(TTFT_BUCKETS),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    pub fn record_status(&self, status: u16) {
        let index = status.clamp(STATUS_MIN, STATUS_MAX) - STATUS_MIN;
        self.statuses[usize::from(index)].fetch_add(1, Relaxed);
    }

    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub fn record_tokens(&self, input: u64, output: u64) {
        self.input_tokens.fetch_add(input, Relaxed);
        self.output_tokens.fetch_add(output, Relaxed);
    }
}

/// (alias, version) of one set of route series.
type SeriesKey = (Box<str>, Box<str>);

/// All of the process's metrics. Lives as long as the process; snapshots hold handles into it.
#[derive(Debug)]
pub struct Metrics {
    routes: Mutex<BTreeMap<SeriesKey, Arc<RouteMetrics>>>,
    unrouted: Arc<RouteMetrics>,
    errors: Box<[AtomicU64]>,
    streams_active: AtomicU64,
    config_version: Mutex<Box<str>>,
    /// Reload outcomes: swapped, unchanged, failed.
    reloads: [AtomicU64; 3],
    /// Shadow copies not sent because too many were in flight.
    shadows_skipped: AtomicU64,
    /// Load and health of each provider endpoint, by (provider, endpoint).
    endpoints: Mutex<BTreeMap<SeriesKey, Arc<EndpointHealth>>>,
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

impl Metrics {
    pub fn new() -> Self {
        Self {
            routes: Mutex::new(BTreeMap::new()),
            unrouted: Arc::new(RouteMetrics::new("", "")),
            errors: ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            streams_active: AtomicU64::new(0),
            config_version: Mutex::new("".into()),
            reloads: Default::default(),
            shadows_skipped: AtomicU64::new(0),
            endpoints: Mutex::new(BTreeMap::new()),
        }
    }

    /// The series for `version` of `alias`, created on first use and kept across reloads.
    /// Called when a snapshot is compiled, never per request.
    pub fn route(&self, alias: &str, version: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry((alias.into(), version.into()))
            .or_insert_with(|| Arc::new(RouteMetrics::new(alias, version)))
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

    pub fn unrouted(&self) -> &Arc<RouteMetrics> {
        &self.unrouted
    }

    pub fn record_error(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Relaxed);
    }

    pub fn stream_started(&self) {
        self.streams_active.fetch_add(1, Relaxed);
    }

    pub fn stream_ended(&self) {
        self.streams_active.fetch_sub(1, Relaxed);
    }

    pub fn streams_active(&self) -> u64 {
        self.streams_active.load(Relaxed)
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
        let mut out = String::with_capacity(16 * 1024);
        let routes: Vec<Arc<RouteMetrics>> = {
            let map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::once(self.unrouted.clone())
                .chain(map.values().cloned())
                .collect()
        };

        family(
            &mut out,
            "tollgate_requests_total",
            "counter",
            "Requests answered, by model alias, route version and HTTP status.",
        );
        for route in &routes {
            for (i, count) in route.statuses.iter().enumerate() {
                let count = count.load(Relaxed);
                if count > 0 {
                    let status = usize::from(STATUS_MIN) + i;
                    let _ = writeln!(
                        out,
                        "tollgate_requests_total{{{},status=\"{status}\"}} {count}",
                        route.labels
                    );
                }
            }
        }

        family(
            &mut out,
            "tollgate_request_duration_seconds",
            "histogram",
            "Time from request arrival to the end of the response body.",
        );
        for route in &routes {
            route
                .duration
                .encode(&mut out, "tollgate_request_duration_seconds", &route.labels);
        }

        family(
            &mut out,
            "tollgate_time_to_first_token_seconds",
            "histogram",
            "Time from request arrival to the first streamed event or the whole answer.",
        );
        for route in &routes {
            route.ttft.encode(
                &mut out,
                "tollgate_time_to_first_token_seconds",
                &route.labels,
            );
        }

        family(
            &mut out,
            "tollgate_tokens_total",
            "counter",
            "Tokens reported by upstreams, by model alias, route version and direction.",
        );
        for route in &routes {
            for (kind, counter) in [
                ("input", &route.input_tokens),
                ("output", &route.output_tokens),
            ] {
                let _ = writeln!(
                    out,
                    "tollgate_tokens_total{{{},type=\"{kind}\"}} {}",
                    route.labels,
                    counter.load(Relaxed)
                );
            }
        }

        family(
            &mut out,
            "tollgate_upstream_retries_total",
            "counter",
            "Failed upstream attempts that were retried, by the route version that failed.",
        );
        for route in &routes {
            let retries = route.retries.load(Relaxed);
            if retries > 0 {
                let _ = writeln!(
                    out,
                    "tollgate_upstream_retries_total{{{}}} {retries}",
                    route.labels
                );
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

        family(
            &mut out,
            "tollgate_streams_active",
            "gauge",
            "Streaming responses in flight.",
        );
        let _ = writeln!(out, "tollgate_streams_active {}", self.streams_active());

        family(
            &mut out,
            "tollgate_access_log_dropped_total",
            "counter",
            "Access-log lines dropped because stdout could not keep up.",
        );
        let dropped = super::access_sink::dropped();
        let _ = writeln!(out, "tollgate_access_log_dropped_total {dropped}");

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
            family(&mut out, name, kind, help);
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

        family(
            &mut out,
            "tollgate_shadow_skipped_total",
            "counter",
            "Shadow copies not sent because the in-flight limit was reached.",
        );
        let _ = writeln!(
            out,
            "tollgate_shadow_skipped_total {}",
            self.shadows_skipped.load(Relaxed)
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
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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
    fn records_and_encodes_cumulative_buckets() {
        let metrics = Metrics::new();
        let route = metrics.route("demo", "default");
        route.record_status(200);
        route.record_status(200);
        route.record_status(404);
        route.duration.observe(Duration::from_micros(700));
        route.duration.observe(Duration::from_secs(100));
        let text = metrics.encode();
        assert!(text.contains(
            "tollgate_requests_total{route=\"demo\",version=\"default\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "tollgate_requests_total{route=\"demo\",version=\"default\",status=\"404\"} 1"
        ));
        assert!(
            text.contains(
                "tollgate_request_duration_seconds_bucket{route=\"demo\",version=\"default\",le=\"0.0005\"} 0"
            )
        );
        assert!(
            text.contains(
                "tollgate_request_duration_seconds_bucket{route=\"demo\",version=\"default\",le=\"0.001\"} 1"
            )
        );
        assert!(
            text.contains(
                "tollgate_request_duration_seconds_bucket{route=\"demo\",version=\"default\",le=\"81.92\"} 1"
            )
        );
        assert!(
            text.contains("tollgate_request_duration_seconds_bucket{route=\"demo\",version=\"default\",le=\"+Inf\"} 2")
        );
        assert!(text.contains(
            "tollgate_request_duration_seconds_count{route=\"demo\",version=\"default\"} 2"
        ));
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
    fn route_series_survive_being_asked_for_again() {
        let metrics = Metrics::new();
        metrics.route("a", "v1").record_status(200);
        assert!(Arc::ptr_eq(
            &metrics.route("a", "v1"),
            &metrics.route("a", "v1")
        ));
        assert!(
            metrics
                .encode()
                .contains("route=\"a\",version=\"v1\",status=\"200\"} 1")
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
