//! Criterion benches of hot-path pieces: SSE event splitting and request decoding (bytes/s).
#![allow(clippy::panic)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate::api::decode::RequestFields;
use tollgate::upstream::openai_view::AnswerView;
use tollgate::upstream::sse::{EventData, SseSplitter, event_data};

/// A realistic chat stream: 64 content chunks, a usage chunk and `[DONE]`.
fn chat_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..64 {
        out.extend_from_slice(format!(
            "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ).as_bytes());
    }
    out.extend_from_slice(b"data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":64,\"total_tokens\":76}}\n\n");
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// A 1 KB chat request of the kind the load harness sends.
fn chat_request(stream: bool) -> Bytes {
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    Bytes::from(format!(
        r#"{{"model":"llama","stream":{stream},"temperature":0.2,"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{filler}"}}],"user":"u-42"}}"#
    ))
}

fn sse(c: &mut Criterion) {
    let stream = chat_stream();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk_size in [64usize, 1024, 16 * 1024] {
        group.bench_function(format!("split/chunks_of_{chunk_size}"), |b| {
            b.iter(|| {
                let mut splitter = SseSplitter::new();
                let mut events = 0usize;
                for chunk in stream.chunks(chunk_size) {
                    splitter.feed(black_box(chunk), |_| events += 1);
                }
                assert_eq!(events, 66);
            })
        });
    }
    group.bench_function("split_and_read_each_event", |b| {
        b.iter(|| {
            let mut splitter = SseSplitter::new();
            let mut start = 0;
            let mut tokens = 0;
            splitter.feed(black_box(&stream), |end| {
                if let EventData::One(json) = event_data(&stream[start..end])
                    && let Ok(view) = AnswerView::parse(json)
                {
                    tokens += view.usage.map_or(0, |u| u.completion_tokens);
                }
                start = end;
            });
            assert_eq!(tokens, 64);
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, stream, model) in [
        ("non_stream_unchanged", false, None),
        (
            "stream_add_usage_and_rewrite_model",
            true,
            Some(&b"\"meta-llama/Llama-3.1-8B\""[..]),
        ),
    ] {
        let body = chat_request(stream);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let fields =
                    RequestFields::parse(black_box(&body)).unwrap_or_else(|e| panic!("{e}"));
                black_box(
                    fields
                        .upstream_body(&body, model)
                        .map(|b| b.len())
                        .unwrap_or(0),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sse, decode);
criterion_main!(benches);
