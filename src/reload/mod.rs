//! Live reload: every trigger (the config file changed, SIGHUP, `POST /admin/reload`) is one
//! message to one reloader, which compiles the new config fully and swaps it in, or keeps the
//! running one and says why.
//!
//! In-flight requests hold the snapshot they started with, so a swap never touches them.
//! Providers whose definition did not change carry over (see `snapshot::recompile`), and so
//! do metric series, which are keyed by name.

mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch as signal};

use crate::config::Config;
use crate::server::Shared;
use crate::snapshot;
use crate::telemetry::metrics::ReloadResult;

pub use watch::watch_file;

/// Quiet time after a file event before reloading, so an editor's or a ConfigMap's burst of
/// events (write, rename, symlink swap) becomes one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// A file that keeps changing is reloaded anyway after this many quiet periods (2.25 s).
const MAX_DEBOUNCES: usize = 15;

/// What asked for a reload.
#[derive(Debug)]
pub enum Trigger {
    FileChanged,
    Signal,
    /// From the admin API, which waits for the outcome.
    Admin(oneshot::Sender<Outcome>),
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new config version is serving.
    Swapped { version: String },
    /// The file compiles to the version already serving; nothing changed.
    Unchanged { version: String },
    /// The new config was refused; the old one keeps serving.
    Failed { error: String },
}

/// The last reload attempt, for `/admin/config`: when, and its error if it failed. (Counts
/// are metrics: `tollgate_config_reloads_total`.)
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub last: Mutex<Option<(SystemTime, Option<String>)>>,
}

/// The sending side, cloned into every trigger source.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Trigger>,
}

impl Reloader {
    /// Asks for a reload. A full queue means reloads are already pending, and any of them
    /// reads the newest file, so a trigger that finds it full is dropped.
    pub fn trigger(&self, trigger: Trigger) {
        let _ = self.tx.try_send(trigger);
    }

    /// Reloads and waits for the outcome (what `POST /admin/reload` answers).
    pub async fn reload_now(&self) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        if self.tx.send(Trigger::Admin(reply)).await.is_err() {
            return Outcome::Failed {
                error: "the reloader has stopped".into(),
            };
        }
        outcome.await.unwrap_or(Outcome::Failed {
            error: "the reloader has stopped".into(),
        })
    }
}

/// The reloader's queue: small, because triggers coalesce.
pub fn channel() -> (Reloader, mpsc::Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel(8);
    (Reloader { tx }, rx)
}

/// Where the config comes from, and what may not change without a restart.
pub struct Source {
    pub path: PathBuf,
    /// The config the gateway started with: listeners, workers and connection limits are fixed.
    pub started: Config,
}

/// Runs until `stop` turns true, applying triggers one at a time.
pub async fn run(
    mut triggers: mpsc::Receiver<Trigger>,
    source: Source,
    shared: Arc<Shared>,
    mut stop: signal::Receiver<bool>,
) {
    loop {
        let trigger = tokio::select! {
            trigger = triggers.recv() => match trigger {
                Some(trigger) => trigger,
                None => return,
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let mut replies = Vec::new();
        if let Trigger::Admin(reply) = trigger {
            replies.push(reply);
        } else {
            // Wait for a quiet `DEBOUNCE` (bounded), folding the burst into this one reload.
            for _ in 0..MAX_DEBOUNCES {
                tokio::time::sleep(DEBOUNCE).await;
                let mut more_events = false;
                while let Ok(more) = triggers.try_recv() {
                    match more {
                        Trigger::Admin(reply) => replies.push(reply),
                        Trigger::FileChanged | Trigger::Signal => more_events = true,
                    }
                }
                if !more_events || !replies.is_empty() {
                    break;
                }
            }
        }
        while let Ok(more) = triggers.try_recv() {
            if let Trigger::Admin(reply) = more {
                replies.push(reply);
            }
        }
        let outcome = reload(&source, &shared);
        for reply in replies {
            let _ = reply.send(outcome.clone());
        }
    }
}

/// Reads, compiles and swaps. Never leaves the gateway without a working snapshot.
pub fn reload(source: &Source, shared: &Shared) -> Outcome {
    let attempt = load_and_compile(source, shared);
    let status = &shared.reloads;
    let outcome = match attempt {
        Ok(Some(next)) => {
            let version = next.version.to_string();
            shared.metrics.set_config_version(&version);
            shared.live.store(Arc::new(next));
            shared.metrics.record_reload(ReloadResult::Swapped);
            tracing::info!(config_version = %version, "config reloaded");
            Outcome::Swapped { version }
        }
        Ok(None) => {
            shared.metrics.record_reload(ReloadResult::Unchanged);
            Outcome::Unchanged {
                version: shared.live.load().version.to_string(),
            }
        }
        Err(error) => {
            shared.metrics.record_reload(ReloadResult::Failed);
            tracing::error!(%error, "config reload refused; the running config stays");
            Outcome::Failed { error }
        }
    };
    let error = match &outcome {
        Outcome::Failed { error } => Some(error.clone()),
        _ => None,
    };
    *status.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((SystemTime::now(), error));
    outcome
}

/// The new snapshot, `None` if it is the one already serving, or why it cannot serve.
fn load_and_compile(
    source: &Source,
    shared: &Shared,
) -> Result<Option<snapshot::Snapshot>, String> {
    let (config, text) = Config::from_file(&source.path).map_err(|e| e.to_string())?;
    let restart_only =
        |what: &str| format!("{what} changed: it applies only at start, so restart to change it");
    let (old, new) = (&source.started, &config);
    if old.server.listen != new.server.listen || old.admin.listen != new.admin.listen {
        return Err(restart_only("a listener address"));
    }
    if old.server.workers != new.server.workers {
        return Err(restart_only("server.workers"));
    }
    if old.server.max_header_bytes != new.server.max_header_bytes
        || old.server.header_read_timeout != new.server.header_read_timeout
        || old.server.shutdown_grace != new.server.shutdown_grace
    {
        return Err(restart_only(
            "a connection limit (max_header_bytes, header_read_timeout, shutdown_grace)",
        ));
    }
    if old.admin != new.admin {
        return Err(restart_only("the admin section"));
    }
    if old.tracing != new.tracing {
        return Err(restart_only("the tracing section"));
    }
    if old.prompts.as_ref().map(|p| &p.dir) != new.prompts.as_ref().map(|p| &p.dir) {
        // The folder watched is the one the gateway started with.
        return Err(restart_only("prompts.dir"));
    }
    let running = shared.live.load_full();
    let next = snapshot::recompile(&config, &text, &shared.metrics, Some(&running))
        .map_err(|e| e.to_string())?;
    Ok((!same_state(&running, &next)).then_some(next))
}

/// Same config text, and every upstream provider carried over (so no key file changed).
fn same_state(running: &snapshot::Snapshot, next: &snapshot::Snapshot) -> bool {
    use crate::providers::Provider;
    next.version == running.version
        && next.providers.iter().all(|(name, provider)| {
            match (provider, running.providers.get(name)) {
                (Provider::Openai(new), Some(Provider::Openai(old))) => Arc::ptr_eq(new, old),
                (Provider::Vertex(new), Some(Provider::Vertex(old))) => Arc::ptr_eq(new, old),
                (Provider::Demo(_), Some(Provider::Demo(_))) => true,
                _ => false,
            }
        })
}
