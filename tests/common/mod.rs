//! Shared helpers for the black-box tests: start a mock upstream and a gateway, talk HTTP.

// Not every test binary uses every helper; helpers fail loudly by design.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod limits;
pub mod otlp;
pub mod prompts;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tollgate::config::Config;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

/// Upper bound on anything a test waits for; reaching it is a failure, never a sync point.
pub const WAIT: Duration = Duration::from_secs(10);

/// Writes `content` to a file of this test process and returns its path. Tests run in
/// parallel, so every call gets its own name.
pub fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("tollgate-test-{}-{n}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

/// A config with both listeners on ephemeral loopback ports, auth off, one openai provider
/// `mock` at `mock_url` and one alias `m` on it, plus whatever `extra` adds at the top level.
pub fn config(mock_url: &str, extra: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  header_read_timeout: 1s\nadmin:\n  listen: 127.0.0.1:0\n\
         providers:\n  mock:\n    type: openai\n    base_url: {mock_url}\n  demo:\n    type: demo\n    ttft: 0ms\n    inter_token: 0ms\n    tokens: 5\n\
         {extra}"
    )
}

/// The default routes for [`config`] with auth off.
pub const OPEN_ROUTES: &str =
    "auth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n  d:\n    provider: demo\n";

pub async fn gateway(yaml: &str) -> Gateway {
    let config = Config::from_yaml(yaml).unwrap();
    Gateway::start(&config, yaml).await.unwrap()
}

/// Why a gateway with this config refuses to start (the test fails if it starts).
pub async fn start_error(yaml: &str) -> String {
    let config = Config::from_yaml(yaml).unwrap();
    match Gateway::start(&config, yaml).await {
        Ok(_) => panic!("the gateway started"),
        Err(err) => err.to_string(),
    }
}

/// A mock with `mock_config` and a gateway in front of it with [`OPEN_ROUTES`].
/// A mock upstream that answers every request with HTTP `code` (an OpenAI error body).
pub async fn mock_failing_with(code: u16) -> MockServer {
    MockServer::start(MockConfig {
        fault: Some(tollgate_mock::Fault::Status {
            code,
            retry_after: None,
            body: None,
        }),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

pub async fn mock_and_gateway(mock_config: MockConfig) -> (MockServer, Gateway) {
    mock_and_gateway_with(mock_config, OPEN_ROUTES).await
}

pub async fn mock_and_gateway_with(mock_config: MockConfig, extra: &str) -> (MockServer, Gateway) {
    let mock = MockServer::start(mock_config).await.unwrap();
    let gateway = gateway(&config(&mock.base_url(), extra)).await;
    (mock, gateway)
}

/// A JSON POST; `headers` replace the defaults of the same name.
pub fn post(path: &str, body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::post(path)
        .header("host", "tollgate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    request
}

pub fn get(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path).header("host", "tollgate");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// Sends one request over a fresh HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("response in time")
        .unwrap()
}

/// Sends a request and reads the whole answer.
pub async fn call(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let response = send(addr, req).await;
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// POSTs a chat request to the gateway's API.
pub async fn chat(gateway: &Gateway, body: &str) -> (StatusCode, HeaderMap, String) {
    call(gateway.api_addr, post("/v1/chat/completions", body, &[])).await
}

/// Opens a chat stream on the gateway at `addr` and returns its body, after checking 200.
pub async fn open_stream(addr: SocketAddr, body: &str) -> Incoming {
    let response = send(addr, post("/v1/chat/completions", body, &[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

/// The next data frame of a body, or `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("frame in time")?;
        if let Ok(data) = frame.expect("body frame").into_data() {
            return Some(data);
        }
    }
}

/// Reads a body to its end, one element per frame.
pub async fn all_chunks(body: &mut Incoming) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    while let Some(chunk) = next_chunk(body).await {
        chunks.push(chunk);
    }
    chunks
}

/// The `data:` payloads of an SSE text with LF line endings.
pub fn data_events(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect()
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// Asserts an OpenAI error body with the given `error.code` and returns its JSON.
/// Asserts `body` is a Google-format error with this `code` and `status` and a message;
/// returns it.
pub fn assert_google_error(body: &str, code: u16, status: &str) -> serde_json::Value {
    let value = json(body);
    assert_eq!(value["error"]["code"], code, "{body}");
    assert_eq!(value["error"]["status"], status, "{body}");
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    value
}

pub fn assert_openai_error(body: &str, code: &str) -> serde_json::Value {
    let value = json(body);
    let error = &value["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].as_str().is_some(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    value
}

/// Reads the admin metrics text.
pub async fn metrics(gateway: &Gateway) -> String {
    call(gateway.admin_addr, get("/metrics", &[])).await.2
}

/// The value of one sample line in a metrics text, or 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn sum_where(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (set, value) = rest.rsplit_once("} ")?;
            let matches = labels
                .iter()
                .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            matches.then(|| value.trim().parse::<f64>().unwrap())
        })
        .sum()
}

/// Waits until the gateway's in-flight stream gauge is back to zero.
pub async fn streams_drained(gateway: &Gateway) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while gateway.shared.metrics.streams_active() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams never drained"
        );
        tokio::task::yield_now().await;
    }
}

/// Runs a program to completion with `stdin`; returns its exit code, stdout and stderr.
pub fn run_process(program: &std::path::Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads what the server sends on a raw connection until it closes it.
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("server closed in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}
