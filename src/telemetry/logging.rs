//! Logging set-up: `tracing` to stdout, JSON or pretty; access lines through their own sink.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::access_log::TARGET;
use super::access_sink::{self, FlushGuard};

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Keeps the log writers alive; dropping it flushes what is buffered.
pub struct LogGuards {
    _events: WorkerGuard,
    _access: FlushGuard,
}

/// Installs the global subscriber. The level comes from `RUST_LOG`, else from `level`
/// (`RUST_LOG=tollgate::access=off` turns the access log off). Ordinary events go through a
/// bounded queue to a writer thread, so a slow stdout never stalls a request (lines are
/// dropped, not blocked on, when the queue is full); access lines use the batched sink.
pub fn init(level: &str, format: LogFormat) -> LogGuards {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, events) = tracing_appender::non_blocking(std::io::stdout());
    let not_access = filter_fn(|meta| meta.target() != TARGET);
    let (access_layer, access) = access_sink::start(format);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(access_layer);
    // A second init (e.g. in tests) keeps the first subscriber; that is not an error here.
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(writer)
                    .with_filter(not_access),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_filter(not_access),
            )
            .try_init(),
    };
    LogGuards {
        _events: events,
        _access: access,
    }
}
