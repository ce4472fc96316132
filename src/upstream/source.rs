//! Where a streamed answer's bytes come from: an upstream HTTP body or the built-in demo.

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;
use hyper::body::Incoming;

use crate::providers::demo::DemoStream;

/// A source of SSE bytes for the tee. An enum rather than a boxed trait object: the set is
/// closed and this keeps one allocation off every stream.
pub enum Source {
    Http(Incoming),
    /// The lean HTTP/1.1 client's body, read straight from the upstream connection.
    H1(crate::upstream::h1::H1Body),
    Demo(DemoStream),
    /// A Gemini stream, translated to OpenAI's chunks on the way.
    Gemini(Box<crate::upstream::google::TranslatedStream>),
    /// Finished or abandoned; holds nothing, so the upstream connection is already released.
    Closed,
    /// Chunks already in memory, replayed in order: what tests and benches feed the tee to
    /// cut a stream every possible way. With `ends: false` the source stalls once they are
    /// used up, like an upstream that went quiet.
    Replay {
        chunks: std::collections::VecDeque<Result<Bytes, String>>,
        ends: bool,
    },
}

impl Source {
    /// The next data chunk, skipping trailers; errors are described, not typed, because the
    /// tee only turns them into a terminal event.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        match self {
            Source::Http(body) => loop {
                let frame = match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Ready(Some(Err(err))) => {
                        return Poll::Ready(Some(Err(format!(
                            "upstream connection failed mid-stream: {err}"
                        ))));
                    }
                    Poll::Ready(Some(Ok(frame))) => frame,
                };
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Poll::Ready(Some(Ok(data)));
                }
            },
            Source::H1(body) => body.poll_chunk(cx),
            Source::Demo(stream) => stream.poll_chunk(cx).map(|c| c.map(Ok)),
            Source::Gemini(stream) => stream.poll_chunk(cx),
            Source::Closed => Poll::Ready(None),
            Source::Replay { chunks, ends } => match chunks.pop_front() {
                None if !*ends => Poll::Pending,
                next => Poll::Ready(next),
            },
        }
    }
}
