//! The Prometheus text exposition (format 0.0.4) of every metric, written on scrape.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{
    EndpointHealth, GenAiMetrics, Metrics, ReloadResult, RequestCounters, SeriesKey,
    VersionMetrics, escape,
};
use crate::error::ErrorKind;

impl Metrics {
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

        let genai: Vec<Arc<GenAiMetrics>> = self
            .genai
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for (name, help) in GENAI_FAMILIES {
            family(&mut out, name, "histogram", help);
            for series in &genai {
                series.encode_genai(&mut out, name);
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
            "tollgate_finish_reasons_total",
            "counter",
            "Answers by the finish reason of their (first) choice, by route version.",
        );
        for version in &versions {
            version.encode_finish_reasons(&mut out);
        }

        let prompts: Vec<Arc<super::PromptMetrics>> = self
            .prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        family(
            &mut out,
            "tollgate_prompt_requests_total",
            "counter",
            "Requests that used a prompt template, by prompt id, prompt version, status class and error type.",
        );
        for series in &prompts {
            series.encode_requests(&mut out);
        }
        family(
            &mut out,
            "tollgate_prompt_tokens_total",
            "counter",
            "Tokens of requests that used a prompt template, by prompt id, prompt version and type.",
        );
        for series in &prompts {
            series.encode_tokens(&mut out);
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
            crate::telemetry::access_sink::dropped(),
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
pub(super) const GENAI_FAMILIES: [(&str, &str); 5] = [
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
