//! `tollgate-load`: the load generator of Tollgate's side-by-side harness.
//!
//! Each run prints one JSON line with throughput and latency percentiles, so the harness can
//! compare targets measured the same way in the same run. Runs on one thread (pin it with
//! `taskset`), on loopback, and stops by itself.

mod client;
mod scenarios;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue};

use client::Target;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate-load",
    version,
    about = "Load generator for Tollgate's side-by-side harness"
)]
struct Cli {
    /// Target address, e.g. 127.0.0.1:8080 (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Request body (JSON text).
    #[arg(long)]
    body: String,
    /// Extra request header `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[command(subcommand)]
    shape: Shape,
}

#[derive(Subcommand, Debug)]
enum Shape {
    /// Fixed arrival rate, independent of answers.
    Open {
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// For streaming bodies: data events each answer should carry (checked per request).
        #[arg(long)]
        expect_events: Option<u32>,
    },
    /// N connections, each sending as soon as its last answer is complete.
    Closed {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
    },
    /// Hold N streams open (each after its first event) for a while.
    Idle {
        #[arg(long)]
        streams: usize,
        #[arg(long, default_value_t = 5.0)]
        hold_seconds: f64,
    },
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header `{text}` needs a colon"))?;
    Ok((
        HeaderName::try_from(name.trim()).map_err(|e| e.to_string())?,
        HeaderValue::try_from(value.trim()).map_err(|e| e.to_string())?,
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.addr.ip().is_loopback() {
        eprintln!("tollgate-load: only loopback targets are allowed");
        return ExitCode::FAILURE;
    }
    let headers = match cli
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(headers) => headers,
        Err(err) => {
            eprintln!("tollgate-load: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = Arc::new(Target {
        addr: cli.addr,
        path: cli.path,
        headers,
        body: Bytes::from(cli.body),
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tollgate-load: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.shape {
            Shape::Open {
                rate,
                seconds,
                expect_events,
            } => {
                scenarios::open_loop(
                    target,
                    rate,
                    Duration::from_secs_f64(seconds),
                    expect_events,
                )
                .await
            }
            Shape::Closed {
                connections,
                seconds,
            } => {
                scenarios::closed_loop(target, connections, Duration::from_secs_f64(seconds)).await
            }
            Shape::Idle {
                streams,
                hold_seconds,
            } => {
                scenarios::idle_streams(target, streams, Duration::from_secs_f64(hold_seconds))
                    .await
            }
        }
    });
    println!("{result}");
    ExitCode::SUCCESS
}
