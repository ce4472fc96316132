//! The series of one route version and of one (route, version, tenant): handles created when
//! a snapshot compiles, so recording a request is a few relaxed atomic adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::escape;
use super::histogram::{
    Histogram, OVERHEAD_BUCKETS, REQUEST_DURATION_BUCKETS, TIME_PER_TOKEN_BUCKETS, TOKEN_BUCKETS,
    TTFT_BUCKETS,
};
use crate::error::ErrorKind;
use crate::upstream::openai_view::FinishReason;

/// `gen_ai.operation.name` of the surfaces the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
}

impl Operation {
    pub const ALL: [Operation; 3] = [
        Operation::Chat,
        Operation::TextCompletion,
        Operation::Embeddings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// Slot of an outcome in per-error arrays: 0 for success, then one per error kind.
pub fn outcome_slot(error: Option<ErrorKind>) -> usize {
    error.map_or(0, |kind| kind.index() + 1)
}

/// The `error_type` of outcome slot `slot` (`None` for success).
fn outcome_kind(slot: usize) -> Option<ErrorKind> {
    slot.checked_sub(1)
        .and_then(|i| ErrorKind::ALL.get(i).copied())
}

const OUTCOMES: usize = ErrorKind::ALL.len() + 1;

/// The GenAI series of one operation on one route version.
#[derive(Debug)]
pub struct OperationMetrics {
    /// `gen_ai_operation_name=..,gen_ai_provider_name=..,gen_ai_request_model=..,route=..,version=..`
    labels: Box<str>,
    pub input_tokens: Histogram,
    pub output_tokens: Histogram,
    /// By outcome slot.
    duration: Box<[Histogram]>,
    pub ttft: Histogram,
    pub time_per_output_token: Histogram,
    /// One per upstream attempt, by outcome slot.
    attempt_duration: Box<[Histogram]>,
}

impl OperationMetrics {
    fn new(labels: String) -> Self {
        let by_outcome = || {
            (0..OUTCOMES)
                .map(|_| Histogram::seconds(REQUEST_DURATION_BUCKETS))
                .collect()
        };
        Self {
            labels: labels.into(),
            input_tokens: Histogram::counts(TOKEN_BUCKETS),
            output_tokens: Histogram::counts(TOKEN_BUCKETS),
            duration: by_outcome(),
            ttft: Histogram::seconds(TTFT_BUCKETS),
            time_per_output_token: Histogram::seconds(TIME_PER_TOKEN_BUCKETS),
            attempt_duration: by_outcome(),
        }
    }

    pub fn duration(&self, error: Option<ErrorKind>) -> &Histogram {
        &self.duration[outcome_slot(error)]
    }

    pub fn attempt_duration(&self, error: Option<ErrorKind>) -> &Histogram {
        &self.attempt_duration[outcome_slot(error)]
    }
}

/// Series for one version of one model alias. Requests that never resolved a route use the
/// alias and version `""`.
#[derive(Debug)]
pub struct VersionMetrics {
    /// `route="ALIAS",version="VERSION"`, escaped once.
    labels: Box<str>,
    /// Time inside the gateway minus time waiting on upstreams, to the response head.
    pub overhead: Histogram,
    attempts: AtomicU64,
    /// Failed attempts at this version that were retried (here or at a fallback).
    retries: AtomicU64,
    /// Attempts this version made as a fallback for another.
    fallbacks: AtomicU64,
    /// Answers by finish reason, in [`FINISH_REASONS`] order: canaries that cut answers
    /// short (`length`) or get filtered (`content_filter`) show here.
    finish_reasons: [AtomicU64; FINISH_REASONS.len()],
}

/// The `reason` label values of `tollgate_finish_reasons_total`: OpenAI's finish reasons,
/// and `other` for any a server invents (never its raw text: labels stay bounded).
pub const FINISH_REASONS: [&str; 6] = [
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
    "other",
];

fn route_labels(alias: &str, version: &str) -> String {
    format!(
        "route=\"{}\",version=\"{}\"",
        escape(alias),
        escape(version)
    )
}

/// The GenAI histograms of one route version as it is configured now: the provider kind and
/// model are labels, so a reload that changes them starts new series (the old ones stay, as
/// counters must) rather than mixing two models' figures.
#[derive(Debug)]
pub struct GenAiMetrics {
    operations: [OperationMetrics; 3],
}

impl GenAiMetrics {
    /// `provider` is the `gen_ai.provider.name`, `model` the model sent upstream.
    pub fn new(alias: &str, version: &str, provider: &str, model: &str) -> Self {
        let labels = route_labels(alias, version);
        Self {
            operations: Operation::ALL.map(|op| {
                OperationMetrics::new(format!(
                    "gen_ai_operation_name=\"{}\",gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\",{labels}",
                    op.as_str(),
                    escape(provider),
                    escape(model)
                ))
            }),
        }
    }

    pub fn operation(&self, op: Operation) -> &OperationMetrics {
        &self.operations[op as usize]
    }

    /// Writes every GenAI histogram of this version that has observations.
    pub(super) fn encode_genai(&self, out: &mut String, family: &str) {
        for op in &self.operations {
            let labels = &*op.labels;
            match family {
                "gen_ai_client_token_usage" => {
                    for (kind, h) in [("input", &op.input_tokens), ("output", &op.output_tokens)] {
                        if h.count() > 0 {
                            h.encode(
                                out,
                                family,
                                &format!("{labels},gen_ai_token_type=\"{kind}\""),
                            );
                        }
                    }
                }
                "gen_ai_server_request_duration" => {
                    encode_by_outcome(out, family, labels, &op.duration)
                }
                "gen_ai_client_operation_duration" => {
                    encode_by_outcome(out, family, labels, &op.attempt_duration);
                }
                "gen_ai_server_time_to_first_token" if op.ttft.count() > 0 => {
                    op.ttft.encode(out, family, labels);
                }
                "gen_ai_server_time_per_output_token" if op.time_per_output_token.count() > 0 => {
                    op.time_per_output_token.encode(out, family, labels);
                }
                _ => {}
            }
        }
    }
}

impl VersionMetrics {
    pub fn new(alias: &str, version: &str) -> Self {
        Self {
            labels: route_labels(alias, version).into(),
            overhead: Histogram::seconds(OVERHEAD_BUCKETS),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            finish_reasons: Default::default(),
        }
    }

    /// Counts an answer that ended with `reason`.
    pub fn record_finish(&self, reason: &FinishReason) {
        let slot = match reason {
            FinishReason::Stop => 0,
            FinishReason::Length => 1,
            FinishReason::ToolCalls => 2,
            FinishReason::ContentFilter => 3,
            FinishReason::FunctionCall => 4,
            FinishReason::Other(_) => 5,
        };
        self.finish_reasons[slot].fetch_add(1, Relaxed);
    }

    /// Writes this version's `tollgate_finish_reasons_total` lines.
    pub(super) fn encode_finish_reasons(&self, out: &mut String) {
        for (reason, count) in FINISH_REASONS.iter().zip(&self.finish_reasons) {
            let value = count.load(Relaxed);
            if value > 0 {
                let _ = writeln!(
                    out,
                    "tollgate_finish_reasons_total{{{},reason=\"{reason}\"}} {value}",
                    self.labels
                );
            }
        }
    }

    pub fn record_attempt(&self, fallback: bool) {
        self.attempts.fetch_add(1, Relaxed);
        if fallback {
            self.fallbacks.fetch_add(1, Relaxed);
        }
    }

    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub fn labels(&self) -> &str {
        &self.labels
    }

    /// Writes one line of a counter of this version (`attempts`, `retries` or `fallbacks`).
    pub(super) fn encode_counter(&self, out: &mut String, family: &str) {
        let counter = match family {
            "tollgate_upstream_attempts_total" => &self.attempts,
            "tollgate_upstream_retries_total" => &self.retries,
            _ => &self.fallbacks,
        };
        let value = counter.load(Relaxed);
        if value > 0 {
            let _ = writeln!(out, "{family}{{{}}} {value}", self.labels);
        }
    }
}

fn encode_by_outcome(out: &mut String, family: &str, labels: &str, by_outcome: &[Histogram]) {
    for (slot, h) in by_outcome.iter().enumerate() {
        if h.count() == 0 {
            continue;
        }
        match outcome_kind(slot) {
            None => h.encode(out, family, labels),
            Some(kind) => h.encode(
                out,
                family,
                &format!("{labels},error_type=\"{}\"", kind.code()),
            ),
        }
    }
}

/// Status classes counted: 1xx to 5xx.
const CLASSES: usize = 5;

/// Requests of one (route, version, tenant), by status class and error type.
#[derive(Debug)]
pub struct RequestCounters {
    /// `route="..",version="..",tenant=".."`, escaped once.
    labels: Box<str>,
    /// `CLASSES` rows of `OUTCOMES` counters.
    counts: Box<[AtomicU64]>,
}

impl RequestCounters {
    pub fn new(route: &str, version: &str, tenant: &str) -> Self {
        Self::labelled(format!(
            "route=\"{}\",version=\"{}\",tenant=\"{}\"",
            escape(route),
            escape(version),
            escape(tenant)
        ))
    }

    /// Counters under `labels` (already escaped), for a family other than requests per
    /// route version.
    pub(super) fn labelled(labels: String) -> Self {
        Self {
            labels: labels.into(),
            counts: (0..CLASSES * OUTCOMES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record(&self, status: u16, error: Option<ErrorKind>) {
        let class = usize::from(status / 100).clamp(1, CLASSES) - 1;
        self.counts[class * OUTCOMES + outcome_slot(error)].fetch_add(1, Relaxed);
    }

    pub(super) fn encode(&self, out: &mut String) {
        self.encode_as(out, "tollgate_requests_total");
    }

    /// Writes these counters as lines of `family`.
    pub(super) fn encode_as(&self, out: &mut String, family: &str) {
        for (i, count) in self.counts.iter().enumerate() {
            let count = count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let class = i / OUTCOMES + 1;
            let error = outcome_kind(i % OUTCOMES).map_or("", ErrorKind::code);
            let _ = writeln!(
                out,
                "{family}{{{},status_class=\"{class}xx\",error_type=\"{error}\"}} {count}",
                self.labels
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_class_and_error_type() {
        let counters = RequestCounters::new("m", "v1", "team-a");
        counters.record(200, None);
        counters.record(200, None);
        counters.record(200, Some(ErrorKind::UpstreamStreamInterrupted));
        counters.record(503, Some(ErrorKind::UpstreamConnect));
        counters.record(999, None);
        let mut out = String::new();
        counters.encode(&mut out);
        let base = "route=\"m\",version=\"v1\",tenant=\"team-a\"";
        assert!(
            out.contains(&format!(
                "tollgate_requests_total{{{base},status_class=\"2xx\",error_type=\"\"}} 2\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!("tollgate_requests_total{{{base},status_class=\"2xx\",error_type=\"upstream_stream_interrupted\"}} 1\n")), "{out}");
        assert!(out.contains(&format!("tollgate_requests_total{{{base},status_class=\"5xx\",error_type=\"upstream_unreachable\"}} 1\n")), "{out}");
        assert_eq!(out.lines().count(), 4, "{out}");
    }

    #[test]
    fn genai_series_carry_operation_provider_model_and_error_type() {
        let v = GenAiMetrics::new("m", "canary", "self_hosted", "llama-3");
        let chat = v.operation(Operation::Chat);
        chat.duration(None)
            .observe_duration(std::time::Duration::from_millis(30));
        chat.duration(Some(ErrorKind::UpstreamTimeout))
            .observe_duration(std::time::Duration::from_secs(5));
        chat.input_tokens.observe(12);
        let mut out = String::new();
        v.encode_genai(&mut out, "gen_ai_server_request_duration");
        v.encode_genai(&mut out, "gen_ai_client_token_usage");
        let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"self_hosted\",gen_ai_request_model=\"llama-3\",route=\"m\",version=\"canary\"";
        assert!(
            out.contains(&format!(
                "gen_ai_server_request_duration_count{{{labels}}} 1\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!("gen_ai_server_request_duration_count{{{labels},error_type=\"upstream_timeout\"}} 1\n")), "{out}");
        assert!(
            out.contains(&format!(
                "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"input\"}} 12\n"
            )),
            "{out}"
        );
        // Nothing observed, nothing written: no output-token or embeddings series.
        assert!(!out.contains("gen_ai_token_type=\"output\""), "{out}");
        assert!(!out.contains("embeddings"), "{out}");
    }
}
