//! The lean HTTP/1.1 server for the API listener: one task per connection that reads a head,
//! calls the service, and writes the answer itself.
//!
//! Why not hyper here: a proxy's per-request work is small, and hyper's server side (a body
//! channel, a boxed header timer, 4 KiB header slot arrays, a fresh 8 KiB read buffer) was a
//! third of the gateway's user-space time per request and most of a held stream's memory.
//! HTTP/2 connections still go to hyper (see `listener`).
//!
//! Phases per request: head (under `header_read_timeout`; an idle keep-alive connection closes
//! quietly when it expires or on shutdown) -> service call (the client's close is noticed and
//! cancels it) -> response (content-length for whole bodies, chunked for streams, each stream
//! event written as it comes) -> next request, unless either side asked to close, the body was
//! not read to its end, or the gateway is draining.

pub mod body;
mod date;
pub mod head;
mod io;

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::GatewayBody;
use crate::error::{self, ErrorKind, GatewayError};
use crate::telemetry::metrics::Metrics;
use crate::upstream::h1::codec::{BodyDecoder, Framing};
use body::LeanBody;
use head::{BodyFraming, HeadError, RequestHead};
use io::ConnIo;

pub use io::READ_CHUNK;

use super::inbound::InboundBody;
use super::listener::ConnectionLimits;

/// Most unread request body drained after an early answer, so the client sees the answer
/// instead of a reset.
const LINGER_BYTES: usize = 256 * 1024;
/// How long that draining may take.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Serves one connection whose first bytes (already read into `buf`) are not HTTP/2.
pub async fn serve<S>(
    stream: TcpStream,
    buf: BytesMut,
    first_head_deadline: Instant,
    mut service: S,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<InboundBody>, Response = Response<GatewayBody>, Error = Infallible>,
{
    let conn = Arc::new(ConnIo::new(stream, buf));
    let mut head_out = Vec::with_capacity(256);
    let mut deadline = pin!(tokio::time::sleep_until(first_head_deadline));
    let mut first = true;
    loop {
        // Each head gets `header_read_timeout`; the first one's started with the connection.
        if !std::mem::take(&mut first) {
            deadline
                .as_mut()
                .reset(Instant::now() + limits.header_read_timeout);
        }
        let head = match read_head(&conn, deadline.as_mut(), &mut shutdown, &limits).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(err) => {
                metrics
                    .unauthenticated()
                    .record(err.kind.status().as_u16(), Some(err.kind));
                metrics.record_error(err.kind);
                tracing::debug!(error = %err, "refused a request head");
                let answer = error::into_response(&err);
                let info = ExchangeInfo {
                    version: Version::HTTP_11,
                    is_head: false,
                    keep_alive: false,
                    max_buffered: limits.max_header_bytes,
                };
                if write_response(&conn, &mut head_out, answer, info)
                    .await
                    .is_ok()
                {
                    linger(&conn).await;
                }
                return;
            }
        };
        let mut info = ExchangeInfo {
            version: head.version,
            is_head: head.method == Method::HEAD,
            keep_alive: head.keep_alive,
            max_buffered: limits.max_header_bytes,
        };
        let request = into_request(&conn, head);
        if poll_fn(|cx| service.poll_ready(cx)).await.is_err() {
            return;
        }
        let call = service.call(request);
        let Some(Ok(response)) = call_watching(&conn, call, limits.max_header_bytes).await else {
            // The client closed the connection while its request was being served.
            return;
        };
        let body_read = conn.read_side().body.is_done();
        info.keep_alive &= body_read && !*shutdown.borrow();
        match write_response(&conn, &mut head_out, response, info).await {
            Ok(true) => {}
            Ok(false) => {
                if !body_read {
                    linger(&conn).await;
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// Waits for a complete request head. `Ok(None)`: the connection should close quietly (the
/// client closed it, or it sat idle past the deadline, or the gateway is draining).
async fn read_head(
    conn: &ConnIo,
    mut deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    shutdown: &mut watch::Receiver<bool>,
    limits: &ConnectionLimits,
) -> Result<Option<RequestHead>, GatewayError> {
    let mut draining = pin!(shutdown.wait_for(|stop| *stop));
    poll_fn(|cx| {
        let mut side = conn.read_side();
        loop {
            if !side.buf.is_empty() {
                match head::parse_request(&mut side.buf, limits.max_header_bytes) {
                    Ok(Some(head)) => return Poll::Ready(Ok(Some(head))),
                    Ok(None) => {}
                    Err(HeadError::TooLarge) => {
                        return Poll::Ready(Err(GatewayError::new(
                            ErrorKind::HeadersTooLarge,
                            format!(
                                "request head is larger than {} bytes",
                                limits.max_header_bytes
                            ),
                        )));
                    }
                    Err(HeadError::Malformed(why)) => {
                        return Poll::Ready(Err(GatewayError::new(
                            ErrorKind::MalformedRequest,
                            format!("malformed HTTP request: {why}"),
                        )));
                    }
                }
            }
            match conn.poll_fill(&mut side, cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        let idle = side.buf.is_empty();
        if deadline.as_mut().poll(cx).is_ready() {
            if idle {
                return Poll::Ready(Ok(None));
            }
            return Poll::Ready(Err(GatewayError::new(
                ErrorKind::HeaderReadTimeout,
                "request head was not received in time",
            )));
        }
        // Draining: a connection between requests closes; one mid-head gets its deadline.
        if idle && draining.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(None));
        }
        Poll::Pending
    })
    .await
}

fn into_request(conn: &Arc<ConnIo>, head: RequestHead) -> Request<InboundBody> {
    let length = match head.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::UntilClose => None,
    };
    {
        let mut side = conn.read_side();
        side.body = BodyDecoder::new(head.framing);
        if head.expect_continue && head.framing != Framing::Empty && side.buf.is_empty() {
            conn.expect_continue(&mut side);
        }
    }
    let mut request = Request::new(InboundBody::Lean(LeanBody::new(conn.clone(), length)));
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    request
}

/// Runs the service's future, and notices meanwhile if the client closes the connection
/// (`None`), so an abandoned request stops costing upstream time.
async fn call_watching<F: Future>(
    conn: &ConnIo,
    call: F,
    max_buffered: usize,
) -> Option<F::Output> {
    let mut call = pin!(call);
    let mut watching = true;
    poll_fn(|cx| {
        if let Poll::Ready(out) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if watching && client_closed(conn, cx, max_buffered, &mut watching) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Polls the client side while a request is served: true once the client has closed. Bytes
/// that arrive meanwhile (a pipelined request) are kept; past `max_buffered`, watching stops.
/// Until the request body is read, the body's own reads see a close instead.
fn client_closed(
    conn: &ConnIo,
    cx: &mut Context<'_>,
    max_buffered: usize,
    watching: &mut bool,
) -> bool {
    let mut side = conn.read_side();
    if !side.body.is_done() {
        return false;
    }
    loop {
        match conn.poll_fill(&mut side, cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(_)) if side.buf.len() >= max_buffered => {
                *watching = false;
                return false;
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return false,
        }
    }
}

type Frame = Option<Result<http_body::Frame<Bytes>, Infallible>>;

/// Writes `response`. `Ok(true)`: the whole body went out and the connection may continue.
async fn write_response(
    conn: &ConnIo,
    head_out: &mut Vec<u8>,
    response: Response<GatewayBody>,
    exchange: ExchangeInfo,
) -> std::io::Result<bool> {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = match body.size_hint().exact() {
        _ if bodiless => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
        None if exchange.version == Version::HTTP_11 => BodyFraming::Chunked,
        None => BodyFraming::UntilClose,
    };
    let keep_alive = exchange.keep_alive && framing != BodyFraming::UntilClose;
    date::with_date(|date| {
        head::encode_response(
            head_out,
            status,
            &parts.headers,
            framing,
            keep_alive,
            keep_alive && exchange.version == Version::HTTP_10,
            date,
        );
    });
    drop(parts);
    if exchange.is_head || bodiless {
        conn.write_all(&mut [head_out]).await?;
        return Ok(keep_alive);
    }
    let chunked = framing == BodyFraming::Chunked;
    let mut body = pin!(body);
    // The head goes out with the first data when that is ready at once, else on its own.
    let mut unsent_head: &[u8] = head_out;
    let mut watching = true;
    let mut size_line = [0u8; 18];
    loop {
        let frame: Frame = if unsent_head.is_empty() {
            let waited = poll_fn(|cx| {
                if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                    return Poll::Ready(Some(frame));
                }
                if watching && client_closed(conn, cx, exchange.max_buffered, &mut watching) {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            // `None`: the client went away mid-stream; dropping the body ends the upstream.
            let Some(frame) = waited else {
                return Ok(false);
            };
            frame
        } else {
            match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    conn.write_all(&mut [unsent_head]).await?;
                    unsent_head = &[];
                    continue;
                }
            }
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Empty data and trailers: nothing to send (trailers are not forwarded).
                _ => continue,
            },
            Some(Err(never)) => match never {},
            None => {
                let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                conn.write_all(&mut [unsent_head, end]).await?;
                return Ok(keep_alive);
            }
        };
        if chunked {
            let line = head::chunk_size_line(data.len(), &mut size_line);
            // A whole body knows it has ended: its terminator rides along.
            let tail: &[u8] = if body.is_end_stream() {
                b"\r\n0\r\n\r\n"
            } else {
                b"\r\n"
            };
            conn.write_all(&mut [unsent_head, line, &data, tail])
                .await?;
            if body.is_end_stream() {
                return Ok(keep_alive);
            }
        } else {
            conn.write_all(&mut [unsent_head, &data]).await?;
        }
        unsent_head = &[];
    }
}

/// What `write_response` needs to know about the request it answers.
#[derive(Clone, Copy)]
struct ExchangeInfo {
    version: Version,
    is_head: bool,
    keep_alive: bool,
    max_buffered: usize,
}

/// Closes our sending side, then reads and drops what the client still sends (bounded in
/// bytes and time), so an early answer is not lost to a connection reset.
async fn linger(conn: &ConnIo) {
    conn.shutdown_write();
    let mut drained = 0;
    let draining = poll_fn(|cx| {
        let mut side = conn.read_side();
        loop {
            side.buf.clear();
            match conn.poll_fill(&mut side, cx) {
                Poll::Ready(Ok(n)) if n > 0 && drained + n < LINGER_BYTES => drained += n,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    let _ = tokio::time::timeout(LINGER_TIME, draining).await;
}
