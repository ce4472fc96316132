//! Minimal HTTP client helpers for the mock's integration tests.

// Not every test binary uses every helper; helpers fail loudly by design.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Builds a JSON POST to `path` with extra headers.
pub fn post(path: &str, body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::post(path)
        .header("host", "mock")
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "mock")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends one request over a fresh HTTP/1.1 connection.
pub async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> hyper::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

/// Sends one request over a fresh prior-knowledge HTTP/2 (h2c) connection.
pub async fn send_h2(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> hyper::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

/// Reads the whole body as text; panics if the read fails.
pub async fn text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Splits an LF-terminated SSE body into its `data:` payloads.
pub fn data_events(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}
