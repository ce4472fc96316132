//! The listener, its connection tasks, and the handle tests hold ([`MockServer`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::MockConfig;
use crate::google_auth::{AuthState, TokenFailure, TokenHold};
use crate::handler::{Shared, handle};
use crate::stats::MockStats;

/// A running mock server. Dropping it stops the accept loop and every connection task.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    stats: Arc<MockStats>,
    auth: Arc<AuthState>,
    /// Dropping the sender is the shutdown signal every task watches.
    shutdown: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` (port 0 picks a free port). Must be called inside a tokio runtime.
    /// Fails with `InvalidInput` if the token endpoint's public key does not parse.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(MockStats::default());
        let shared = Arc::new(Shared::new(config, stats.clone(), addr)?);
        let auth = shared.auth.clone();
        let (tx, rx) = watch::channel(());
        let task = tokio::spawn(accept_loop(listener, shared, rx));
        Ok(MockServer {
            addr,
            stats,
            auth,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, the base URL an OpenAI client expects.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Live counters and the request log.
    pub fn stats(&self) -> &Arc<MockStats> {
        &self.stats
    }

    /// `http://ADDR`, the `base_url` a Vertex client uses in place of Google's host.
    pub fn vertex_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/token` (the configured path): the `token_uri` to put in a key file
    /// (see `fixtures::service_account_json`).
    pub fn token_url(&self) -> String {
        format!("http://{}{}", self.addr, self.auth.token_path())
    }

    /// The `aud` the token endpoint requires: `token_url()` unless configured otherwise.
    pub fn token_audience(&self) -> &str {
        self.auth.audience()
    }

    /// `ADDR` (`host:port`), the metadata server's address.
    pub fn metadata_host(&self) -> String {
        self.addr.to_string()
    }

    /// Makes the next `n` token requests (token and metadata endpoints alike) fail with
    /// `failure`, replacing any count still pending; 0 clears it.
    pub fn fail_next_token_requests(&self, n: u64, failure: TokenFailure) {
        self.auth.fail_next(n, failure);
    }

    /// Holds every token answer until the returned guard is dropped: requests arrive (and
    /// are counted) but wait, so a test can pile gateway requests behind one refresh.
    pub fn hold_token_responses(&self) -> TokenHold {
        self.auth.hold()
    }

    /// Invalidates every token issued so far: the Vertex paths answer 401 to them.
    pub fn revoke_issued_tokens(&self) {
        self.auth.revoke_all();
    }

    /// Every token issued and not revoked, in no particular order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.auth.issued_tokens()
    }

    /// Stops accepting, ends every connection, and waits for the accept loop to finish.
    pub async fn shutdown(mut self) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            // The only failure is the task having been cancelled, which is also "stopped".
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            // Aborting drops the JoinSet, which aborts the connection tasks too.
            task.abort();
        }
    }
}

/// Resolves when the shutdown sender is dropped.
async fn stopped(mut rx: watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, rx: watch::Receiver<()>) {
    let builder = Arc::new(auto::Builder::new(ShutdownExecutor { rx: rx.clone() }));
    let mut connections = JoinSet::new();
    let stop = stopped(rx.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.stats.connection_accepted();
                    connections.spawn(serve(stream, builder.clone(), shared.clone(), rx.clone()));
                }
                // Typically EMFILE under load: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve(
    stream: TcpStream,
    builder: Arc<auto::Builder<ShutdownExecutor>>,
    shared: Arc<Shared>,
    rx: watch::Receiver<()>,
) {
    // Without this, Nagle delays each small SSE event behind the previous one's ACK.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(req, shared.clone()));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Connection errors (resets, injected faults) are expected and not reported.
        _ = connection => {}
        () = stopped(rx) => {}
    }
}

/// Spawns hyper's HTTP/2 stream tasks so that they, too, end on shutdown.
#[derive(Clone, Debug)]
struct ShutdownExecutor {
    rx: watch::Receiver<()>,
}

impl<F> hyper::rt::Executor<F> for ShutdownExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let rx = self.rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = future => {}
                () = stopped(rx) => {}
            }
        });
    }
}
