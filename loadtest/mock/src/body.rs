//! Response bodies: whole, aborting, stalled, and the paced event stream (SSE or JSON array).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::sse::SseRender;
use crate::stats::StreamGuard;

/// The error a body yields to make hyper cut the connection (HTTP/2: reset the stream).
pub(crate) fn injected_reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "tollgate-mock: injected reset",
    )
}

/// Every response body the mock sends.
#[derive(Debug)]
pub(crate) enum MockBody {
    /// The whole body in one frame.
    Full(Option<Bytes>),
    /// Declares `declared` bytes, sends `sent`, then fails so the response is cut.
    Abort {
        sent: Option<Bytes>,
        declared: u64,
        failed: AbortState,
    },
    /// Headers only; the body never makes progress.
    Stall { declared: u64 },
    /// A paced stream of events (OpenAI SSE, Gemini SSE or a Gemini JSON array).
    Sse(Box<SseBody<dyn EventPlan>>),
}

/// Progress of an aborting body after its data went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AbortState {
    /// Pause once so hyper flushes the data; it drops unflushed bytes when a body fails.
    Flush,
    Fail,
    Done,
}

/// Returns `Pending` but asks to be polled again at once, giving hyper a chance to flush.
fn yield_once<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        MockBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Abort {
                sent,
                failed,
                declared: _,
            } => {
                if let Some(b) = sent.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                match failed {
                    AbortState::Flush => {
                        *failed = AbortState::Fail;
                        yield_once(cx)
                    }
                    AbortState::Fail => {
                        *failed = AbortState::Done;
                        Poll::Ready(Some(Err(injected_reset())))
                    }
                    AbortState::Done => Poll::Ready(None),
                }
            }
            // Never woken: hyper drops the body when the connection goes away.
            MockBody::Stall { .. } => Poll::Pending,
            MockBody::Sse(sse) => sse.poll_event(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Abort { .. } | MockBody::Stall { .. } => false,
            MockBody::Sse(sse) => sse.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            // Declaring the full length makes the cut visible to the client.
            MockBody::Abort { declared, .. } | MockBody::Stall { declared } => {
                SizeHint::with_exact(*declared)
            }
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}

/// What happens once a stream has sent its allowed events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// End cleanly (all events sent, or `truncate-after`).
    Clean,
    /// Send the mid-stream error event, then end cleanly.
    Error,
    /// Fail the body so hyper aborts the response.
    Reset,
    /// Never send anything more.
    Stall,
}

/// The events of one stream: what each one looks like and when it is due. One plan per wire
/// format; [`SseBody`] paces them and applies the fault endings.
pub(crate) trait EventPlan: fmt::Debug + Send + Sync {
    /// Events of an unfaulted stream: content, then any trailer (usage, `[DONE]`, a closing `]`).
    fn total_events(&self) -> usize;
    /// Events that carry content; `truncate-after` and `error-after` stop at or before these.
    fn content_events(&self) -> usize;
    /// The bytes of event `i` (`i < total_events()`).
    fn render(&self, i: usize) -> Bytes;
    /// Pause before event `i`.
    fn delay_before(&self, i: usize) -> Duration;
    /// The error that ends a stream after `sent` events (the `error-after` fault).
    fn error_event(&self, sent: usize) -> Bytes;
    /// Makes the first event invalid JSON (the `malformed` fault).
    fn malform_first(&mut self);
    /// `content-type` of the response.
    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("text/event-stream")
    }
}

/// Shape of an OpenAI stream's events, fixed when the request is handled.
#[derive(Debug)]
pub(crate) struct SsePlan {
    pub(crate) render: SseRender,
    /// Tokens generated (0 still sends one empty content chunk to carry finish_reason).
    pub(crate) completion_tokens: usize,
    pub(crate) finish_reason: &'static str,
    pub(crate) prompt_tokens: u64,
    pub(crate) include_usage: bool,
    pub(crate) ttft: Duration,
    pub(crate) inter_token: Duration,
    pub(crate) malformed_first: bool,
}

impl EventPlan for SsePlan {
    fn content_events(&self) -> usize {
        self.completion_tokens.max(1)
    }

    /// Content, optional usage, `[DONE]`.
    fn total_events(&self) -> usize {
        self.content_events() + usize::from(self.include_usage) + 1
    }

    fn render(&self, i: usize) -> Bytes {
        let content = self.content_events();
        if i < content {
            if i == 0 && self.malformed_first {
                return self.render.malformed();
            }
            let token = (self.completion_tokens > 0).then_some(i);
            let finish = (i + 1 == content).then_some(self.finish_reason);
            self.render.content(token, finish)
        } else if i == content && self.include_usage {
            self.render
                .usage(self.prompt_tokens, self.completion_tokens as u64)
        } else {
            self.render.done()
        }
    }

    /// Ttft before the first event, inter_token between content chunks; usage and `[DONE]`
    /// follow the last chunk at once, as real servers do.
    fn delay_before(&self, i: usize) -> Duration {
        if i == 0 {
            self.ttft
        } else if i < self.content_events() {
            self.inter_token
        } else {
            Duration::ZERO
        }
    }

    fn error_event(&self, _sent: usize) -> Bytes {
        self.render.error()
    }

    fn malform_first(&mut self) {
        self.malformed_first = true;
    }
}

/// A stream that sends `limit` events of its plan, then applies its [`Ending`].
/// The plan is the last field so a `Box<SseBody<P>>` coerces to `Box<SseBody<dyn EventPlan>>`.
#[derive(Debug)]
pub(crate) struct SseBody<P: ?Sized + EventPlan> {
    next: usize,
    limit: usize,
    ending: Ending,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    flushed: bool,
    done: bool,
    guard: StreamGuard,
    plan: P,
}

impl<P: EventPlan> SseBody<P> {
    pub(crate) fn new(plan: P, limit: usize, ending: Ending, guard: StreamGuard) -> Self {
        let limit = limit.min(plan.total_events());
        Self {
            plan,
            next: 0,
            limit,
            ending,
            sleep: None,
            waiting: false,
            flushed: false,
            done: false,
            guard,
        }
    }
}

impl<P: ?Sized + EventPlan> SseBody<P> {
    fn finish(&mut self) {
        self.done = true;
        self.guard.complete();
    }

    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.next >= self.limit {
            return match self.ending {
                Ending::Clean => {
                    self.finish();
                    Poll::Ready(None)
                }
                Ending::Error => {
                    self.finish();
                    Poll::Ready(Some(Ok(Frame::data(self.plan.error_event(self.next)))))
                }
                Ending::Reset if !self.flushed => {
                    // hyper drops unflushed bytes when a body fails; let it write them first.
                    self.flushed = true;
                    yield_once(cx)
                }
                Ending::Reset => {
                    self.done = true;
                    self.guard.disarm();
                    Poll::Ready(Some(Err(injected_reset())))
                }
                Ending::Stall => Poll::Pending,
            };
        }
        let delay = self.plan.delay_before(self.next);
        if !delay.is_zero() {
            if !self.waiting {
                let deadline = Instant::now() + delay;
                match &mut self.sleep {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                self.waiting = true;
            }
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
            }
            self.waiting = false;
        }
        let frame = self.plan.render(self.next);
        self.next += 1;
        // Mark the end with the last frame so hyper can close the stream without another poll.
        if self.next >= self.limit && self.ending == Ending::Clean {
            self.finish();
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::*;
    use crate::config::LineEnding;
    use crate::responses::Surface;
    use crate::stats::MockStats;

    fn plan(tokens: usize, include_usage: bool) -> SsePlan {
        SsePlan {
            render: SseRender::new(Surface::Chat, "id", 0, "m", LineEnding::Lf, false),
            completion_tokens: tokens,
            finish_reason: "stop",
            prompt_tokens: 3,
            include_usage,
            ttft: Duration::ZERO,
            inter_token: Duration::ZERO,
            malformed_first: false,
        }
    }

    async fn collect(plan: SsePlan, limit: usize, ending: Ending) -> (String, Arc<MockStats>) {
        let stats = Arc::new(MockStats::default());
        let body = MockBody::Sse(Box::new(SseBody::new(
            plan,
            limit,
            ending,
            StreamGuard::new(stats.clone()),
        )));
        let bytes = body.collect().await.unwrap().to_bytes();
        (String::from_utf8(bytes.to_vec()).unwrap(), stats)
    }

    #[tokio::test]
    async fn full_stream_counts() {
        let (text, stats) = collect(plan(4, true), usize::MAX, Ending::Clean).await;
        assert_eq!(text.matches("data: ").count(), 4 + 1 + 1);
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(stats.streams_completed(), 1);
        assert_eq!(stats.streams_cancelled(), 0);
    }

    #[tokio::test]
    async fn zero_tokens_still_finishes() {
        let (text, _) = collect(plan(0, false), usize::MAX, Ending::Clean).await;
        assert_eq!(text.matches("data: ").count(), 2);
        assert!(text.contains(r#""finish_reason":"stop""#));
    }

    #[tokio::test]
    async fn error_ending_appends_error_event() {
        let (text, stats) = collect(plan(4, true), 1, Ending::Error).await;
        assert_eq!(text.matches("data: ").count(), 2);
        assert!(text.contains("mock mid-stream failure"));
        assert!(!text.contains("[DONE]"));
        assert_eq!(stats.streams_completed(), 1);
    }

    #[tokio::test]
    async fn reset_ending_fails_the_body() {
        let stats = Arc::new(MockStats::default());
        let body = SseBody::new(
            plan(4, false),
            2,
            Ending::Reset,
            StreamGuard::new(stats.clone()),
        );
        assert!(MockBody::Sse(Box::new(body)).collect().await.is_err());
        assert_eq!(stats.streams_completed() + stats.streams_cancelled(), 0);
    }

    #[tokio::test]
    async fn abort_body_sends_part_then_fails() {
        let mut body = MockBody::Abort {
            sent: Some(Bytes::from_static(b"{\"a\"")),
            declared: 10,
            failed: AbortState::Flush,
        };
        assert_eq!(body.size_hint().exact(), Some(10));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"{\"a\""));
        assert!(body.frame().await.unwrap().is_err());
    }

    #[test]
    fn dropped_stream_counts_as_cancelled() {
        let stats = Arc::new(MockStats::default());
        drop(SseBody::new(
            plan(4, false),
            usize::MAX,
            Ending::Stall,
            StreamGuard::new(stats.clone()),
        ));
        assert_eq!(stats.streams_cancelled(), 1);
    }
}
