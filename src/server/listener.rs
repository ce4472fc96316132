//! One listener's accept loop and graceful drain. The API listener serves HTTP/1.1 with the
//! gateway's own connection loop (`h1`) and hands HTTP/2 (prior knowledge) to hyper; the
//! admin listener serves both through hyper.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::h1;
use super::inbound::InboundBody;
use super::prefixed::Prefixed;
use crate::body::GatewayBody;
use crate::config::ServerConfig;
use crate::telemetry::metrics::Metrics;

/// Per-connection protocol limits, from `server` config.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl From<&ServerConfig> for ConnectionLimits {
    fn from(cfg: &ServerConfig) -> Self {
        Self {
            max_header_bytes: cfg.max_header_bytes,
            header_read_timeout: cfg.header_read_timeout.0,
            shutdown_grace: cfg.shutdown_grace.0,
        }
    }
}

/// The connection preface every HTTP/2 prior-knowledge client sends first (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's default of 100 header slots lives on the stack; a larger cap moves them to the
    // heap on every request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    builder
}

/// Serves the API: HTTP/1.1 by `h1`, HTTP/2 by hyper.
pub async fn serve_api<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<InboundBody>, Response = Response<GatewayBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let h2 = Arc::new(builder(limits).http2_only());
    let stop = shutdown.clone();
    accept_loop(listener, limits, shutdown, move |stream, graceful| {
        let (service, metrics, stop, h2) =
            (service.clone(), metrics.clone(), stop.clone(), h2.clone());
        let watcher = graceful.watcher();
        async move {
            // One deadline for the first head, sniffing included.
            let head_deadline = tokio::time::Instant::now() + limits.header_read_timeout;
            let Some((first, is_h2)) = sniff(&stream, head_deadline, stop.clone()).await else {
                return;
            };
            if is_h2 {
                let service = service.map_request(|r: Request<Incoming>| r.map(InboundBody::from));
                let io = TokioIo::new(Prefixed::new(first, stream));
                let conn = h2.serve_connection(io, TowerToHyperService::new(service));
                if let Err(err) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %err, "h2 connection ended with an error");
                }
            } else {
                h1::serve(stream, first, head_deadline, service, limits, metrics, stop).await;
            }
        }
    })
    .await;
}

/// Reads a connection's first bytes, enough to tell HTTP/2's preface from an HTTP/1 request.
/// `None`: the client closed or sent nothing in time, or the gateway is draining.
async fn sniff(
    stream: &TcpStream,
    deadline: tokio::time::Instant,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(BytesMut, bool)> {
    let mut buf = BytesMut::with_capacity(h1::READ_CHUNK);
    let reading = async {
        loop {
            stream.readable().await.ok()?;
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            }
            let seen = buf.len().min(H2_PREFACE.len());
            if buf[..seen] != H2_PREFACE[..seen] {
                return Some(false);
            }
            if seen == H2_PREFACE.len() {
                return Some(true);
            }
        }
    };
    let is_h2 = tokio::select! {
        read = tokio::time::timeout_at(deadline, reading) => read.ok().flatten()?,
        _ = shutdown.wait_for(|stop| *stop) => return None,
    };
    Some((buf, is_h2))
}

/// Serves `service` with hyper, HTTP/1.1 and h2 (the admin listener).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<GatewayBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(builder(limits));
    accept_loop(listener, limits, shutdown, move |stream, graceful| {
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
    })
    .await;
}

/// Accepts connections until `shutdown` turns true, then drains them: hyper's connections by
/// `GracefulShutdown`, the lean ones by watching `shutdown` themselves.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    mut serve_one: F,
) where
    F: FnMut(TcpStream, &GracefulShutdown) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
            // Reap finished connection tasks so the set does not grow with every connection.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: say so and keep serving the rest.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_one(stream, &graceful));
    }
    drop(listener);
    let drained = async {
        let hyper_drained = graceful.shutdown();
        let all_ended = async { while connections.join_next().await.is_some() {} };
        futures_util::future::join(hyper_drained, all_ended).await;
    };
    if tokio::time::timeout(limits.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "shutdown grace period over; cutting connections"
        );
    }
    connections.shutdown().await;
}
