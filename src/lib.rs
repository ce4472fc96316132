//! Tollgate: an inference gateway for OpenAI-compatible and Vertex AI model servers.
//!
//! The request path reads top to bottom in [`stack`]; each step is a module here.

pub mod admin;
pub mod api;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod exchange;
pub mod prompt;
pub mod providers;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod stack;
pub mod telemetry;
pub mod upstream;
