//! The `tollgate` command line: serve, check a config, hash a client key, render and test
//! prompt templates.

mod prompts;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server::Gateway;
use crate::snapshot;
use crate::telemetry::logging::{self, LogFormat};
use crate::telemetry::metrics::Metrics;

/// The config shipped inside the binary: the demo provider on loopback, auth off.
pub const EMBEDDED_CONFIG: &str = include_str!("../../config/tollgate.yaml");
const DEFAULT_CONFIG_PATH: &str = "config/tollgate.yaml";

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "A high-throughput inference gateway for LLM traffic"
)]
pub struct Cli {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "TOLLGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file. Without it, config/tollgate.yaml if present, else the embedded default.
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Compile a config file offline: exit 0 if it would load, else print why and exit 1.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read a client key on stdin and print the SHA-256 hash to put in `key_hashes`.
    HashKey,
    /// Prompt templates offline: render one, or run the fixtures stored beside them.
    Prompts {
        #[command(subcommand)]
        command: prompts::PromptsCommand,
    },
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::HashKey => hash_key(),
        Command::Check { config } => check(&config),
        Command::Prompts { command } => prompts::run(command),
        Command::Serve { config } => {
            let _guard = logging::init(&cli.log_level, cli.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("tollgate: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(config))
        }
    }
}

fn hash_key() -> ExitCode {
    let mut key = String::new();
    if let Err(err) = std::io::stdin().read_to_string(&mut key) {
        eprintln!("tollgate: cannot read the key from stdin: {err}");
        return ExitCode::FAILURE;
    }
    let key = key.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        eprintln!("tollgate: no key on stdin");
        return ExitCode::FAILURE;
    }
    println!("{}", crate::auth::hash_key(key));
    ExitCode::SUCCESS
}

fn check(path: &Path) -> ExitCode {
    let compiled = Config::from_file(path)
        .map_err(|err| err.to_string())
        .and_then(|(config, text)| {
            let metrics = std::sync::Arc::new(Metrics::new());
            if let Some(tracing) = &config.tracing {
                crate::telemetry::trace::Tracer::new(tracing, 1, metrics.clone())?;
            }
            snapshot::compile(&config, &text, &metrics)
                .map(|s| {
                    let versions: usize = s.prompts.iter().map(|p| p.versions.len()).sum();
                    (s.version, versions)
                })
                .map_err(|err| err.to_string())
        });
    match compiled {
        Ok((version, 0)) => {
            println!("{}: ok (config version {version})", path.display());
            ExitCode::SUCCESS
        }
        Ok((version, prompts)) => {
            let plural = if prompts == 1 { "" } else { "s" };
            println!(
                "{}: ok (config version {version}; {prompts} prompt version{plural} rendered with their example values)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The config, its text, and the file it came from (`None`: the embedded default).
pub(crate) fn load(path: Option<PathBuf>) -> Result<(Config, String, Option<PathBuf>), String> {
    let path = path.or_else(|| {
        Path::new(DEFAULT_CONFIG_PATH)
            .exists()
            .then(|| DEFAULT_CONFIG_PATH.into())
    });
    match path {
        Some(path) => {
            let (config, text) = Config::from_file(&path).map_err(|e| e.to_string())?;
            Ok((config, text, Some(path)))
        }
        None => {
            let mut config = Config::from_yaml(EMBEDDED_CONFIG).map_err(|e| e.to_string())?;
            // No folder beside an embedded config: its prompts are embedded too.
            if let Some(prompts) = &mut config.prompts {
                prompts.embedded = true;
            }
            Ok((config, EMBEDDED_CONFIG.to_owned(), None))
        }
    }
}

async fn serve(path: Option<PathBuf>) -> ExitCode {
    let (config, text, source) = match load(path) {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::error!(error = %err, "cannot load config");
            return ExitCode::FAILURE;
        }
    };
    let started = match &source {
        Some(path) => {
            tracing::info!(config = %path.display(), "loading config; watching it for changes");
            Gateway::start_from_file(&config, &text, path).await
        }
        None => {
            tracing::info!(config = "(embedded default)", "loading config");
            Gateway::start(&config, &text).await
        }
    };
    let gateway = match started {
        Ok(gateway) => gateway,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal(&gateway.shared.reloader).await;
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT; SIGHUP meanwhile asks for a config reload.
async fn wait_for_signal(reloader: &crate::reload::Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(mut term), Ok(mut int), Ok(mut hup)) => loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => reloader.trigger(crate::reload::Trigger::Signal),
            }
        },
        _ => {
            tracing::warn!("cannot install signal handlers; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
