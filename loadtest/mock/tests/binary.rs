//! The `tollgate-mock` binary: readiness line, flags, serving, and clean shutdown.

// Test helpers outside #[test] fns are not covered by clippy.toml's test allowances;
// failing loudly is exactly what they should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::{data_events, post, send, text};

/// Kills the child if an assertion fails before the clean shutdown.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and returns it with the address from its readiness line.
fn spawn_mock(args: &[&str]) -> (Reap, SocketAddr) {
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate-mock"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    (child, addr)
}

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    // A free port for --also-listen: bound here, released just before the mock binds it.
    let also: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let also_addr = also.to_string();
    let (mut child, addr) = spawn_mock(&[
        "--also-listen",
        &also_addr,
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        "3",
        "--ttft",
        "1ms",
        "--inter-token",
        "0ms",
        "--latency",
        "uniform:0ms..2ms",
        "--line-ending",
        "crlf",
        "--keepalive-comments",
        "--threads",
        "2",
    ]);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");

    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let raw = text(
        send(addr, post("/v1/chat/completions", body, &[]))
            .await
            .unwrap(),
    )
    .await;
    let lf = raw.replace("\r\n", "\n");
    assert!(lf.starts_with(": keep-alive\n\n"));
    assert_eq!(data_events(&lf).len(), 4);

    // The extra listener is the same server on another port.
    let raw = text(
        send(also, post("/v1/chat/completions", body, &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(data_events(&raw.replace("\r\n", "\n")).len(), 4);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn binary_rejects_bad_flags_with_exit_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate-mock"))
        .args(["--fault", "explode"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown fault"));
}

#[tokio::test]
async fn binary_vertex_flags() {
    let (_child, addr) = spawn_mock(&[
        "--listen",
        "127.0.0.1:0",
        "--vertex-api-key",
        "k1",
        "--gemini-outcome",
        "blocked=BLOCKLIST",
        "--gemini-tokens-per-event",
        "2",
    ]);
    let path = "/v1/publishers/google/models/gemini-2.5-flash:generateContent";
    let body = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let refused = send(addr, post(path, body, &[])).await.unwrap();
    assert_eq!(refused.status(), 401);
    let blocked = text(
        send(addr, post(path, body, &[("x-goog-api-key", "k1")]))
            .await
            .unwrap(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&blocked).unwrap();
    assert_eq!(v["promptFeedback"]["blockReason"], "BLOCKLIST");
    let streamed = text(
        send(
            addr,
            post(
                &path.replace(":generateContent", ":streamGenerateContent?alt=sse"),
                body,
                &[
                    ("x-goog-api-key", "k1"),
                    ("x-mock-gemini", "none"),
                    ("x-mock-tokens", "4"),
                ],
            ),
        )
        .await
        .unwrap(),
    )
    .await;
    // 4 tokens, 2 per event.
    assert_eq!(streamed.matches("data: ").count(), 2);
}

#[test]
fn binary_rejects_bad_gemini_outcome() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate-mock"))
        .args(["--gemini-outcome", "explode"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown gemini outcome"));
}
