//! A fast mock of an OpenAI-compatible model server with injectable faults, for
//! Tollgate's black-box tests (in-process) and load tests (the `tollgate-mock` binary).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tollgate_mock::{Fault, MockConfig, MockServer};
//!
//! let server = MockServer::start(MockConfig {
//!     tokens: 4,
//!     fault: Some("status=429;retry-after=1".parse().map_err(std::io::Error::other)?),
//!     ..MockConfig::default()
//! })
//! .await?;
//! println!("upstream at {}", server.base_url());
//! server.stats().wait_requests(1).await;
//! server.shutdown().await;
//! # let _ = Fault::Malformed;
//! # Ok(())
//! # }
//! ```

mod body;
mod config;
mod fault;
mod handler;
mod responses;
mod server;
mod sse;
mod stats;

pub use config::{Latency, LineEnding, MockConfig, SpecError, parse_duration};
pub use fault::Fault;
pub use server::MockServer;
pub use stats::{MockStats, RECORDED_CAPACITY, RecordedRequest};
