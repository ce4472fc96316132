//! The upstream client: keep-alive pooling, HTTPS with an extra CA, HTTP/2 by ALPN or h2c.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::*;
use http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

fn gateway_yaml(base_url: &str, provider_extra: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  workers: 1\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  mock:\n    type: openai\n    base_url: {base_url}\n{provider_extra}\
         routes:\n  m:\n    provider: mock\n"
    )
}

#[tokio::test]
async fn sequential_requests_reuse_one_pooled_connection() {
    let mock = MockServer::start(MockConfig {
        tokens: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = gateway(&gateway_yaml(&mock.base_url(), "")).await;
    for body in [
        CHAT,
        CHAT,
        r#"{"model":"m","stream":true}"#,
        CHAT,
        r#"{"model":"m","stream":true}"#,
    ] {
        let (status, _, _) = chat(&gw, body).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(mock.stats().requests(), 5);
    assert_eq!(
        mock.stats().connections(),
        1,
        "keep-alive: one upstream connection for all"
    );
}

#[tokio::test]
async fn http2_setting_speaks_h2c_to_a_plain_upstream() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = gateway(&gateway_yaml(&mock.base_url(), "    http: http2\n")).await;
    let (status, _, body) = chat(&gw, r#"{"model":"m","stream":true}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        mock.stats().last_request().unwrap().version,
        http::Version::HTTP_2
    );
}

#[tokio::test]
async fn http2_requests_are_spread_over_the_configured_connections() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let extra = "    http: http2\n    http2_connections: 3\n";
    let gw = gateway(&gateway_yaml(&mock.base_url(), extra)).await;
    for _ in 0..7 {
        let (status, _, body) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // One worker, three clients in turn: each opened its one HTTP/2 connection and kept it.
    assert_eq!(mock.stats().requests(), 7);
    assert_eq!(mock.stats().connections(), 3);

    let err = start_error(&gateway_yaml(
        &mock.base_url(),
        "    http2_connections: 0\n",
    ))
    .await;
    assert!(err.contains("providers.mock.http2_connections"), "{err}");
}

/// A TLS front for the mock, with a certificate from a CA made for this test.
struct TlsFront {
    addr: SocketAddr,
    ca_pem: String,
    _tasks: JoinSet<()>,
}

async fn tls_front(backend: SocketAddr, alpn: &[&[u8]]) -> TlsFront {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsFront {
        addr,
        ca_pem: ca.pem(),
        _tasks: tasks,
    }
}

fn write_ca(pem: &str, name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-ca-{}-{name}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

/// A mock behind a TLS front offering `alpn`, and a gateway that trusts the front's CA.
async fn behind_tls(
    mock: MockConfig,
    alpn: &[&[u8]],
    name: &str,
) -> (MockServer, TlsFront, Gateway) {
    let mock = MockServer::start(mock).await.unwrap();
    let front = tls_front(mock.addr(), alpn).await;
    let ca = write_ca(&front.ca_pem, name);
    let yaml = gateway_yaml(
        &format!("https://{}/v1", front.addr),
        &format!("    ca_file: {}\n", ca.display()),
    );
    let gw = gateway(&yaml).await;
    std::fs::remove_file(ca).unwrap();
    (mock, front, gw)
}

#[tokio::test]
async fn https_upstream_with_extra_ca_negotiates_http2_by_alpn() {
    let config = MockConfig {
        tokens: 4,
        ..MockConfig::default()
    };
    let (mock, _front, gw) = behind_tls(config, &[b"h2", b"http/1.1"], "h2").await;
    let (status, _, body) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        mock.stats().last_request().unwrap().version,
        http::Version::HTTP_2
    );
    let (status, _, body) = chat(&gw, r#"{"model":"m","stream":true}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data_events(&body).len(), 5, "{body}");
}

#[tokio::test]
async fn https_upstream_without_h2_falls_back_to_http1() {
    let (mock, _front, gw) = behind_tls(MockConfig::default(), &[b"http/1.1"], "h1").await;
    let (status, _, body) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        mock.stats().last_request().unwrap().version,
        http::Version::HTTP_11
    );
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_refused() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let front = tls_front(mock.addr(), &[b"http/1.1"]).await;
    let gw = gateway(&gateway_yaml(&format!("https://{}/v1", front.addr), "")).await;
    let (status, _, body) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_openai_error(&body, "upstream_unreachable");
    assert_eq!(mock.stats().requests(), 0);
}

#[tokio::test]
async fn bad_ca_file_fails_compile_naming_the_key() {
    let path = write_ca("not a certificate", "bad");
    let yaml = gateway_yaml(
        "https://127.0.0.1:1/v1",
        &format!("    ca_file: {}\n", path.display()),
    );
    let err = start_error(&yaml).await;
    assert!(err.contains("providers.mock.ca_file"), "{err}");
    std::fs::remove_file(path).unwrap();
}

/// An upstream that answers each connection once, with keep-alive framing, then closes it:
/// what a server with a short keep-alive timeout does to a pooled connection.
async fn answer_once_then_close() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>, JoinSet<()>)
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the request's body (announced by content-length) is in.
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if seen.len() >= head_end + 4 + length {
                        break;
                    }
                }
            }
            let body = r#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            // Dropping the stream closes the connection the gateway has just pooled.
        }
    });
    (addr, accepted, tasks)
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced() {
    let (addr, accepted, _server) = answer_once_then_close().await;
    let gw = gateway(&gateway_yaml(&format!("http://{addr}/v1"), "")).await;
    for round in 1..=3 {
        let (status, _, body) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        assert_eq!(json(&body)["usage"]["total_tokens"], 2);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one new connection per request"
    );
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it
/// hangs until the client gives up, as with an unreachable host.
async fn saturated_listener() -> (SocketAddr, socket2::Socket, Vec<tokio::net::TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue until a connect no longer completes (the kernel keeps backlog + 1).
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(std::time::Duration::from_millis(300), connect).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    assert!(
        !fillers.is_empty() && fillers.len() < 8,
        "the accept queue filled up"
    );
    (addr, socket, fillers)
}

#[tokio::test]
async fn connect_timeout_gives_502_without_waiting_for_first_token() {
    let (addr, _listener, _fillers) = saturated_listener().await;
    let yaml = gateway_yaml(&format!("http://{addr}/v1"), "    connect_timeout: 200ms\n").replace(
        "    provider: mock\n",
        "    provider: mock\n    timeouts: {first_token: 30s, idle: 30s, total: 60s}\n",
    );
    let gw = gateway(&yaml).await;
    let started = std::time::Instant::now();
    let (status, _, body) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_openai_error(&body, "upstream_unreachable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "cut by the 200 ms connect timeout"
    );
}
