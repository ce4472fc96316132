//! What a sampled request's spans are built from: timestamps and outcomes written as the
//! request runs, turned into OTLP spans only once its response is out.
//!
//! The hot path stores offsets from the request's arrival and indexes into the snapshot it
//! already holds; names, attributes and encoding cost nothing until the response is out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::error::ErrorKind;
use crate::upstream::openai_view::{FinishReason, Usage};

/// A step of the request path that gets an INTERNAL span of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// API key -> tenant.
    Auth,
    /// Prompt reference -> prompt version, rendered.
    Prompt,
    /// Model alias -> route version.
    Route,
}

impl StepKind {
    pub fn span_name(self) -> &'static str {
        match self {
            StepKind::Auth => "tollgate.auth",
            StepKind::Prompt => "tollgate.prompt",
            StepKind::Route => "tollgate.route",
        }
    }
}

/// One INTERNAL span.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub kind: StepKind,
    pub span_id: u64,
    /// Nanoseconds since arrival.
    pub start: u64,
    pub end: u64,
    /// What the step decided that is not on the exchange itself: for `Route`, whether the
    /// caller pinned the version.
    pub flag: bool,
}

/// One upstream attempt: a CLIENT span.
#[derive(Clone, Copy, Debug)]
pub struct AttemptRecord {
    pub span_id: u64,
    /// Index of the route version attempted.
    pub version: usize,
    /// Index of the provider endpoint it went to, once picked.
    pub endpoint: Option<usize>,
    pub start: u64,
    /// `None` while it is the attempt whose answer is being streamed: it ends with the body.
    pub end: Option<u64>,
    pub status: Option<u16>,
    pub error: Option<ErrorKind>,
}

/// The spans of one sampled request while it runs.
#[derive(Debug)]
pub struct SpanLog {
    /// Wall-clock time of arrival; span times are this plus offsets.
    pub start_unix_nanos: u64,
    /// Inline: a request's steps and (usually) its attempts take no allocation of their own.
    pub steps: SmallVec<[Step; 4]>,
    pub attempts: SmallVec<[AttemptRecord; 2]>,
    /// The request's prompt (`messages`, `prompt` or `input`), for routes that record content.
    pub input: Option<Bytes>,
    pub request: RequestParams,
}

/// The generation parameters a request sent upstream (`gen_ai.request.*`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stream: bool,
}

impl SpanLog {
    pub fn new() -> Self {
        Self {
            start_unix_nanos: unix_nanos(SystemTime::now()),
            steps: SmallVec::new(),
            attempts: SmallVec::new(),
            input: None,
            request: RequestParams::default(),
        }
    }

    /// Number of spans this log will become, the SERVER span included.
    pub fn span_count(&self) -> usize {
        1 + self.steps.len() + self.attempts.len()
    }
}

impl Default for SpanLog {
    /// An empty log, left behind when a request's log is taken for export.
    fn default() -> Self {
        Self {
            start_unix_nanos: 0,
            steps: SmallVec::new(),
            attempts: SmallVec::new(),
            input: None,
            request: RequestParams::default(),
        }
    }
}

/// What the response learned that spans report: answer facts of the final attempt,
/// borrowed from the request's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnswerFacts<'a> {
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub error: Option<ErrorKind>,
    pub stream: bool,
    /// From arrival.
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    pub finish_reason: Option<&'a FinishReason>,
    pub response_id: Option<&'a str>,
    pub response_model: Option<&'a str>,
    /// The completion text, for routes that record content.
    pub output: Option<&'a str>,
    /// False when the client left before the end.
    pub completed: bool,
}

pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Nanoseconds in `d`, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
