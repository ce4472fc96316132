//! A request body read straight from the client connection, on demand.
//!
//! Nothing is read before the service asks (auth runs first, so an unauthenticated body is
//! never buffered). Data is handed out as zero-copy slices of the connection's read buffer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::io::ConnIo;
use crate::upstream::h1::codec::{CodecError, Decoded};

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum LeanBodyError {
    #[error("client closed the connection before the body ended")]
    Closed,
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    #[error("reading the body failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct LeanBody {
    conn: Arc<ConnIo>,
    /// Declared length, for `size_hint`, until the first data; `None` for chunked bodies.
    length: Option<u64>,
    ended: bool,
}

impl LeanBody {
    pub fn new(conn: Arc<ConnIo>, length: Option<u64>) -> Self {
        Self {
            conn,
            length,
            ended: false,
        }
    }
}

impl Body for LeanBody {
    type Data = Bytes;
    type Error = LeanBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LeanBodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let conn = self.conn.clone();
        let mut guard = conn.read_side();
        let side = &mut *guard;
        loop {
            match side.body.decode(&mut side.buf) {
                Ok(Decoded::Data(data)) => {
                    // The hint was for the whole body; what remains is no longer exact.
                    self.length = None;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Err(err) => {
                    let why = match err {
                        CodecError::Malformed(why) => why,
                        CodecError::HeadTooLarge => "chunk too large",
                    };
                    return Poll::Ready(Some(Err(LeanBodyError::Malformed(why))));
                }
                Ok(Decoded::NeedMore) => {}
            }
            if let Err(err) = ready!(conn.poll_continue(side, cx)) {
                return Poll::Ready(Some(Err(err.into())));
            }
            match ready!(conn.poll_fill(side, cx)) {
                Ok(0) => return Poll::Ready(Some(Err(LeanBodyError::Closed))),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.length == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) if !self.ended => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
