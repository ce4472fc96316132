//! Listeners and connections: accept, serve HTTP/1.1 and h2, drain on shutdown.

mod listener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::error::RescueLayer;
use crate::snapshot::{self, CompileError, Live};
use crate::telemetry::metrics::Metrics;

pub use listener::ConnectionLimits;

/// The composed API service type (see `stack::api`).
pub type ApiStack = crate::telemetry::access_log::AccessLog<
    crate::error::Rescue<
        crate::snapshot::LoadSnapshot<crate::auth::Authenticate<crate::api::ApiService>>,
    >,
>;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config does not compile: {0}")]
    Compile(#[from] CompileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// State shared with the admin listener.
pub struct Shared {
    pub live: Live,
    pub metrics: Arc<Metrics>,
    /// True once the first snapshot is compiled and the listeners are up; false while draining.
    pub ready: AtomicBool,
}

/// A running gateway: its bound addresses and the handle that stops it.
pub struct Gateway {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    api_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Gateway {
    /// Compiles `config`, binds both listeners and starts serving.
    pub async fn start(config: &Config, text: &str) -> Result<Gateway, StartError> {
        let metrics = Arc::new(Metrics::new());
        let snapshot = snapshot::compile(config, text, &metrics)?;
        metrics.set_config_version(&snapshot.version);
        let live: Live = Arc::new(ArcSwap::from_pointee(snapshot));
        let shared = Arc::new(Shared {
            live: live.clone(),
            metrics: metrics.clone(),
            ready: AtomicBool::new(false),
        });

        let api_listener = bind(config.server.listen).await?;
        let admin_listener = bind(config.admin.listen).await?;
        let api_addr = api_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen,
                source,
            })?;

        let limits = ConnectionLimits::from(&config.server);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let api_service = crate::stack::api(live, metrics);
        let api_task = tokio::spawn(listener::serve(
            api_listener,
            api_service,
            limits,
            shutdown_rx.clone(),
        ));
        let admin_service = tower::ServiceBuilder::new()
            .layer(RescueLayer)
            .service(admin::AdminService::new(shared.clone()));
        let admin_task = tokio::spawn(listener::serve(
            admin_listener,
            admin_service,
            limits,
            shutdown_rx,
        ));
        shared.ready.store(true, Ordering::Release);
        tracing::info!(%api_addr, %admin_addr, config_version = %shared.live.load().version, "tollgate listening");
        Ok(Gateway {
            api_addr,
            admin_addr,
            shared,
            shutdown,
            api_task,
            admin_task,
        })
    }

    /// Stops accepting, lets in-flight requests and streams finish within the configured
    /// grace period, cuts what is left, and returns when every connection task has ended.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        let _ = self.api_task.await;
        let _ = self.admin_task.await;
        tracing::info!("tollgate stopped");
    }
}
