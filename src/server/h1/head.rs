//! HTTP/1.1 request heads in, response heads out: pure functions over buffers, tested here.
//!
//! A request head is parsed in place and frozen once; the URI and header values are slices of
//! that one buffer, so a request costs no copy of its head.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri, Version};

use crate::upstream::h1::codec::{
    Framing, connection_has, content_length, field_spans, header_map, is_chunked,
};

/// Most headers a request may carry (httparse's slots live on the stack).
const MAX_HEADERS: usize = 100;

/// A parsed request head, ready to become an `http::Request`.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// `Empty`, `Length` or `Chunked`; requests are never delimited by close.
    pub framing: Framing,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// Why a request head was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    TooLarge,
    Malformed(&'static str),
}

/// Parses a request head from the front of `buf`, removing it. `Ok(None)`: need more bytes.
pub fn parse_request(
    buf: &mut BytesMut,
    max_bytes: usize,
) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialised slots: zeroing 100 of them would cost more than parsing the head.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("unparseable request head")),
    };
    if len > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("bad method"))?;
    let path = request.path.unwrap_or_default().as_bytes();
    let path_start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path_end = path_start + path.len();
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let spans = field_spans(buf, request.headers);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_start..path_end))
        .map_err(|_| HeadError::Malformed("bad request target"))?;
    let headers = header_map(&head, &spans).map_err(HeadError::Malformed)?;
    let length = content_length(&headers).map_err(HeadError::Malformed)?;
    let chunked = is_chunked(&headers).map_err(HeadError::Malformed)?;
    let close_token = connection_has(&headers, b"close");
    let keep_alive_token = connection_has(&headers, b"keep-alive");
    let expect_continue = headers.get(header::EXPECT).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    });
    let framing = match (chunked, length) {
        // Both framings at once is how requests are smuggled past proxies (RFC 9112 6.1).
        (true, Some(_)) => {
            return Err(HeadError::Malformed(
                "both content-length and transfer-encoding",
            ));
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        (false, _) => Framing::Empty,
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close_token,
        _ => !close_token,
    };
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    }))
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// `content-length: n`, then n bytes (none for HEAD).
    Length(u64),
    Chunked,
    /// No framing header; the body ends when the connection closes (HTTP/1.0 streams).
    UntilClose,
    /// 204 and 304: no body and no length.
    None,
}

/// Writes a response head into `out` (cleared first). Framing, connection and date headers
/// are the server's to choose, so the same names in `headers` are skipped.
pub fn encode_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: BodyFraming,
    keep_alive: bool,
    http10_keep_alive: bool,
    date: &[u8],
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // Framing, connection and date are the server's own; an upstream's `date` would
        // make two.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::DATE
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::UntilClose | BodyFraming::None => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10_keep_alive {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line of one chunk, `{len:x}\r\n`, in a stack buffer.
pub fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[count] = HEX[n & 0xf];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        out[i] = digits[count - 1 - i];
    }
    out[count] = b'\r';
    out[count + 1] = b'\n';
    &out[..count + 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(text), 8192)
    }

    #[test]
    fn parses_a_request_and_leaves_the_body_in_the_buffer() {
        let mut buf = BytesMut::from(
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-User-Id: u1\r\nX-User-Id: u2\r\n\r\n{}GET",
        );
        let head = parse_request(&mut buf, 8192).unwrap().unwrap();
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri.path(), "/v1/chat/completions");
        assert_eq!(head.uri.query(), Some("x=1"));
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive && !head.expect_continue);
        let users: Vec<_> = head.headers.get_all("x-user-id").iter().collect();
        assert_eq!(users, ["u1", "u2"]);
        assert_eq!(head.headers["host"], "a");
        assert_eq!(&buf[..], b"{}GET");
    }

    #[test]
    fn partial_heads_wait_and_oversized_heads_are_refused() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(9000));
        assert_eq!(parse(&big).unwrap_err(), HeadError::TooLarge);
        let complete_but_big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(&complete_but_big).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn framing_rules() {
        let framing = |extra: &str| {
            parse(&format!("POST / HTTP/1.1\r\n{extra}\r\n")).map(|h| h.unwrap().framing)
        };
        assert_eq!(framing(""), Ok(Framing::Empty));
        assert_eq!(framing("content-length: 0\r\n"), Ok(Framing::Empty));
        assert_eq!(
            framing("transfer-encoding: gzip, chunked\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("content-length: 3\r\ncontent-length: 3\r\n"),
            Ok(Framing::Length(3))
        );
        for bad in [
            "content-length: 3\r\ncontent-length: 4\r\n",
            "content-length: -1\r\n",
            "content-length: +1\r\n",
            "content-length: 1 2\r\n",
            "transfer-encoding: gzip\r\n",
            "transfer-encoding: chunked\r\ncontent-length: 3\r\n",
        ] {
            assert!(
                matches!(framing(bad), Err(HeadError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn keep_alive_and_expect() {
        let head = |text: &str| parse(text).unwrap().unwrap();
        assert!(!head("GET / HTTP/1.1\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            head("POST / HTTP/1.1\r\nexpect: 100-Continue\r\ncontent-length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(
            !head("POST / HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn response_heads_carry_framing_and_skip_the_servers_own_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        headers.insert(
            "date",
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        let mut out = Vec::new();
        let date = b"Sat, 28 Nov 2026 03:00:00 GMT";
        encode_response(
            &mut out,
            StatusCode::OK,
            &headers,
            BodyFraming::Length(12),
            true,
            false,
            date,
        );
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\ndate: Sat, 28 Nov 2026 03:00:00 GMT\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n"
        );
        encode_response(
            &mut out,
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            BodyFraming::Chunked,
            false,
            false,
            date,
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        encode_response(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            BodyFraming::Length(1),
            true,
            true,
            date,
        );
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("content-length: 1\r\nconnection: keep-alive\r\n\r\n")
        );
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }
}
