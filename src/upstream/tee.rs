//! The streaming tee: forwards SSE events the moment they are complete and reads them on the way.
//!
//! Each upstream chunk is split at event boundaries; complete events go out at once (as a
//! zero-copy slice of the chunk when nothing before it was pending), the tail waits for the
//! rest of its event. Every data event is parsed for usage and finish reason; the usage-only
//! chunk is dropped when the client did not ask for it. Timeouts, upstream failures and
//! truncation end the stream with a terminal error event, never a silent EOF.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::error::{ErrorKind, GatewayError, stream_error_event};
use crate::upstream::openai_view::AnswerView;
use crate::upstream::source::Source;
use crate::upstream::sse::{EventData, SseSplitter, event_data};
use crate::upstream::stats::ExchangeStats;

/// How long to wait for the upstream's end of body after `[DONE]`, so its pooled connection
/// can be reused, before giving up on it.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(1);

/// Deadlines for one streamed answer.
#[derive(Clone, Copy, Debug)]
pub struct StreamTimeouts {
    pub first_event: Instant,
    pub idle: Duration,
    pub total: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first data event.
    First,
    Streaming,
    /// `[DONE]` was forwarded; waiting briefly for the upstream's end of body.
    Draining,
    Finished,
}

pin_project_lite::pin_project! {
    /// The tee over one upstream (or demo) event stream.
    pub struct Tee {
        source: Source,
        splitter: SseSplitter,
        // Bytes of an event not yet complete, from earlier chunks.
        carry: BytesMut,
        // Event end offsets of the current chunk; kept to reuse its allocation.
        ends: Vec<usize>,
        strip_usage: bool,
        phase: Phase,
        timeouts: StreamTimeouts,
        arrived: Instant,
        #[pin]
        timer: Sleep,
    }
}

/// What to do with one complete event.
enum Verdict {
    Forward,
    Drop,
    /// Forward it, then stop reading.
    Last,
    /// Replace the rest of the stream with this error.
    Fail(GatewayError),
}

impl Tee {
    /// `arrived` is when the client's request arrived (TTFT is measured from it);
    /// `strip_usage` drops the usage-only chunk the gateway asked for on the client's behalf.
    pub fn new(
        source: Source,
        strip_usage: bool,
        timeouts: StreamTimeouts,
        arrived: Instant,
    ) -> Self {
        Self {
            source,
            splitter: SseSplitter::new(),
            carry: BytesMut::new(),
            ends: Vec::new(),
            strip_usage,
            phase: Phase::First,
            timer: tokio::time::sleep_until(timeouts.first_event.min(timeouts.total)),
            timeouts,
            arrived,
        }
    }

    /// Polls for the next frame to send the client, updating `stats` along the way.
    pub fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        stats: &mut ExchangeStats,
    ) -> Poll<Option<Bytes>> {
        let mut this = self.project();
        loop {
            if *this.phase == Phase::Finished {
                return Poll::Ready(None);
            }
            let polled = this.source.poll_chunk(cx);
            let chunk = match polled {
                Poll::Pending => {
                    ready!(this.timer.as_mut().poll(cx));
                    if *this.phase == Phase::Draining {
                        return Poll::Ready(finish(this.phase, this.source, None));
                    }
                    let err = GatewayError::new(
                        ErrorKind::UpstreamTimeout,
                        if *this.phase == Phase::First {
                            "upstream sent no first event in time"
                        } else {
                            "upstream stream stalled or ran past its total time"
                        },
                    );
                    return Poll::Ready(fail(this.phase, this.source, stats, err));
                }
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(Some(Err(message))) => {
                    let err = GatewayError::new(ErrorKind::UpstreamStreamInterrupted, message);
                    return Poll::Ready(fail(this.phase, this.source, stats, err));
                }
                Poll::Ready(None) => {
                    let clean = *this.phase == Phase::Draining || stats.upstream_error_event;
                    if clean {
                        return Poll::Ready(finish(this.phase, this.source, None));
                    }
                    let err = GatewayError::new(
                        ErrorKind::UpstreamStreamTruncated,
                        "upstream ended the stream before [DONE]",
                    );
                    return Poll::Ready(fail(this.phase, this.source, stats, err));
                }
            };
            if *this.phase == Phase::Draining {
                continue; // bytes after [DONE] are not part of the answer
            }

            this.ends.clear();
            let ends = &mut *this.ends;
            this.splitter.feed(&chunk, |end| ends.push(end));
            let Some(&last_end) = this.ends.last() else {
                this.carry.extend_from_slice(&chunk);
                continue;
            };

            let mut out: Option<BytesMut> = None;
            let mut start = 0;
            let mut stop = None;
            for (i, &end) in this.ends.iter().enumerate() {
                let verdict = if i == 0 && !this.carry.is_empty() {
                    this.carry.extend_from_slice(&chunk[..end]);
                    let event = this.carry.split().freeze();
                    let verdict = inspect(&event, *this.strip_usage, this.arrived, stats);
                    // The first event had to be copied anyway; continue building on a copy.
                    let mut buf = BytesMut::with_capacity(event.len() + last_end - end);
                    if matches!(verdict, Verdict::Forward | Verdict::Last) {
                        buf.extend_from_slice(&event);
                    }
                    out = Some(buf);
                    verdict
                } else {
                    let verdict =
                        inspect(&chunk[start..end], *this.strip_usage, this.arrived, stats);
                    match (&verdict, &mut out) {
                        (Verdict::Forward | Verdict::Last, Some(buf)) => {
                            buf.extend_from_slice(&chunk[start..end])
                        }
                        (Verdict::Drop | Verdict::Fail(_), None) => {
                            out = Some(BytesMut::from(&chunk[..start]));
                        }
                        _ => {}
                    }
                    verdict
                };
                start = end;
                match verdict {
                    Verdict::Forward | Verdict::Drop => {}
                    Verdict::Last => {
                        stop = Some(None);
                        break;
                    }
                    Verdict::Fail(err) => {
                        stop = Some(Some(err));
                        break;
                    }
                }
            }
            let forwarded = match out {
                Some(buf) => buf.freeze(),
                None => chunk.slice(..start),
            };
            match stop {
                None => {
                    this.carry.extend_from_slice(&chunk[last_end..]);
                    if *this.phase == Phase::First && stats.events > 0 {
                        *this.phase = Phase::Streaming;
                    }
                    if *this.phase == Phase::Streaming {
                        let next = (Instant::now() + this.timeouts.idle).min(this.timeouts.total);
                        this.timer.as_mut().reset(next);
                    }
                }
                Some(None) => {
                    *this.phase = Phase::Draining;
                    let next = (Instant::now() + DRAIN_AFTER_DONE).min(this.timeouts.total);
                    this.timer.as_mut().reset(next);
                }
                Some(Some(err)) => {
                    let tail = fail(this.phase, this.source, stats, err);
                    let mut joined = BytesMut::from(&forwarded[..]);
                    if let Some(tail) = tail {
                        joined.extend_from_slice(&tail);
                    }
                    return Poll::Ready(Some(joined.freeze()));
                }
            }
            if !forwarded.is_empty() {
                return Poll::Ready(Some(forwarded));
            }
        }
    }
}

/// Reads one complete event and decides its fate.
fn inspect(
    event: &[u8],
    strip_usage: bool,
    arrived: &Instant,
    stats: &mut ExchangeStats,
) -> Verdict {
    let data = event_data(event);
    let json: &[u8] = match &data {
        EventData::None => return Verdict::Forward,
        EventData::Done => return Verdict::Last,
        EventData::One(json) => json,
        EventData::Joined(json) => json,
    };
    let Ok(view) = AnswerView::parse(json) else {
        return Verdict::Fail(GatewayError::new(
            ErrorKind::UpstreamProtocol,
            "upstream sent an event that is not valid JSON",
        ));
    };
    if let Some(usage) = view.usage {
        stats.usage = Some(usage);
    }
    if let Some(reason) = view.choices.finish_reason.clone() {
        stats.finish_reason = Some(reason);
    }
    if view.error.is_some() {
        // The upstream's own error event is its answer: forward it and end there.
        stats.upstream_error_event = true;
        stats.error = Some(ErrorKind::UpstreamStreamInterrupted);
        return Verdict::Last;
    }
    if strip_usage && view.is_usage_only() {
        return Verdict::Drop;
    }
    stats.events += 1;
    if stats.ttft.is_none() {
        stats.ttft = Some(arrived.elapsed());
    }
    Verdict::Forward
}

/// Ends the stream with `err` as a terminal event and lets go of the upstream at once.
fn fail(
    phase: &mut Phase,
    source: &mut Source,
    stats: &mut ExchangeStats,
    err: GatewayError,
) -> Option<Bytes> {
    stats.error = Some(err.kind);
    finish(phase, source, Some(stream_error_event(&err)))
}

fn finish(phase: &mut Phase, source: &mut Source, last: Option<Bytes>) -> Option<Bytes> {
    *phase = Phase::Finished;
    // Dropping the upstream body closes or resets the upstream stream now, not at drop time.
    *source = Source::Closed;
    last
}

impl Tee {
    /// Adapter for tests and benches: drives the tee as an `http_body::Body`.
    pub fn into_body(self, stats: ExchangeStats) -> TeeBody {
        TeeBody {
            tee: Box::pin(self),
            stats,
        }
    }
}

/// A tee with its own stats, usable where a plain `Body` is wanted.
pub struct TeeBody {
    tee: Pin<Box<Tee>>,
    pub stats: ExchangeStats,
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        this.tee
            .as_mut()
            .poll_next(cx, &mut this.stats)
            .map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}
