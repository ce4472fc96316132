//! `tollgate-mock`: runs the mock OpenAI-compatible server for load tests.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tollgate_mock::{Fault, Latency, LineEnding, MockConfig, MockServer, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-mock",
    version,
    about = "Mock OpenAI-compatible model server with injectable faults"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// More addresses served by the same process and threads (repeatable): one upstream
    /// that looks like several replicas, for measuring load balancing alone.
    #[arg(long)]
    also_listen: Vec<SocketAddr>,
    /// Delay before the first streamed event, e.g. 50ms.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    ttft: Duration,
    /// Delay between streamed content events.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    inter_token: Duration,
    /// Completion tokens per request.
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Extra delay before response headers: fixed:5ms or uniform:1ms..10ms.
    #[arg(long, default_value = "fixed:0ms")]
    latency: Latency,
    /// Fault applied to every request, e.g. status=503 or reset-after=2.
    #[arg(long)]
    fault: Option<Fault>,
    /// SSE line terminator: lf, crlf or cr.
    #[arg(long, default_value = "lf")]
    line_ending: LineEnding,
    /// Send a `: keep-alive` comment before every SSE data event.
    #[arg(long)]
    keepalive_comments: bool,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not failures; everything else exits 1.
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-mock: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()?;
    let config = MockConfig {
        ttft: args.ttft,
        inter_token: args.inter_token,
        tokens: args.tokens,
        latency: args.latency,
        fault: args.fault,
        line_ending: args.line_ending,
        keepalive_comments: args.keepalive_comments,
    };
    runtime.block_on(async move {
        let mut replicas = Vec::with_capacity(args.also_listen.len());
        for addr in &args.also_listen {
            replicas.push(MockServer::start_on(*addr, config.clone()).await?);
        }
        let server = MockServer::start_on(args.listen, config).await?;
        {
            // The harness waits for exactly this line before sending traffic.
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "listening on {}", server.addr())?;
            stdout.flush()?;
        }
        let signal = shutdown_signal().await;
        server.shutdown().await;
        for replica in replicas {
            replica.shutdown().await;
        }
        signal
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
