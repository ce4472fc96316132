//! The OTLP side of the trace tests: a real receiver (`tests/otlp/receiver.py`, on the
//! official `opentelemetry-proto` definitions) and gateways that export to it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use http::StatusCode;
use serde_json::Value;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

use super::*;

/// A caller's trace context, as tests send it.
pub const INBOUND_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const INBOUND_PARENT: &str = "00f067aa0ba902b7";
pub const INBOUND_STATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// A running `tests/otlp/receiver.py` and the span lines it prints.
pub struct Receiver {
    child: Child,
    pub grpc: String,
    pub http: String,
    pub lines: mpsc::Receiver<Value>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts the receiver, or `None` when the test venv is absent outside CI.
    pub fn start(args: &[&str]) -> Option<Receiver> {
        let root = env!("CARGO_MANIFEST_DIR");
        let python = format!("{root}/.venv/bin/python");
        if !std::path::Path::new(&python).is_file() {
            assert!(
                std::env::var_os("TOLLGATE_REQUIRE_TOOLS").is_none()
                    && std::env::var_os("CI").is_none(),
                "the test venv is required here; run scripts/test"
            );
            eprintln!("skipping: no .venv (scripts/test creates it)");
            return None;
        }
        let mut child = Command::new(python)
            .arg(format!("{root}/tests/otlp/receiver.py"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        let fields: HashMap<&str, &str> = ready
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        let (grpc, http) = (
            format!("http://{}", fields["grpc"]),
            format!("http://{}", fields["http"]),
        );
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Some(Receiver {
            child,
            grpc,
            http,
            lines,
        })
    }

    /// Span lines until `n` spans of trace `trace_id` have arrived.
    pub fn spans_of(&self, trace_id: &str, n: usize) -> Vec<Value> {
        let mut found = Vec::new();
        while found.len() < n {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("only {} of {n} spans arrived", found.len()));
            if line["trace_id"] == trace_id {
                found.push(line);
            }
        }
        found
    }

    /// Every span line that arrives until one of trace `trace_id` does (inclusive).
    pub fn spans_until(&self, trace_id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let line = self.lines.recv_timeout(WAIT).expect("spans in time");
            let done = line["trace_id"] == trace_id;
            if line.get("export").is_none() {
                all.push(line);
            }
            if done {
                return all;
            }
        }
    }
}

pub fn tracing_section(endpoint: &str, protocol: &str, extra: &str) -> String {
    format!(
        "tracing:\n  otlp:\n    endpoint: {endpoint}\n    protocol: {protocol}\n    timeout: 2s\n  export_interval: 20ms\n{extra}"
    )
}

pub fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span named {name} in {spans:#?}"))
}

pub fn traceparent(trace: &str, parent: &str, flags: &str) -> String {
    format!("00-{trace}-{parent}-{flags}")
}

/// Waits until the gateway counts at least `n` spans as accepted by the collector (it counts
/// them when the collector's answer arrives, after the receiver has printed them), and
/// returns the count.
pub async fn exported_at_least(metrics: &tollgate::telemetry::metrics::Metrics, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exported = metrics
            .traces
            .exported
            .load(std::sync::atomic::Ordering::Relaxed);
        if exported >= n {
            return exported;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway counted {exported} of {n} spans as exported"
        );
        tokio::task::yield_now().await;
    }
}

/// Sends a chat request with `headers` and checks it was answered 200; its body.
pub async fn chat_ok(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> String {
    let (status, _, answer) = call(gw.api_addr, post("/v1/chat/completions", body, headers)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// A mock upstream and a gateway with `tracing` (a whole `tracing:` section) and one open
/// route `m` to the mock, with `route_extra` lines under it.
pub async fn traced_gateway(tracing: &str, route_extra: &str) -> (MockServer, Gateway) {
    let upstream = mock().await;
    let extra = format!(
        "{tracing}auth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n{route_extra}"
    );
    let gw = gateway(&config(&upstream.base_url(), &extra)).await;
    (upstream, gw)
}

pub async fn mock() -> MockServer {
    MockServer::start(MockConfig {
        tokens: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}
