//! HTTP/1.1 keep-alive connections to one target, and one timed request over them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What to send: the same request every time.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Target {
    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::post(self.path.as_str())
            .header(http::header::HOST, "load")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(request)
    }
}

/// One keep-alive connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // The connection task ends when the connection closes or `sender` is dropped.
        tokio::spawn(conn);
        Ok(Connection { sender })
    }

    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and returns its body once the response head arrived.
    pub async fn send(&mut self, target: &Target) -> Option<hyper::body::Incoming> {
        let request = target.request().ok()?;
        futures_ready(&mut self.sender).await.ok()?;
        let response = self.sender.send_request(request).await.ok()?;
        response.status().is_success().then(|| response.into_body())
    }
}

/// The outcome of one request, times measured from `sent`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub ok: bool,
    /// Request sent to last body byte received.
    pub latency: Duration,
    /// Request sent to first body frame received.
    pub first_frame: Duration,
    /// SSE data events seen in the body.
    pub events: u32,
    /// Body frames that carried more than one data event.
    pub coalesced_frames: u32,
}

/// Counts `data:` events that start in `frame` (the mock writes LF line endings).
fn data_events(frame: &[u8]) -> u32 {
    let starts_with = u32::from(frame.starts_with(b"data:"));
    starts_with + memchr::memmem::find_iter(frame, b"\ndata:").count() as u32
}

/// Sends one request on `conn` and reads the whole answer.
pub async fn exchange(conn: &mut Connection, target: &Target) -> Outcome {
    let sent = Instant::now();
    let mut outcome = Outcome::default();
    let Ok(request) = target.request() else {
        return outcome;
    };
    if futures_ready(&mut conn.sender).await.is_err() {
        return outcome;
    }
    let Ok(response) = conn.sender.send_request(request).await else {
        return outcome;
    };
    let status_ok = response.status().is_success();
    let mut body = response.into_body();
    let mut first = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return outcome };
        if let Ok(data) = frame.into_data() {
            if first {
                outcome.first_frame = sent.elapsed();
                first = false;
            }
            let events = data_events(&data);
            outcome.events += events;
            if events > 1 {
                outcome.coalesced_frames += 1;
            }
        }
    }
    outcome.latency = sent.elapsed();
    outcome.ok = status_ok;
    outcome
}

async fn futures_ready(sender: &mut SendRequest<Full<Bytes>>) -> hyper::Result<()> {
    std::future::poll_fn(|cx| sender.poll_ready(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_per_frame() {
        assert_eq!(data_events(b"data: a\n\n"), 1);
        assert_eq!(data_events(b"data: a\n\ndata: b\n\n"), 2);
        assert_eq!(data_events(b": keep\n\ndata: b\n\n"), 1);
        assert_eq!(data_events(b"{\"x\":1}"), 0);
    }
}
