//! Criterion benches of the Vertex AI translation: what serving an OpenAI client from Gemini
//! adds per request (request out, whole answer back) and per stream (64 events back).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate::config::UnsupportedParams;
use tollgate::providers::vertex::{request, response, stream::StreamTranslator};

/// A 1 KB chat request with a system prompt and one tool, as the load harness sends.
fn chat_request() -> Vec<u8> {
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    format!(
        r#"{{"model":"flash","temperature":0.2,"max_tokens":256,"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{filler}"}}],"tools":[{{"type":"function","function":{{"name":"weather","parameters":{{"type":"object","properties":{{"city":{{"type":"string"}}}}}}}}}}],"user":"u-42"}}"#
    )
    .into_bytes()
}

/// A whole Gemini answer of 64 words.
fn gemini_answer() -> Vec<u8> {
    let text = (0..64).map(|i| format!("token{i} ")).collect::<String>();
    format!(
        r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"{text}"}}]}},"finishReason":"STOP","index":0}}],"usageMetadata":{{"promptTokenCount":280,"candidatesTokenCount":64,"totalTokenCount":344}},"modelVersion":"gemini-2.5-flash-001","responseId":"r1"}}"#
    )
    .into_bytes()
}

/// A Gemini SSE stream: 64 events of one word each, cumulative usage, CRLF framing.
fn gemini_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..64 {
        let finish = if i == 63 {
            r#","finishReason":"STOP""#
        } else {
            ""
        };
        out.extend_from_slice(format!(
            "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\"token{i} \"}}]}}{finish}}}],\"usageMetadata\":{{\"promptTokenCount\":280,\"candidatesTokenCount\":{n},\"totalTokenCount\":{t}}},\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}}\r\n\r\n",
            n = i + 1,
            t = 281 + i
        ).as_bytes());
    }
    out
}

fn translation(c: &mut Criterion) {
    let labels = [
        ("tollgate_tenant", "search"),
        ("tollgate_route", "flash"),
        ("tollgate_version", "stable"),
    ];
    let body = chat_request();
    let mut group = c.benchmark_group("vertex");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("request_to_gemini", |b| {
        b.iter(|| {
            request::generate_content(black_box(&body), UnsupportedParams::Reject, &labels).unwrap()
        })
    });
    let answer = gemini_answer();
    group.throughput(Throughput::Bytes(answer.len() as u64));
    group.bench_function("answer_to_openai", |b| {
        b.iter(|| response::chat_completion(black_box(&answer), "gemini-2.5-flash", 0).unwrap())
    });
    let stream = gemini_stream();
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("stream_to_openai/64_events_in_1k_chunks", |b| {
        b.iter(|| {
            let mut translator = StreamTranslator::new("gemini-2.5-flash", 0);
            let mut out = BytesMut::with_capacity(stream.len() * 2);
            for chunk in stream.chunks(1024) {
                translator.feed(black_box(chunk), &mut out).unwrap();
            }
            translator.finish(&mut out);
            out
        })
    });
    group.finish();
}

criterion_group!(benches, translation);
criterion_main!(benches);
