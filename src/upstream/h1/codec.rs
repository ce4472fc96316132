//! HTTP/1.1 response framing for the lean upstream client: the head, and the body decoder.
//!
//! Pure functions over a read buffer, so every framing rule is tested without a socket. Data
//! is handed out as zero-copy slices of the buffer (`BytesMut::split_to().freeze()`).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Most headers an upstream response head may carry.
const MAX_HEADERS: usize = 96;
/// Largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (hex digits, extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this body is read.
    pub keep_alive: bool,
}

/// How the body's end is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection (which then cannot be reused).
    UntilClose,
}

/// Why a response could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum CodecError {
    HeadTooLarge,
    Malformed(&'static str),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::HeadTooLarge => {
                write!(f, "response head larger than {MAX_HEAD_BYTES} bytes")
            }
            CodecError::Malformed(what) => write!(f, "malformed response: {what}"),
        }
    }
}

/// Parses a response head from the front of `buf`, removing it. `Ok(None)`: need more bytes.
/// Interim (1xx) responses are skipped.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, CodecError> {
    loop {
        // Uninitialised slots: zeroing 96 of them would cost more than parsing the head.
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(CodecError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(CodecError::Malformed("unparseable head")),
        };
        let code = response.code.ok_or(CodecError::Malformed("no status"))?;
        let status = StatusCode::from_u16(code).map_err(|_| CodecError::Malformed("bad status"))?;
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let http10 = response.version == Some(0);
        let spans = field_spans(buf, response.headers);
        let head = buf.split_to(len).freeze();
        let headers = header_map(&head, &spans).map_err(CodecError::Malformed)?;
        let length = content_length(&headers).map_err(CodecError::Malformed)?;
        let chunked = is_chunked(&headers).map_err(CodecError::Malformed)?;
        let mut close = http10 || connection_has(&headers, b"close");
        let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else if chunked {
            // Transfer-Encoding wins over Content-Length (RFC 9112 6.3); such a message may be
            // an attempt at smuggling, so its connection is not reused.
            close |= length.is_some();
            Framing::Chunked
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        let keep_alive = !close && framing != Framing::UntilClose;
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Where one header's name and value sit in a head buffer, as offsets.
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldSpan {
    name: (usize, usize),
    value: (usize, usize),
}

/// Records where httparse's `headers` (borrowed from `buf`) sit, so that they can be cut
/// from the head once it is frozen.
pub fn field_spans(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<FieldSpan> {
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        (start, start + part.len())
    };
    headers
        .iter()
        .map(|header| FieldSpan {
            name: span(header.name.as_bytes()),
            value: span(header.value),
        })
        .collect()
}

/// The header map of a frozen head. Values share the head's memory: no copy per header.
pub fn header_map(head: &Bytes, spans: &[FieldSpan]) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for field in spans {
        let name = HeaderName::from_bytes(&head[field.name.0..field.name.1])
            .map_err(|_| "bad header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(field.value.0..field.value.1))
            .map_err(|_| "bad header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The declared `content-length`; repeated values must agree.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let digits = value.as_bytes().trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err("bad content-length");
        }
        let parsed = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|known| known != parsed) {
            return Err("conflicting content-length");
        }
        length = Some(parsed);
    }
    Ok(length)
}

/// Whether `transfer-encoding` ends in `chunked`, the only coding this gateway reads. Any
/// other final coding cannot be delimited, so it is refused.
pub fn is_chunked(headers: &HeaderMap) -> Result<bool, &'static str> {
    let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    else {
        return Ok(false);
    };
    let coding = last
        .as_bytes()
        .rsplit(|b| *b == b',')
        .next()
        .unwrap_or_default();
    if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
        Ok(true)
    } else {
        Err("unsupported transfer-encoding")
    }
}

/// Whether a `connection` header carries `token`.
pub fn connection_has(headers: &HeaderMap, token: &[u8]) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Incremental body decoder.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// What the decoder could make of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    NeedMore,
    /// The body is complete.
    End,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, CodecError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), n) => State::Length(n),
                        (_, 0) => State::ChunkDataEnd,
                        (_, n) => State::ChunkData(n),
                    };
                    return Ok(Decoded::Data(data));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let all = buf.len();
                    return Ok(Decoded::Data(buf.split_to(all).freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let digits = line
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.len() <= 16)
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or(CodecError::Malformed("bad chunk size"))?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(CodecError::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The upstream closed the connection: the body ends cleanly only if it was delimited by
    /// the close.
    pub fn at_eof(&mut self) -> Result<Decoded, CodecError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(Decoded::End)
            }
            _ => Err(CodecError::Malformed(
                "connection closed before the body ended",
            )),
        }
    }
}

/// Removes one CRLF-terminated line from the front of `buf` (without the CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
    match memchr::memchr(b'\n', buf) {
        Some(at) if at > 0 && buf[at - 1] == b'\r' => {
            let line = buf.split_to(at + 1).freeze();
            Ok(Some(line.slice(..at - 1)))
        }
        Some(_) => Err(CodecError::Malformed("bare LF in chunked framing")),
        None if buf.len() > MAX_CHUNK_LINE => Err(CodecError::Malformed("chunk line too long")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, CodecError> {
        parse_head(&mut BytesMut::from(text))
    }

    #[test]
    fn parses_framing_and_keep_alive() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::OK, Framing::Length(5), true)
        );
        assert_eq!(h.headers["x-a"], "1");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h =
            head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((h.status, h.framing), (StatusCode::CREATED, Framing::Empty));
    }

    #[test]
    fn rejects_ambiguous_or_broken_heads() {
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5")
                .unwrap()
                .is_none(),
            "partial"
        );
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").is_err());
        assert!(head("garbage\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&huge).unwrap_err(), CodecError::HeadTooLarge);
        let smuggle =
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (smuggle.framing, smuggle.keep_alive),
            (Framing::Chunked, false)
        );
    }

    /// Decodes `wire` fed in pieces of `step` bytes; returns the body and the leftover bytes.
    fn decode_all(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
        let mut decoder = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::NeedMore if fed >= wire.len() => {
                    decoder.at_eof()?;
                    return Ok((body, buf.to_vec()));
                }
                Decoded::NeedMore => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire =
            b"5;ext=1\r\nhello\r\n1\r\n \r\nc\r\ndata: [DONE]\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, rest) = decode_all(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello data: [DONE]", "step {step}");
            assert!(
                b"NEXT".starts_with(&rest[..]),
                "leftover stays for the next response"
            );
        }
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        let (body, rest) = decode_all(Framing::Length(5), b"helloEXTRA", 3).unwrap();
        assert_eq!((body.as_slice(), rest.is_empty()), (&b"hello"[..], false));
        let (body, _) = decode_all(Framing::UntilClose, b"all of it", 4).unwrap();
        assert_eq!(body, b"all of it");
        assert!(
            decode_all(Framing::Length(10), b"short", 2).is_err(),
            "EOF before the length"
        );
        assert!(
            decode_all(Framing::Chunked, b"5\r\nhel", 2).is_err(),
            "EOF mid-chunk"
        );
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        assert!(decode_all(Framing::Chunked, b"zz\r\n", 8).is_err());
        assert!(decode_all(Framing::Chunked, b"2\r\nabXY", 8).is_err());
        assert!(decode_all(Framing::Chunked, b"2\nab", 8).is_err());
        assert!(decode_all(Framing::Chunked, b"11111111111111111\r\n", 32).is_err());
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(Framing::Chunked, &long, 4096).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(5);
        let alphabet = b"0123456789abcdefABCDEF;\r\n xHTP/1. :";
        for _ in 0..20_000 {
            let wire: Vec<u8> = (0..rng.usize(0..80))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let _ = decode_all(Framing::Chunked, &wire, rng.usize(1..9));
            let _ = parse_head(&mut BytesMut::from(&wire[..]));
        }
    }
}
