//! Telemetry: metrics, traces, logging set-up and the per-request access log.

pub mod access_log;
pub mod access_sink;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod trace;
