//! The lean HTTP/1.1 upstream client for plain-HTTP upstreams (vLLM, TGI, Ollama, llama.cpp
//! on a cluster network): the request is written and the answer read in the request's own
//! task, with per-worker keep-alive pools and a 4 KiB read buffer per connection.
//!
//! hyper's client drives each connection from a task of its own and hands every head and
//! body chunk over through channels, with 16 KiB of buffers per connection; for a proxy
//! that mostly moves small JSON bodies and SSE events, that was the largest user-space cost
//! in the profile (see the README's Performance section). TLS and HTTP/2 upstreams keep
//! using hyper's client.

pub mod codec;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use codec::{BodyDecoder, CodecError, Decoded, Head, parse_head};

/// Read buffer of a connection; grown in steps of this size when a head or chunk needs it.
const READ_BUFFER: usize = 4096;

/// One keep-alive connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// True when the idle connection has neither been closed by the upstream nor received
    /// unsolicited bytes. Uses the reactor's cached readiness: no syscall when all is well.
    fn is_clean(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_BUFFER / 4 {
            self.buf.reserve(READ_BUFFER);
        }
    }
}

type Idle = Arc<Mutex<Vec<Conn>>>;

/// Why an exchange failed before the response head was complete.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    Io(String),
    Protocol(CodecError),
}

/// A lean client for one upstream host.
pub struct H1Client {
    host: Box<str>,
    port: u16,
    connect_timeout: Duration,
    max_idle: usize,
    /// One idle pool per worker: connections stay with the worker that opened them.
    idle: Box<[Idle]>,
}

impl std::fmt::Debug for H1Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H1Client({}:{})", self.host, self.port)
    }
}

impl H1Client {
    pub fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        max_idle: usize,
        workers: usize,
    ) -> Self {
        Self {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            connect_timeout,
            max_idle,
            idle: (0..workers.max(1)).map(|_| Idle::default()).collect(),
        }
    }

    fn pool(&self) -> &Idle {
        &self.idle[crate::server::worker_index() % self.idle.len()]
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.pool().lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.is_clean() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let connecting = TcpStream::connect((&*self.host, self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(SendError::Connect(err.to_string())),
            Err(_) => return Err(SendError::Connect("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER),
        })
    }

    /// Writes `request` (a complete HTTP/1.1 request) and reads the response head. A pooled
    /// connection that turns out to be closed before any byte of the answer arrived is
    /// replaced by a fresh one once: the upstream closed it while idle, so the request was
    /// never seen.
    pub async fn send(&self, request: &[u8]) -> Result<(Head, H1Body), SendError> {
        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            let may_retry = reused && !retried;
            if let Err(err) = conn.stream.write_all(request).await {
                if may_retry {
                    retried = true;
                    continue;
                }
                return Err(SendError::Io(err.to_string()));
            }
            let head = loop {
                match parse_head(&mut conn.buf) {
                    Ok(Some(head)) => break Some(head),
                    Ok(None) => {}
                    Err(err) => return Err(SendError::Protocol(err)),
                }
                conn.make_room();
                match conn.stream.read_buf(&mut conn.buf).await {
                    Ok(0) if may_retry && conn.buf.is_empty() => break None,
                    Ok(0) => {
                        return Err(SendError::Io(
                            "upstream closed the connection before answering".into(),
                        ));
                    }
                    Ok(_) => {}
                    Err(err) if may_retry && conn.buf.is_empty() => {
                        tracing::debug!(error = %err, "pooled upstream connection failed; retrying on a new one");
                        break None;
                    }
                    Err(err) => return Err(SendError::Io(err.to_string())),
                }
            };
            let Some(head) = head else {
                retried = true;
                continue;
            };
            let body = H1Body {
                decoder: BodyDecoder::new(head.framing),
                keep_alive: head.keep_alive,
                conn: Some(conn),
                idle: self.pool().clone(),
                max_idle: self.max_idle,
            };
            return Ok((head, body));
        }
    }
}

/// The body of one response, read straight from the connection. At its clean end the
/// connection goes back to its worker's pool; dropped early, the connection is closed,
/// which tells the upstream to stop.
pub struct H1Body {
    conn: Option<Conn>,
    decoder: BodyDecoder,
    keep_alive: bool,
    idle: Idle,
    max_idle: usize,
}

impl H1Body {
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.keep_alive && self.decoder.is_done() && conn.buf.is_empty() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
    }

    /// The next piece of body, `None` at its end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) if data.is_empty() => continue,
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => {
                    self.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(err) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(format!("upstream body: {err}"))));
                }
            }
            conn.make_room();
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.buf
            )) {
                Ok(0) => {
                    self.keep_alive = false;
                    if let Err(err) = self.decoder.at_eof() {
                        self.conn = None;
                        return Poll::Ready(Some(Err(format!("upstream body: {err}"))));
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(format!(
                        "upstream connection failed mid-body: {err}"
                    ))));
                }
            }
        }
    }
}

/// The fixed start of every request to `path` on `authority`: request line, host, content
/// type and the provider's static headers. Built once per snapshot.
pub fn request_prefix(path: &str, authority: &str, headers: &HeaderMap) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// A complete request: the prefix, the route version's header lines, the per-request headers
/// and the body, in one buffer so it leaves in one write.
pub fn encode_request(prefix: &[u8], extra: &[&[u8]], accept: &str, body: &[u8]) -> Vec<u8> {
    let extra_len: usize = extra.iter().map(|line| line.len()).sum();
    let mut out = Vec::with_capacity(prefix.len() + extra_len + body.len() + 64);
    out.extend_from_slice(prefix);
    for line in extra {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_valid_http1_message() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer k".parse().unwrap());
        let prefix = request_prefix("/v1/chat/completions", "127.0.0.1:8000", &headers);
        let request = encode_request(
            &prefix,
            &[b"x-route: canary\r\n"],
            "text/event-stream",
            b"{\"model\":\"m\"}",
        );
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut slots);
        let httparse::Status::Complete(len) = parsed.parse(&request).unwrap() else {
            panic!()
        };
        assert_eq!(parsed.method, Some("POST"));
        assert_eq!(parsed.path, Some("/v1/chat/completions"));
        let get = |n: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name == n)
                .map(|h| h.value.to_vec())
        };
        assert_eq!(get("host").unwrap(), b"127.0.0.1:8000");
        assert_eq!(get("authorization").unwrap(), b"Bearer k");
        assert_eq!(get("x-route").unwrap(), b"canary");
        assert_eq!(get("content-length").unwrap(), b"13");
        assert_eq!(&request[len..], b"{\"model\":\"m\"}");
    }
}
