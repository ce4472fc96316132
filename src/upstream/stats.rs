//! What the gateway learned about one upstream exchange, filled in as the answer flows.

use std::time::Duration;

use crate::error::ErrorKind;
use crate::upstream::openai_view::{FinishReason, Usage};

/// Per-request facts for the access log and metrics. Written by the tee (streams) or by the
/// non-streaming reader; read once when the response body ends.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    pub stream: bool,
    pub upstream_status: Option<u16>,
    /// Time from the request's arrival to the first data event (streams) or the full answer.
    pub ttft: Option<Duration>,
    /// SSE data events forwarded (excluding `[DONE]`, comments and stripped usage chunks).
    pub events: u32,
    pub usage: Option<Usage>,
    pub finish_reason: Option<FinishReason>,
    /// Why the exchange failed, if it did, including failures after the stream began.
    pub error: Option<ErrorKind>,
    /// The upstream itself sent a mid-stream `{"error":...}` event.
    pub upstream_error_event: bool,
}
