//! One client connection's socket and read buffer, shared by the connection loop and the
//! request body that is being read from it.
//!
//! Both live in the connection's one task, so the lock is never contended; it exists because a
//! request body must be `'static` and `Send` to travel through the service stack.
//!
//! Reads go through tokio's `AsyncRead` (not `try_read`): after a short read it knows the
//! socket is drained and waits for epoll, instead of spending a system call on `EAGAIN`.

use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::upstream::h1::codec::BodyDecoder;

/// Read buffer growth step; small, because a held stream keeps its connection's buffer.
pub const READ_CHUNK: usize = 4096;

/// Answer to `Expect: 100-continue`, sent when the body is first wanted.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The read side: bytes received and not yet consumed, and the body in progress.
pub struct ReadSide {
    read: OwnedReadHalf,
    pub buf: BytesMut,
    /// The client closed its sending side.
    pub eof: bool,
    pub body: BodyDecoder,
    /// Bytes of `100 Continue` still to send, before the body is read.
    pub continue_pending: usize,
}

pub struct ConnIo {
    write: OwnedWriteHalf,
    read: Mutex<ReadSide>,
}

impl ConnIo {
    pub fn new(stream: TcpStream, buf: BytesMut) -> Self {
        let (read, write) = stream.into_split();
        Self {
            write,
            read: Mutex::new(ReadSide {
                read,
                buf,
                eof: false,
                body: BodyDecoder::new(crate::upstream::h1::codec::Framing::Empty),
                continue_pending: 0,
            }),
        }
    }

    pub fn read_side(&self) -> MutexGuard<'_, ReadSide> {
        // A panic while holding the lock leaves plain bytes behind; they are still usable.
        self.read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads what the socket has into `side.buf`. `Ok(0)` means the client closed.
    pub fn poll_fill(&self, side: &mut ReadSide, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if side.eof {
            return Poll::Ready(Ok(0));
        }
        if side.buf.capacity() - side.buf.len() < READ_CHUNK / 4 {
            side.buf.reserve(READ_CHUNK);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            std::pin::Pin::new(&mut side.read),
            cx,
            &mut side.buf
        ))?;
        side.eof = n == 0;
        Poll::Ready(Ok(n))
    }

    /// Half-closes the connection: the client reads our end of data, and may still send.
    pub fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(self.write.as_ref()).shutdown(std::net::Shutdown::Write);
    }

    /// Sends what is left of `100 Continue`.
    pub fn poll_continue(&self, side: &mut ReadSide, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while side.continue_pending > 0 {
            ready!(self.write.as_ref().poll_write_ready(cx))?;
            let from = CONTINUE.len() - side.continue_pending;
            match self.write.try_write(&CONTINUE[from..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => side.continue_pending -= n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        Poll::Ready(Ok(()))
    }

    pub fn expect_continue(&self, side: &mut ReadSide) {
        side.continue_pending = CONTINUE.len();
    }

    /// Writes every byte of `parts`, in order, with as few system calls as the socket allows.
    pub async fn write_all(&self, parts: &mut [&[u8]]) -> io::Result<()> {
        let mut first = 0;
        loop {
            while first < parts.len() && parts[first].is_empty() {
                first += 1;
            }
            if first == parts.len() {
                return Ok(());
            }
            let slices: [IoSlice<'_>; 4] = std::array::from_fn(|i| {
                IoSlice::new(parts.get(first + i).copied().unwrap_or_default())
            });
            let count = (parts.len() - first).min(4);
            match self.write.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut written) => {
                    for part in &mut parts[first..] {
                        let take = written.min(part.len());
                        *part = &part[take..];
                        written -= take;
                        if written == 0 {
                            break;
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.write.writable().await?;
                }
                Err(err) => return Err(err),
            }
        }
    }
}
