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
                        .upstream_body(&body, model, stream, &[])
                        .map(|b| b.len())
                        .unwrap_or(0),
                )
            })
        });
    }
    group.finish();
}

/// The whole tee over a replayed stream: split, parse every event, strip the usage chunk.
fn tee(c: &mut Criterion) {
    use std::collections::VecDeque;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::time::Instant;
    use tollgate::body::GatewayBody;
    use tollgate::upstream::source::Source;
    use tollgate::upstream::stats::ExchangeStats;
    use tollgate::upstream::tee::{StreamTimeouts, Tee};

    let stream = Bytes::from(chat_stream());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("tee");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk_size in [256usize, 4096] {
        let chunks: VecDeque<Result<Bytes, String>> = (0..stream.len())
            .step_by(chunk_size)
            .map(|at| Ok(stream.slice(at..(at + chunk_size).min(stream.len()))))
            .collect();
        group.bench_function(format!("strip_usage/chunks_of_{chunk_size}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let now = Instant::now();
                    let timeouts = StreamTimeouts {
                        first_event: now + Duration::from_secs(60),
                        idle: Duration::from_secs(60),
                        total: now + Duration::from_secs(60),
                    };
                    let source = Source::Replay {
                        chunks: chunks.clone(),
                        ends: true,
                    };
                    let mut body = GatewayBody::stream(
                        Tee::new(source, true, timeouts, now),
                        ExchangeStats::default(),
                    );
                    let mut bytes = 0;
                    while let Some(Ok(frame)) = body.frame().await {
                        bytes += frame.into_data().map_or(0, |d| d.len());
                    }
                    assert_eq!(body.stats().events, 64);
                    bytes
                })
            })
        });
    }
    group.finish();
}

/// Per-request lookups: the caller's key to its tenant, and the alias to its route.
fn lookups(c: &mut Criterion) {
    use tollgate::config::Config;
    use tollgate::telemetry::metrics::Metrics;

    let mut yaml = String::from("providers:\n  d:\n    type: demo\nroutes:\n");
    for i in 0..50 {
        yaml.push_str(&format!("  model-{i}:\n    provider: d\n"));
    }
    yaml.push_str("tenants:\n");
    for i in 0..1000 {
        let hash = tollgate::auth::hash_key(&format!("sk-tenant-{i}"));
        yaml.push_str(&format!(
            "  - name: t{i}\n    key_hashes: [\"{hash}\"]\n    models: [\"*\"]\n"
        ));
    }
    let config = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let snapshot =
        tollgate::snapshot::compile(&config, &yaml, &std::sync::Arc::new(Metrics::new()))
            .unwrap_or_else(|e| panic!("{e}"));
    let keys = snapshot
        .keys
        .as_ref()
        .unwrap_or_else(|| panic!("auth is on"));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        http::HeaderValue::from_static("Bearer sk-tenant-777"),
    );

    let mut group = c.benchmark_group("lookup");
    group.bench_function("key_to_tenant_among_1000", |b| {
        b.iter(|| {
            tollgate::auth::authenticate(keys, black_box(&headers)).map(|(t, _)| t.name.len())
        })
    });
    group.bench_function("alias_to_route_and_permission_among_50", |b| {
        b.iter(|| {
            let route = &snapshot.routes[black_box("model-37")];
            snapshot.anonymous.may_use(route.index)
        })
    });
    group.finish();
}

/// The routing decision: alias -> route -> version, for a route with three weighted versions,
/// by a random draw and by a sticky header.
fn routing(c: &mut Criterion) {
    use tollgate::api::choose::{Wanted, route_and_version};
    use tollgate::config::Config;
    use tollgate::telemetry::metrics::Metrics;

    let yaml = "auth:\n  enabled: false\nproviders:\n  d:\n    type: demo\nroutes:\n  \
        random:\n    versions:\n      v1: {provider: d, weight: 90}\n      v2: {provider: d, weight: 9}\n      v3: {provider: d, weight: 1}\n  \
        sticky:\n    sticky: header:x-user-id\n    versions:\n      v1: {provider: d, weight: 90}\n      v2: {provider: d, weight: 9}\n      v3: {provider: d, weight: 1}\n";
    let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = tollgate::snapshot::compile(&config, yaml, &std::sync::Arc::new(Metrics::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user-id", http::HeaderValue::from_static("user-1234567"));
    let tenant = snapshot.anonymous.clone();
    let mut group = c.benchmark_group("routing");
    for model in ["random", "sticky", "random@v3"] {
        group.bench_function(format!("choose/{model}"), |b| {
            let wanted = Wanted {
                model,
                user: None,
                headers: &headers,
            };
            b.iter(|| route_and_version(&snapshot, &tenant, black_box(&wanted)).map(|c| c.version))
        });
    }
    // Endpoint choice among 4 replicas, and recording the outcome, as a request does.
    use tollgate::providers::endpoints::{EndpointHealth, now, pick};
    let replicas: Vec<std::sync::Arc<EndpointHealth>> = (0..4)
        .map(|i| {
            let health = std::sync::Arc::new(EndpointHealth::default());
            health.succeeded(std::time::Duration::from_micros(300 + 100 * i), now());
            health
        })
        .collect();
    group.bench_function("endpoint/pick_and_record_among_4", |b| {
        b.iter(|| {
            let chosen = pick(&replicas, |h| &**h, now(), |n| fastrand::usize(..n));
            let health = &replicas[chosen.index];
            let guard = health.start();
            health.succeeded(std::time::Duration::from_micros(350), now());
            drop(guard);
            chosen.index
        })
    });
    group.finish();
}

/// HTTP/1.1 heads: the client's request head in, the response head out, the upstream's
/// response head in.
fn heads(c: &mut Criterion) {
    use tollgate::server::h1::head::{BodyFraming, encode_response, parse_request};
    use tollgate::upstream::h1::codec::parse_head;

    let request = Bytes::from_static(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway.internal:8080\r\nUser-Agent: OpenAI/Python 1.99.0\r\n\
          Accept: application/json\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-tenant-777\r\n\
          X-Stainless-Lang: python\r\nX-User-Id: user-42\r\nContent-Length: 1024\r\n\r\n",
    );
    let answer = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 812\r\n\
          date: Sat, 28 Nov 2026 03:00:00 GMT\r\nx-request-id: req-abc\r\n\r\n",
    );
    let mut group = c.benchmark_group("http1_head");
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function("parse_request", |b| {
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(&request[..]);
            parse_request(&mut buf, 64 * 1024).map(|h| h.map(|h| h.headers.len()))
        })
    });
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-tollgate-request-id",
        http::HeaderValue::from_static("0123456789abcdef"),
    );
    headers.insert("x-tollgate-route", http::HeaderValue::from_static("gpt-4o"));
    let mut out = Vec::with_capacity(256);
    let encode = |out: &mut Vec<u8>, headers: &http::HeaderMap| {
        encode_response(
            out,
            http::StatusCode::OK,
            headers,
            BodyFraming::Length(812),
            true,
            false,
            b"Sat, 28 Nov 2026 03:00:00 GMT",
        );
        out.len()
    };
    group.throughput(Throughput::Bytes(encode(&mut out, &headers) as u64));
    group.bench_function("encode_response", |b| {
        b.iter(|| encode(&mut out, black_box(&headers)))
    });
    group.throughput(Throughput::Bytes(answer.len() as u64));
    group.bench_function("parse_upstream_response", |b| {
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(&answer[..]);
            parse_head(&mut buf).map(|h| h.map(|h| h.headers.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, sse, decode, tee, lookups, heads, routing);
criterion_main!(benches);
