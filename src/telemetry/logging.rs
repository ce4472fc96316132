//! Logging set-up: `tracing` to stdout through a non-blocking writer, JSON or pretty.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Installs the global subscriber. The level comes from `RUST_LOG`, else from `level`.
/// Lines go through a bounded in-memory queue to a writer thread, so a slow stdout never
/// stalls a request; lines are dropped (not blocked on) if the queue is full. Keep the guard
/// alive until exit: dropping it flushes what is queued.
pub fn init(level: &str, format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    // A second init (e.g. in tests) keeps the first subscriber; that is not an error here.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    guard
}
