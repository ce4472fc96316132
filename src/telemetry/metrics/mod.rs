//! Prometheus metrics: lock-free recording on the hot path, text exposition on scrape.
//!
//! Series handles are created when a snapshot is compiled (per route version, and per route
//! version and tenant) and carried across reloads, so recording a request is a few relaxed
//! atomic adds with no lookup, hashing, locking or allocation. The exposition is Prometheus
//! text format 0.0.4, which `promtool check metrics` reads without lint findings.

mod gauge;
mod histogram;
mod prompts;
mod series;
mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use gauge::ShardedGauge;
pub use histogram::Histogram;
pub use prompts::PromptMetrics;
pub use series::{GenAiMetrics, Operation, OperationMetrics, RequestCounters, VersionMetrics};

use crate::error::ErrorKind;
use crate::providers::endpoints::EndpointHealth;

/// Two names identifying a set of series (provider and endpoint, say).
type SeriesKey = (Box<str>, Box<str>);

/// What a version's GenAI series are keyed by: route, version, `gen_ai.provider.name`, model.
/// A reload that changes the provider kind or the model starts new series.
type GenAiKey = (Box<str>, Box<str>, Box<str>, Box<str>);

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
    versions: Mutex<BTreeMap<SeriesKey, Arc<VersionMetrics>>>,
    genai: Mutex<BTreeMap<GenAiKey, Arc<GenAiMetrics>>>,
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
    /// Series of each prompt version, by (prompt id, version).
    prompts: Mutex<BTreeMap<SeriesKey, Arc<PromptMetrics>>>,
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
            genai: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(BTreeMap::new()),
            unrouted: Arc::new(VersionMetrics::new("", "")),
            unauthenticated: Arc::new(RequestCounters::new("", "", "")),
            errors: ErrorKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            in_flight: ShardedGauge::default(),
            streams_active: ShardedGauge::default(),
            config_version: Mutex::new("".into()),
            reloads: Default::default(),
            shadows_skipped: AtomicU64::new(0),
            endpoints: Mutex::new(BTreeMap::new()),
            prompts: Mutex::new(BTreeMap::new()),
            traces: TraceExportCounters::default(),
        }
    }

    /// The series of `version` of `alias`, created on first use and kept across reloads.
    /// Called when a snapshot is compiled, never per request.
    pub fn version(&self, alias: &str, version: &str) -> Arc<VersionMetrics> {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions
            .entry((alias.into(), version.into()))
            .or_insert_with(|| Arc::new(VersionMetrics::new(alias, version)))
            .clone()
    }

    /// The GenAI series of `version` of `alias` while it sends `model` to a provider of kind
    /// `provider` (`gen_ai.provider.name`): created on first use, kept across reloads.
    pub fn genai(
        &self,
        alias: &str,
        version: &str,
        provider: &str,
        model: &str,
    ) -> Arc<GenAiMetrics> {
        let mut genai = self.genai.lock().unwrap_or_else(|e| e.into_inner());
        genai
            .entry((alias.into(), version.into(), provider.into(), model.into()))
            .or_insert_with(|| Arc::new(GenAiMetrics::new(alias, version, provider, model)))
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

    /// The series of version `version` of prompt `id`, created on first use and kept across
    /// reloads. Called when a snapshot is compiled.
    pub fn prompt(&self, id: &str, version: &str) -> Arc<PromptMetrics> {
        let mut prompts = self.prompts.lock().unwrap_or_else(|e| e.into_inner());
        prompts
            .entry((id.into(), version.into()))
            .or_insert_with(|| Arc::new(PromptMetrics::new(id, version)))
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
}

/// Escapes a label value per the text format.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use text::GENAI_FAMILIES;

    #[test]
    fn requests_and_histograms_appear_under_their_labels() {
        let metrics = Metrics::new();
        metrics
            .requests("demo", "default", "anonymous")
            .record(200, None);
        let version = metrics.version("demo", "default");
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
            &metrics.version("a", "v1"),
            &metrics.version("a", "v1")
        ));
        assert!(Arc::ptr_eq(
            &metrics.genai("a", "v1", "p", "m"),
            &metrics.genai("a", "v1", "p", "m")
        ));
        assert!(!Arc::ptr_eq(
            &metrics.genai("a", "v1", "p", "m"),
            &metrics.genai("a", "v1", "p", "other-model")
        ));
        assert!(Arc::ptr_eq(
            &metrics.requests("a", "v1", "t"),
            &metrics.requests("a", "v1", "t")
        ));
    }

    #[test]
    fn a_model_change_starts_genai_series_without_duplicating_any_sample() {
        let metrics = Metrics::new();
        // The same version before and after a reload that changed its upstream model.
        for model in ["llama-3.1", "llama-3.3"] {
            let version = metrics.version("m", "canary");
            version.record_attempt(false);
            version.overhead.observe(1_000);
            let genai = metrics.genai("m", "canary", "self_hosted", model);
            genai.operation(Operation::Chat).input_tokens.observe(5);
        }
        let text = metrics.encode();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            assert!(seen.insert(series.to_owned()), "twice: {series}\n{text}");
        }
        assert!(
            text.contains("tollgate_upstream_attempts_total{route=\"m\",version=\"canary\"} 2\n")
        );
        assert!(text.contains("gen_ai_request_model=\"llama-3.3\""));
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
