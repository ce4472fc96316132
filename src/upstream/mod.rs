//! Upstream exchange: send the request, stream or read the answer back, account for it.

pub mod client;
mod forward;
pub mod google;
pub mod h1;
pub mod openai_view;
pub mod source;
pub mod sse;
pub mod stats;
pub mod tee;

pub use forward::{
    Call, Outbound, Surface, VertexCall, forward, retryable_status, set_stream_headers,
};

/// `Retry-After` in seconds, as an upstream sent it.
pub fn retry_after(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}
