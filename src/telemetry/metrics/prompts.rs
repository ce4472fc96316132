//! Per prompt version series: requests by outcome and tokens, so a prompt canary can be
//! compared with the version it may replace. Only configured ids and versions get series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{RequestCounters, escape};
use crate::error::ErrorKind;

/// The series of one prompt version.
#[derive(Debug)]
pub struct PromptMetrics {
    labels: Box<str>,
    requests: RequestCounters,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

impl PromptMetrics {
    pub fn new(prompt: &str, version: &str) -> Self {
        let labels = format!(
            "prompt=\"{}\",prompt_version=\"{}\"",
            escape(prompt),
            escape(version)
        );
        Self {
            requests: RequestCounters::labelled(labels.clone()),
            labels: labels.into(),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
        }
    }

    /// One finished request that used this version.
    pub fn record(&self, status: u16, error: Option<ErrorKind>, tokens: Option<(u64, u64)>) {
        self.requests.record(status, error);
        if let Some((input, output)) = tokens {
            self.input_tokens.fetch_add(input, Relaxed);
            self.output_tokens.fetch_add(output, Relaxed);
        }
    }

    pub(super) fn encode_requests(&self, out: &mut String) {
        self.requests
            .encode_as(out, "tollgate_prompt_requests_total");
    }

    pub(super) fn encode_tokens(&self, out: &mut String) {
        for (kind, count) in [
            ("input", &self.input_tokens),
            ("output", &self.output_tokens),
        ] {
            let _ = writeln!(
                out,
                "tollgate_prompt_tokens_total{{{},type=\"{kind}\"}} {}",
                self.labels,
                count.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_tokens_carry_the_prompt_version() {
        let m = PromptMetrics::new("answer", "2");
        m.record(200, None, Some((10, 4)));
        m.record(400, Some(ErrorKind::InvalidPromptVariable), None);
        let mut out = String::new();
        m.encode_requests(&mut out);
        m.encode_tokens(&mut out);
        assert!(out.contains("tollgate_prompt_requests_total{prompt=\"answer\",prompt_version=\"2\",status_class=\"2xx\",error_type=\"\"} 1\n"), "{out}");
        assert!(
            out.contains("status_class=\"4xx\",error_type=\"invalid_prompt_variable\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("tollgate_prompt_tokens_total{prompt=\"answer\",prompt_version=\"2\",type=\"input\"} 10\n"), "{out}");
        assert!(out.contains("type=\"output\"} 4\n"), "{out}");
    }
}
