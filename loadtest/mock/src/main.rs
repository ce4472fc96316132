//! `tollgate-mock`: runs the mock OpenAI-compatible server for load tests.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tollgate_mock::{
    Fault, GeminiOutcome, Latency, LineEnding, MockConfig, MockServer, TokenEndpoint, VertexAuth,
    VertexConfig, parse_duration,
};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-mock",
    version,
    about = "Mock OpenAI-compatible and Vertex AI (Gemini) model server with injectable faults"
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
    /// Outcome of every Gemini request (syntax of the x-mock-gemini header), e.g. thoughts=8
    /// or error=RESOURCE_EXHAUSTED:retry=2s.
    #[arg(long)]
    gemini_outcome: Option<GeminiOutcome>,
    /// Most thoughts tokens reported when a Gemini request asks for thinking.
    #[arg(long, default_value_t = 8)]
    gemini_thoughts_tokens: usize,
    /// Output tokens per streamed Gemini event.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    gemini_tokens_per_event: u16,
    /// Accepted `x-goog-api-key` on the Vertex paths (repeatable; enforces auth).
    #[arg(long)]
    vertex_api_key: Vec<String>,
    /// Accepted `Authorization: Bearer` token on the Vertex paths (repeatable; enforces auth).
    #[arg(long)]
    vertex_bearer_token: Vec<String>,
    /// Enforce auth on the Vertex paths even with no key or token given: only tokens issued
    /// by this mock's token endpoints pass.
    #[arg(long)]
    vertex_require_auth: bool,
    /// Project the credentials may use (repeatable; other projects get 403).
    #[arg(long)]
    vertex_project: Vec<String>,
    /// Path of the OAuth token endpoint.
    #[arg(long, default_value = "/token")]
    token_path: String,
    /// PEM public key (BEGIN PUBLIC KEY) that token assertions must be signed with
    /// [default: the committed test key].
    #[arg(long)]
    token_public_key: Option<std::path::PathBuf>,
    /// Required `iss` of token assertions [default: the test key's client_email].
    #[arg(long)]
    token_client_email: Option<String>,
    /// Required `kid` of token assertions [default: the test key's private_key_id].
    #[arg(long)]
    token_key_id: Option<String>,
    /// Required `aud` of token assertions [default: http://LISTEN_ADDR/TOKEN_PATH].
    #[arg(long)]
    token_audience: Option<String>,
    /// `expires_in` of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3599)]
    token_expires_in: u64,
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
    let defaults = TokenEndpoint::default();
    let public_key_pem = match &args.token_public_key {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        None => defaults.public_key_pem,
    };
    let config = MockConfig {
        ttft: args.ttft,
        inter_token: args.inter_token,
        tokens: args.tokens,
        latency: args.latency,
        fault: args.fault,
        line_ending: args.line_ending,
        keepalive_comments: args.keepalive_comments,
        vertex: VertexConfig {
            outcome: args.gemini_outcome,
            thoughts_tokens: args.gemini_thoughts_tokens,
            tokens_per_event: usize::from(args.gemini_tokens_per_event),
            auth: VertexAuth {
                api_keys: args.vertex_api_key,
                bearer_tokens: args.vertex_bearer_token,
                require_auth: args.vertex_require_auth,
                projects: args.vertex_project,
            },
            token: TokenEndpoint {
                path: args.token_path,
                public_key_pem,
                client_email: args.token_client_email.unwrap_or(defaults.client_email),
                key_id: args.token_key_id.or(defaults.key_id),
                audience: args.token_audience,
                expires_in: args.token_expires_in,
            },
        },
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
