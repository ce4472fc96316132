//! The API listener's own HTTP/1.1 server, on the wire: keep-alive and pipelining, 100-continue,
//! HTTP/1.0, refused heads in the OpenAI dialect, early answers, and HTTP/2 by prior knowledge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tollgate::server::Gateway;

async fn demo_gateway() -> Gateway {
    gateway(&config("http://127.0.0.1:9/v1", OPEN_ROUTES)).await
}

fn chat_request(body: &str, extra_headers: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

const DEMO_CHAT: &str = r#"{"model":"d","messages":[{"role":"user","content":"hi"}]}"#;
const DEMO_STREAM: &str =
    r#"{"model":"d","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// One response read off a keep-alive connection: (head, body). Understands content-length
/// and chunked framing, which is all the gateway sends on a connection it keeps open.
async fn read_response(reader: &mut BufReader<OwnedReadHalf>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, reader.read_line(&mut line))
            .await
            .expect("head in time")
            .unwrap();
        assert!(n > 0, "connection closed mid-head: {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        body.resize(len.trim().parse().unwrap(), 0);
        reader.read_exact(&mut body).await.unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    (head, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let gw = demo_gateway().await;
    let stream = TcpStream::connect(gw.api_addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // Three requests in one write: whole, streamed (chunked back), and a GET.
    let all = format!(
        "{}{}GET /v1/models HTTP/1.1\r\nhost: t\r\n\r\n",
        chat_request(DEMO_CHAT, ""),
        chat_request(DEMO_STREAM, "")
    );
    write.write_all(all.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("date: "), "{head}");
    assert_eq!(json(&body)["object"], "chat.completion");
    let (head, body) = read_response(&mut reader).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let (head, body) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["object"], "list");
    // And the connection is still open for a fourth.
    write
        .write_all(chat_request(DEMO_CHAT, "").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn expect_continue_is_answered_before_the_body_is_sent() {
    let gw = demo_gateway().await;
    let stream = TcpStream::connect(gw.api_addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let request = chat_request(DEMO_CHAT, "expect: 100-continue\r\n");
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    write.write_all(head.as_bytes()).await.unwrap();
    let mut interim = String::new();
    for _ in 0..2 {
        tokio::time::timeout(WAIT, reader.read_line(&mut interim))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    write.write_all(body.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["object"], "chat.completion");
}

#[tokio::test]
async fn chunked_request_bodies_are_read() {
    let gw = demo_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    let (first, rest) = DEMO_CHAT.split_at(10);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{first}\r\n{:x};ext=1\r\n{rest}\r\n0\r\n\r\n",
        first.len(),
        rest.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.contains("chat.completion"), "{answer}");
}

#[tokio::test]
async fn http10_clients_get_streams_delimited_by_close() {
    let gw = demo_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    let request = chat_request(DEMO_STREAM, "").replace("HTTP/1.1", "HTTP/1.0");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(data_events(body).last(), Some(&"[DONE]"));
}

#[tokio::test]
async fn refused_heads_get_400_in_the_openai_dialect_and_a_metric() {
    let gw = demo_gateway().await;
    let cases = [
        "NOT HTTP AT ALL\r\n\r\n",
        // Both framings: the classic request-smuggling shape.
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: -1\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip\r\n\r\n",
    ];
    for case in cases {
        let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
        stream.write_all(case.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut stream).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 400 Bad Request"),
            "{case:?}: {head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("x-tollgate-error-source: client"), "{head}");
        assert_openai_error(body, "malformed_http_request");
    }
    let text = metrics(&gw).await;
    assert_eq!(
        sample(
            &text,
            "tollgate_request_errors_total{code=\"malformed_http_request\",fault=\"client\"}"
        ),
        cases.len() as f64
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_requests_total{route=\"\",version=\"\",tenant=\"\",status_class=\"4xx\",error_type=\"malformed_http_request\"}"
        ),
        cases.len() as f64
    );
}

#[tokio::test]
async fn a_head_left_unfinished_past_the_deadline_gets_408() {
    let gw = demo_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_openai_error(body, "header_read_timeout");
    // An idle keep-alive connection, by contrast, is closed without a word.
    let mut idle = TcpStream::connect(gw.api_addr).await.unwrap();
    assert_eq!(read_to_close(&mut idle).await, "");
}

#[tokio::test]
async fn an_answer_given_before_the_body_is_read_reaches_the_client() {
    let gw = demo_gateway().await;
    let mut stream = TcpStream::connect(gw.api_addr).await.unwrap();
    // An unknown path is refused without reading the body; the client is still sending it.
    let body = vec![b'x'; 512 * 1024];
    let head = format!(
        "POST /v1/unknown HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..64 * 1024]).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let (head, answer) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_openai_error(&answer, "unknown_url");
    // The rest of the body may go unread; the connection then ends cleanly or by reset.
    let _ = write.write_all(&body[64 * 1024..]).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, reader.read_to_end(&mut rest))
        .await
        .expect("connection ends");
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let gw = demo_gateway().await;
    let tcp = TcpStream::connect(gw.api_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("http://t/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(DEMO_CHAT.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(response.headers().contains_key("x-tollgate-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        json(std::str::from_utf8(&body).unwrap())["object"],
        "chat.completion"
    );
}
