//! Listeners and connections: accept, serve HTTP/1.1 and h2, drain on shutdown.

pub mod h1;
mod inbound;
mod listener;
mod prefixed;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin;
use crate::config::Config;
use crate::error::RescueLayer;
use crate::reload::{self, ReloadStatus, Reloader};
use crate::snapshot::{self, CompileError, Live};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::Tracer;

pub use inbound::InboundBody;
pub use listener::ConnectionLimits;
pub use workers::{worker_count, worker_index};

use workers::{Worker, bind_reuseport};

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
    #[error("admin token: {0}")]
    AdminToken(String),
    #[error("config: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// State shared with the admin listener and the reloader.
pub struct Shared {
    pub live: Live,
    pub metrics: Arc<Metrics>,
    /// True once the first snapshot is compiled and the listeners are up; false while draining.
    pub ready: AtomicBool,
    pub reloads: ReloadStatus,
    pub reloader: Reloader,
    /// The config file reloads read; `None` when the config came from elsewhere.
    pub config_path: Option<PathBuf>,
    /// SHA-256 of the admin token; `None` turns `POST /admin/reload` off.
    pub admin_token: Option<[u8; 32]>,
}

/// A running gateway: its bound addresses and the handle that stops it. Dropping it without
/// `shutdown` still tells every worker to stop.
pub struct Gateway {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    workers: Vec<Worker>,
}

fn bind_error(addr: SocketAddr) -> impl Fn(std::io::Error) -> StartError {
    move |source| StartError::Bind { addr, source }
}

impl Gateway {
    /// Compiles `config`, binds the listeners and starts the worker threads. Returns once
    /// every socket is bound; serving runs on the gateway's own threads, not the caller's.
    /// Without a config file there is nothing to reload; see [`Gateway::start_from_file`].
    pub async fn start(config: &Config, text: &str) -> Result<Gateway, StartError> {
        Self::start_with(config, text, None).await
    }

    /// Like [`Gateway::start`] for a config read from `path`, which is then watched: a change
    /// to it, SIGHUP (see the binary) or `POST /admin/reload` reloads it live.
    pub async fn start_from_file(
        config: &Config,
        text: &str,
        path: &std::path::Path,
    ) -> Result<Gateway, StartError> {
        Self::start_with(config, text, Some(path.to_path_buf())).await
    }

    async fn start_with(
        config: &Config,
        text: &str,
        config_path: Option<PathBuf>,
    ) -> Result<Gateway, StartError> {
        let metrics = Arc::new(Metrics::new());
        let snapshot = snapshot::compile(config, text, &metrics)?;
        metrics.set_config_version(&snapshot.version);
        let live: Live = Arc::new(ArcSwap::from_pointee(snapshot));
        let (reloader, triggers) = reload::channel();
        let shared = Arc::new(Shared {
            live: live.clone(),
            metrics: metrics.clone(),
            ready: AtomicBool::new(false),
            reloads: ReloadStatus::default(),
            reloader: reloader.clone(),
            config_path: config_path.clone(),
            admin_token: admin::read_token(&config.admin).map_err(StartError::AdminToken)?,
        });

        let count = worker_count(config.server.workers);
        let (api, admin) = (config.server.listen, config.admin.listen);
        let api_sockets = bind_reuseport(api, count).map_err(bind_error(api))?;
        let admin_sockets = bind_reuseport(admin, 1).map_err(bind_error(admin))?;
        let local = |sockets: &[std::net::TcpListener], addr| {
            sockets
                .first()
                .map_or(Ok(addr), |s| s.local_addr())
                .map_err(bind_error(addr))
        };
        let api_addr = local(&api_sockets, api)?;
        let admin_addr = local(&admin_sockets, admin)?;

        let limits = ConnectionLimits::from(&config.server);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut workers = Vec::with_capacity(count + 3);
        let tracer = match &config.tracing {
            None => None,
            Some(tracing) => {
                let (tracer, exporter) =
                    Tracer::new(tracing, count, metrics.clone()).map_err(StartError::Config)?;
                // The exporter ends once every API worker (and so every tracer) is gone,
                // after sending what is left. Its queue has one shard per worker.
                let worker = Worker::spawn("tollgate-otlp".into(), 0, move || exporter.run());
                workers.push(worker.map_err(bind_error(api_addr))?);
                Some(tracer)
            }
        };
        for (index, socket) in api_sockets.into_iter().enumerate() {
            let service = crate::stack::api(live.clone(), metrics.clone(), tracer.clone());
            let (stop, metrics) = (shutdown_rx.clone(), metrics.clone());
            let name = format!("tollgate-worker-{index}");
            let worker = Worker::spawn(name, index, move || async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => {
                        listener::serve_api(listener, service, limits, metrics, stop).await;
                    }
                    Err(err) => tracing::error!(error = %err, "worker cannot use its listener"),
                }
            });
            workers.push(worker.map_err(bind_error(api_addr))?);
        }
        drop(tracer);
        // The admin listener has a thread of its own, so health checks and scrapes answer
        // even when every worker is saturated.
        let admin_service = tower::ServiceBuilder::new()
            .layer(RescueLayer)
            .service(admin::AdminService::new(shared.clone()));
        for socket in admin_sockets {
            let (stop, admin_service) = (shutdown_rx.clone(), admin_service.clone());
            let worker = Worker::spawn("tollgate-admin".into(), 0, move || async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => listener::serve(listener, admin_service, limits, stop).await,
                    Err(err) => tracing::error!(error = %err, "admin cannot use its listener"),
                }
            });
            workers.push(worker.map_err(bind_error(admin_addr))?);
        }
        if let Some(path) = config_path {
            // What may not change without a restart is judged against the config as started.
            let mut started =
                Config::from_yaml(text).map_err(|e| StartError::Config(e.to_string()))?;
            started.relative_to(&path);
            let (stop, shared) = (shutdown_rx.clone(), shared.clone());
            // Watching starts before `start` returns, so no change made after it is missed.
            let prompts = config.prompts.as_ref().map(|p| p.dir.as_path());
            let watcher = match reload::watch_file(&path, prompts, reloader) {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!(error = %err, path = %path.display(), "cannot watch the config file; reload with SIGHUP or the admin API");
                    None
                }
            };
            let worker = Worker::spawn("tollgate-reload".into(), 0, move || async move {
                // The watch lasts as long as this task: it ends with the gateway.
                let _watcher = watcher;
                let source = reload::Source { path, started };
                reload::run(triggers, source, shared, stop).await;
            });
            workers.push(worker.map_err(bind_error(admin_addr))?);
        }
        shared.ready.store(true, Ordering::Release);
        let version = shared.live.load().version.clone();
        tracing::info!(%api_addr, %admin_addr, workers = count, config_version = %version, "tollgate listening");
        Ok(Gateway {
            api_addr,
            admin_addr,
            shared,
            shutdown,
            workers,
        })
    }

    /// Stops accepting, lets in-flight requests and streams finish within the configured
    /// grace period, cuts what is left, and returns when every worker has ended.
    pub async fn shutdown(mut self) {
        self.shared.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        for worker in std::mem::take(&mut self.workers) {
            worker.finished().await;
        }
        tracing::info!("tollgate stopped");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
