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
use tokio::time::{Instant, Sleep};

use crate::config::TimeoutsConfig;
use crate::error::{ErrorKind, GatewayError, stream_error_event};
use crate::upstream::openai_view::AnswerView;
use crate::upstream::source::Source;
use crate::upstream::sse::{EventData, SseSplitter, event_data};
use crate::upstream::stats::ExchangeStats;

/// How long to wait for the upstream's end of body after `[DONE]`, so its pooled connection
/// can be reused, before giving up on it.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(1);

/// Largest single event the tee will hold while waiting for its end. An upstream that sends
/// more without a blank line is broken or hostile; the stream ends with an error instead of
/// the gateway's memory growing without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Upstream chunks read in one poll before yielding to other tasks, so an upstream that
/// floods data the client never sees (stripped chunks, partial events) cannot hog a worker.
const CHUNKS_PER_POLL: usize = 32;

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
        // The last dropped event ended on a CR whose LF has not been seen yet.
        skip_lf: bool,
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

impl StreamTimeouts {
    /// The deadlines of an exchange that starts now, from a route's timeouts.
    pub fn from_now(config: &TimeoutsConfig) -> Self {
        let now = Instant::now();
        let total = now + config.total.0;
        Self {
            first_event: (now + config.first_token.0).min(total),
            idle: config.idle.0,
            total,
        }
    }
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
            skip_lf: false,
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
        for _ in 0..CHUNKS_PER_POLL {
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
                // Bytes after [DONE] are no part of the answer; an upstream that keeps
                // talking is let go rather than read on.
                return Poll::Ready(finish(this.phase, this.source, None));
            }

            this.ends.clear();
            let ends = &mut *this.ends;
            this.splitter.feed(&chunk, |end| ends.push(end));
            let Some(&last_end) = this.ends.last() else {
                this.carry.extend_from_slice(&chunk);
                if this.carry.len() > MAX_EVENT_BYTES {
                    return Poll::Ready(fail(this.phase, this.source, stats, oversized_event()));
                }
                continue;
            };

            // `out` stays `None` while the chunk can go out as a zero-copy prefix of itself.
            let mut out: Option<BytesMut> = None;
            let mut start = 0;
            let mut stop = None;
            for (i, &end) in this.ends.iter().enumerate() {
                let from_carry = i == 0 && !this.carry.is_empty();
                let carried;
                let event: &[u8] = if from_carry {
                    this.carry.extend_from_slice(&chunk[..end]);
                    carried = this.carry.split().freeze();
                    &carried
                } else {
                    &chunk[start..end]
                };
                let verdict = inspect(event, *this.strip_usage, this.arrived, stats);
                // A dropped event that ended on a CR leaves its LF, if any, at the start of the
                // next event: it goes with the dropped event.
                let from =
                    usize::from(std::mem::take(this.skip_lf) && event.first() == Some(&b'\n'));
                let kept = match verdict {
                    Verdict::Forward | Verdict::Last => event.len(),
                    // A dropped event's leading line breaks may finish the previous event's
                    // CRLF (split across chunks); they carry no data, so they stay.
                    Verdict::Drop | Verdict::Fail(_) => {
                        *this.skip_lf = event.last() == Some(&b'\r');
                        leading_line_breaks(event).max(from)
                    }
                };
                if out.is_none() && (from_carry || from > 0 || kept < event.len()) {
                    let mut buf = BytesMut::with_capacity(last_end + event.len());
                    buf.extend_from_slice(&chunk[..start]);
                    out = Some(buf);
                }
                if let Some(buf) = &mut out {
                    buf.extend_from_slice(&event[from..kept]);
                }
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
                    if this.carry.len() > MAX_EVENT_BYTES {
                        let tail = fail(this.phase, this.source, stats, oversized_event());
                        let mut joined = BytesMut::from(&forwarded[..]);
                        joined.extend_from_slice(&tail.unwrap_or_default());
                        return Poll::Ready(Some(joined.freeze()));
                    }
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
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn oversized_event() -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        format!("upstream sent an event larger than {MAX_EVENT_BYTES} bytes"),
    )
}

fn leading_line_breaks(event: &[u8]) -> usize {
    event
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
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
    stats.capture_from(&view);
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;
    use crate::body::GatewayBody;

    const CONTENT: &str =
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}";
    const CONTENT_EVENT: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    const LAST: &str = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}";

    fn stream(sep: &str) -> (String, String) {
        let events = [
            ": keep-alive",
            CONTENT,
            CONTENT,
            LAST,
            USAGE,
            "data: [DONE]",
        ];
        let all: String = events.iter().map(|e| format!("{e}{sep}{sep}")).collect();
        let without_usage = all.replace(&format!("{USAGE}{sep}{sep}"), "");
        (all, without_usage)
    }

    async fn run(chunks: Vec<Result<Bytes, String>>, strip_usage: bool) -> (String, ExchangeStats) {
        let now = Instant::now();
        let timeouts = StreamTimeouts {
            first_event: now + Duration::from_secs(5),
            idle: Duration::from_secs(5),
            total: now + Duration::from_secs(10),
        };
        let source = Source::Replay {
            chunks: VecDeque::from(chunks),
            ends: true,
        };
        let tee = Tee::new(source, strip_usage, timeouts, now);
        let mut body = GatewayBody::stream(tee, ExchangeStats::default());
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        (String::from_utf8(out).unwrap(), body.take_stats())
    }

    fn cut(text: &str, rng: &mut fastrand::Rng) -> Vec<Result<Bytes, String>> {
        let bytes = text.as_bytes();
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = rng.usize(1..=bytes.len() - at).min(rng.usize(1..40));
            chunks.push(Ok(Bytes::copy_from_slice(&bytes[at..at + len])));
            at += len;
        }
        chunks
    }

    /// However the upstream cuts its chunks, the client gets the same bytes, minus the usage
    /// chunk when it did not ask for it, and the same accounting.
    #[tokio::test]
    async fn any_chunking_forwards_the_same_bytes_and_counts() {
        let mut rng = fastrand::Rng::with_seed(3);
        for sep in ["\n", "\r\n", "\r"] {
            let (all, without_usage) = stream(sep);
            for _ in 0..300 {
                for strip in [false, true] {
                    let (out, stats) = run(cut(&all, &mut rng), strip).await;
                    let expected = if strip { &without_usage } else { &all };
                    // A CRLF's LF may be held back after [DONE]; nothing else may differ.
                    assert!(
                        out == *expected || format!("{out}\n") == *expected,
                        "sep {sep:?} strip {strip}: {out:?}"
                    );
                    assert_eq!(stats.events, if strip { 3 } else { 4 });
                    assert_eq!(stats.usage.map(|u| u.total_tokens), Some(5));
                    assert_eq!(
                        stats.finish_reason.as_ref().map(|f| f.as_str()),
                        Some("stop")
                    );
                    assert_eq!(stats.error, None);
                }
            }
        }
    }

    #[tokio::test]
    async fn failures_end_with_one_terminal_error_event() {
        let (all, _) = stream("\n");
        let half = &all[..all.len() / 2];
        let cases: [(Vec<Result<Bytes, String>>, ErrorKind); 3] = [
            (
                vec![Ok(Bytes::from(half.to_owned()))],
                ErrorKind::UpstreamStreamTruncated,
            ),
            (
                vec![Ok(Bytes::from(half.to_owned())), Err("reset".into())],
                ErrorKind::UpstreamStreamInterrupted,
            ),
            (
                vec![Ok(Bytes::from_static(
                    b"data: {not json\n\ndata: [DONE]\n\n",
                ))],
                ErrorKind::UpstreamProtocol,
            ),
        ];
        for (chunks, kind) in cases {
            let (out, stats) = run(chunks, true).await;
            assert_eq!(stats.error, Some(kind));
            let last = out.trim_end().rsplit("\n\n").next().unwrap();
            assert!(last.starts_with("data: {\"error\""), "{out}");
            assert!(last.contains(kind.code()), "{out}");
            assert!(
                !out.contains("{not json"),
                "a malformed event is not forwarded"
            );
        }
    }

    #[tokio::test]
    async fn an_event_that_never_ends_is_cut_at_the_bound() {
        let big = Bytes::from(vec![b'x'; 1024 * 1024]);
        let mut chunks = vec![Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\ndata: "))];
        chunks.extend((0..=MAX_EVENT_BYTES / big.len()).map(|_| Ok(big.clone())));
        let (out, stats) = run(chunks, false).await;
        assert_eq!(stats.error, Some(ErrorKind::UpstreamProtocol));
        assert!(out.starts_with("data: {\"choices\":[]}\n\n"));
        assert!(
            out.ends_with("\n\n") && out.contains("larger than"),
            "{}",
            &out[..200]
        );
        assert!(out.len() < 4096, "the partial event is never forwarded");
    }

    #[tokio::test]
    async fn data_after_done_ends_the_stream() {
        let chunks = vec![
            Ok(Bytes::from_static(b"data: [DONE]\n\n")),
            Ok(Bytes::from_static(b"data: {\"late\":true}\n\n")),
            Ok(Bytes::from_static(b"data: {\"later\":true}\n\n")),
        ];
        let (out, stats) = run(chunks, true).await;
        assert_eq!(out, "data: [DONE]\n\n");
        assert_eq!(stats.error, None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_upstream_times_out_with_an_event() {
        let now = Instant::now();
        let timeouts = StreamTimeouts {
            first_event: now + Duration::from_millis(100),
            idle: Duration::from_millis(100),
            total: now + Duration::from_secs(10),
        };
        // One event, then silence: paused time advances straight to the idle deadline.
        let first = Ok(Bytes::from_static(CONTENT_EVENT));
        let source = Source::Replay {
            chunks: VecDeque::from([first]),
            ends: false,
        };
        let tee = Tee::new(source, true, timeouts, now);
        let mut body = GatewayBody::stream(tee, ExchangeStats::default());
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, CONTENT_EVENT);
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(frame.starts_with(b"data: {\"error\""));
        assert_eq!(body.stats().error, Some(ErrorKind::UpstreamTimeout));
        assert!(body.frame().await.is_none());
    }
}
