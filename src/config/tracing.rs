//! The `tracing:` section: OTLP span export, sampling and batching. Read at start-up only.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigDuration;

/// Span export to an OpenTelemetry collector. Without this section no spans are made, and
/// a valid inbound `traceparent`/`tracestate` is still passed upstream.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    pub otlp: OtlpConfig,
    /// Fraction of new traces recorded. A request that continues a trace follows its
    /// caller's sampled flag instead (parent-based sampling).
    #[serde(default = "default_ratio")]
    pub sampling_ratio: f64,
    /// Finished requests waiting for export; when full, their spans are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Most spans in one export call.
    #[serde(default = "default_batch")]
    pub max_batch_spans: usize,
    /// Most bytes of spans in one export call: collectors refuse larger messages (4 MiB by
    /// default for gRPC), and spans that carry prompts and answers are large.
    #[serde(default = "default_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Longest a finished span waits before it is exported.
    #[serde(default = "default_interval")]
    pub export_interval: ConfigDuration,
    /// `service.name` of the resource.
    #[serde(default = "default_service")]
    pub service_name: String,
}

/// Where and how spans are sent.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://` or `https://`. For `http/protobuf`, a bare `scheme://host:port` gets
    /// `/v1/traces` appended; a URL with a path is used as is.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Extra request headers (not secrets: these show in the config).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra request headers whose values are read from environment variables at start-up
    /// (collector API keys): header name -> variable name.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Time one export call may take before its spans are dropped.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

fn default_ratio() -> f64 {
    1.0
}

fn default_queue() -> usize {
    4096
}

fn default_batch() -> usize {
    512
}

fn default_batch_bytes() -> usize {
    3 * 1024 * 1024
}

fn default_interval() -> ConfigDuration {
    ConfigDuration::from_millis(1000)
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

fn default_service() -> String {
    "tollgate".into()
}
