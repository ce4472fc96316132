//! The response body type of every API response: a whole body or a streaming tee.
//!
//! It is concrete (not boxed) so layers can reach the exchange stats, and it writes the
//! access log line and metrics exactly once: when the body ends, or when it is dropped early
//! because the client went away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::api::gemini::stream::ToGemini;
use crate::error::ErrorKind;
use crate::exchange::Exchange;
use crate::providers::endpoints::InFlight;
use crate::telemetry::access_log::{self, Report};
use crate::upstream::stats::ExchangeStats;
use crate::upstream::tee::Tee;

enum Content {
    Full(Option<Bytes>),
    Stream(Pin<Box<Tee>>),
}

/// Set by the access-log layer: what to report when the body ends, and the status sent.
struct Reporting {
    report: Report,
    status: u16,
}

pub struct GatewayBody {
    content: Content,
    stats: ExchangeStats,
    report: Option<Reporting>,
    /// Keeps the upstream endpoint's request counted as outstanding until the body is done.
    in_flight: Option<InFlight>,
    /// A sampled request whose spans are encoded when this body is dropped, after the
    /// response is out: the status sent and whether it ran to the end.
    spans_due: Option<(Arc<Exchange>, u16, bool)>,
    /// For Vertex-native callers: the stream's OpenAI chunks as Gemini responses.
    to_gemini: Option<Box<ToGemini>>,
}

impl GatewayBody {
    pub fn full(bytes: Bytes, stats: ExchangeStats) -> Self {
        Self {
            content: Content::Full(Some(bytes)),
            stats,
            report: None,
            in_flight: None,
            spans_due: None,
            to_gemini: None,
        }
    }

    pub fn error(bytes: Bytes, kind: ErrorKind) -> Self {
        let stats = ExchangeStats {
            error: Some(kind),
            ..ExchangeStats::default()
        };
        Self::full(bytes, stats)
    }

    pub fn stream(tee: Tee, stats: ExchangeStats) -> Self {
        Self {
            content: Content::Stream(Box::pin(tee)),
            stats,
            report: None,
            in_flight: None,
            spans_due: None,
            to_gemini: None,
        }
    }

    /// Records that the answer failed with `kind` (for an answer replaced on the way).
    pub fn mark_error(&mut self, kind: ErrorKind) {
        self.stats.error = Some(kind);
    }

    /// Replaces a whole body's bytes (a streaming body is left alone).
    pub fn map_full(&mut self, f: impl FnOnce(Bytes) -> Bytes) {
        if let Content::Full(bytes) = &mut self.content {
            *bytes = bytes.take().map(f);
        }
    }

    /// Sends a stream's OpenAI chunks as Gemini responses (SSE, or one JSON array).
    pub fn stream_as_gemini(&mut self, sse: bool) {
        if self.is_stream() {
            self.to_gemini = Some(Box::new(ToGemini::new(sse)));
        }
    }

    /// Holds `guard` (an outstanding upstream request) until the body ends or is dropped.
    pub fn hold(&mut self, guard: InFlight) {
        self.in_flight = Some(guard);
    }

    pub fn stats(&self) -> &ExchangeStats {
        &self.stats
    }

    /// Moves the stats out (the body keeps defaults); for tests that outlive the body.
    pub fn take_stats(&mut self) -> ExchangeStats {
        std::mem::take(&mut self.stats)
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.content, Content::Stream(_))
    }

    /// Arranges for the access log, metrics and spans to be written when this body ends.
    pub fn report_to(&mut self, report: Report, status: u16) {
        if self.is_stream() {
            report.metrics.stream_started();
        }
        self.report = Some(Reporting { report, status });
    }

    fn finish(&mut self, completed: bool) {
        if let Some(Reporting { report, status }) = self.report.take() {
            if self.is_stream() {
                report.metrics.stream_ended();
            }
            access_log::record(
                &report.exchange,
                &report.metrics,
                status,
                &self.stats,
                completed,
            );
            if report.exchange.is_recording() {
                self.spans_due = Some((report.exchange.clone(), status, completed));
            }
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let next = match &mut this.content {
            Content::Full(bytes) => {
                let next = bytes.take();
                // A whole body is done once handed over; hyper need not poll again for the end.
                this.finish(true);
                next
            }
            Content::Stream(tee) => loop {
                let next = match tee.as_mut().poll_next(cx, &mut this.stats) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(next) => next,
                };
                let Some(translator) = &mut this.to_gemini else {
                    break next;
                };
                // Translated frames: an OpenAI frame may make none (a held tool call).
                let mut out = BytesMut::new();
                let ended = match &next {
                    Some(bytes) => {
                        translator.feed(bytes, &mut out);
                        false
                    }
                    None => {
                        translator.finish(&mut out);
                        true
                    }
                };
                if ended {
                    this.to_gemini = None;
                }
                if !out.is_empty() {
                    break Some(out.freeze());
                }
                if ended {
                    break None;
                }
            },
        };
        match next {
            Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            None => {
                this.finish(true);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.content, Content::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Content::Full(None) => SizeHint::with_exact(0),
            Content::Stream(_) => SizeHint::default(),
        }
    }
}

impl Drop for GatewayBody {
    fn drop(&mut self) {
        // Still holding a report here means the body never reached its end: the client left
        // (or the connection failed) mid-response.
        self.finish(false);
        if let Some((exchange, status, completed)) = self.spans_due.take() {
            access_log::submit_spans(&exchange, status, &self.stats, completed);
        }
    }
}
