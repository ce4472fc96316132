//! Criterion benches of the local rate limiter's decision, the part of the rate-limit step a
//! request pays on its way in and out: `admit` (a take from every rule of every limit that
//! applies) and `Admission::settle` (the true-up when the response ends) for one limit with
//! one requests rule, for three limits (tenant, route, tenant on the route) and for all five
//! places, each with a requests and a tokens rule; a refusal; the chars-rule token estimate
//! of a typical 1 KB chat body, for scale; writing the `x-ratelimit-*` response headers; and
//! the same decision from two threads at once on one shared limit, against two threads on two
//! limits of their own.
//!
//! Limits are built as a config snapshot builds them (`LimitTable::attach` of configs parsed
//! from YAML), once, before timing. They are far above what the benches take, so nothing is
//! refused except in the refusal bench. The clock is read as the release build reads it
//! (`Instant::now`, twice a request); `tollgate::ratelimit::clock` is not used here because
//! tokio's `test-util`, on in dev builds, adds a runtime lookup to every reading.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use serde_json::json;
use tollgate::api::decode::RequestFields;
use tollgate::config::LimitConfig;
use tollgate::ratelimit::admit::{Applicable, Estimate, Outcome};
use tollgate::ratelimit::estimate::{Estimator, TokenCounting};
use tollgate::ratelimit::{Limit, LimitTable, Place, admit};
use tollgate::telemetry::metrics::Operation;

/// One requests rule, as a route might set it.
const REQUESTS: &str = "requests_per_minute: 1000000000\n";
/// A requests rule and a tokens rule.
const REQUESTS_AND_TOKENS: &str =
    "requests_per_minute: 1000000000\ntokens_per_minute: 1000000000000\n";
/// A limit that lets one request a minute in: taken once, then every request is refused.
const ONE_A_MINUTE: &str = "requests_per_minute: 1\n";

fn config(yaml: &str) -> LimitConfig {
    serde_norway::from_str(yaml).unwrap()
}

/// The limits at `places`, each with the rules of `yaml`, attached as a snapshot attaches them.
fn limits(places: &[Place<'_>], yaml: &str) -> Applicable {
    let config = config(yaml);
    let mut table = LimitTable::default();
    places
        .iter()
        .map(|place| table.attach(None, place.clone(), Some(&config)).unwrap())
        .collect()
}

const TENANT: Place<'static> = Place::Tenant("search");
const KEY: Place<'static> = Place::Key {
    tenant: "search",
    hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
};
const ROUTE: Place<'static> = Place::Route("fast");
const TENANT_ON_ROUTE: Place<'static> = Place::TenantOnRoute("search", "fast");
const VERSION: Place<'static> = Place::Version("fast", "stable");

/// A typical chat request of about 1 KB: a system message and four turns of a support
/// conversation, no `max_tokens` (so the output reservation is the default cap).
fn chat_body() -> Vec<u8> {
    let body = json!({
        "model": "fast",
        "messages": [
            {"role": "system", "content": "You are the support assistant for an online bookshop. Answer politely and briefly, in the customer's language, and say so when you do not know the answer."},
            {"role": "user", "content": "Hello! I ordered two paperbacks last Tuesday and the tracking page still says the parcel is being prepared. Is something wrong with my order, or is this normal?"},
            {"role": "assistant", "content": "Thanks for your patience. Orders with several items ship once every item is in our warehouse; one of your books was on back order until yesterday, so the parcel should leave within two working days."},
            {"role": "user", "content": "Could you split the order instead, so that the first book ships now? I need it for a reading group on Saturday morning, and the second one can wait until next week."},
            {"role": "assistant", "content": "Of course. I have split the order: the first paperback ships today by express post at no extra cost, and you will receive a second tracking number for the other one."},
            {"role": "user", "content": "Thank you! Will the express post need a signature?"}
        ],
        "temperature": 0.3,
        "user": "u-42"
    });
    serde_json::to_vec(&body).unwrap()
}

/// Nanoseconds since `epoch`, as the limiter clock counts them.
fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One request through the limiter: the applicable limits gathered (Arc clones, as the
/// per-request step collects them), admitted, then settled with the upstream's usage.
fn decide(limits: &Applicable, estimate: Estimate, usage: (u64, u64), epoch: Instant) {
    let admission = admit(limits.clone(), estimate, now_ns(epoch)).unwrap();
    black_box(&admission.report);
    admission.settle(
        Outcome {
            usage: Some(usage),
            ..Outcome::default()
        },
        now_ns(epoch),
    );
}

/// Per-operation time of `threads` threads running `op` `iters` times each, all at once: the
/// slowest thread's time from a common start (thread start-up is outside the timing).
fn concurrently(threads: usize, iters: u64, op: impl Fn(usize) + Sync) -> Duration {
    let start = Barrier::new(threads);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|t| {
                let (start, op) = (&start, &op);
                scope.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..iters {
                        op(t);
                    }
                    began.elapsed()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).max().unwrap()
    })
}

fn bench(c: &mut Criterion) {
    let epoch = Instant::now();
    let body = chat_body();
    let fields = RequestFields::parse(&body).unwrap();
    let prompt = fields.content(Operation::Chat).unwrap();
    let estimator = Estimator::new(&TokenCounting::default()).unwrap();
    let input = estimator.input_tokens(Operation::Chat, Some(prompt), fields.tools);
    eprintln!(
        "chat body: {} bytes, {input} input tokens by the chars rule",
        body.len()
    );
    // What the per-request step charges that body: its input, and the default output
    // reservation (no `max_tokens`); the answer then reports 60 output tokens.
    let estimate = Estimate {
        input,
        output: 4096,
        output_requested: false,
    };
    let usage = (input, 60);

    let mut group = c.benchmark_group("ratelimit");

    // (a) The decision, admit then settle, by how many limits apply.
    let one = limits(&[ROUTE], REQUESTS);
    let three = limits(&[TENANT, ROUTE, TENANT_ON_ROUTE], REQUESTS_AND_TOKENS);
    let five = limits(
        &[TENANT, KEY, ROUTE, TENANT_ON_ROUTE, VERSION],
        REQUESTS_AND_TOKENS,
    );
    for (name, limits, estimate) in [
        // A requests-only limit needs no estimate: the step charges an empty one.
        ("1_limit_requests", &one, Estimate::default()),
        ("3_limits_requests_tokens", &three, estimate),
        ("5_limits_requests_tokens", &five, estimate),
    ] {
        group.bench_function(format!("admit_settle/{name}"), |b| {
            b.iter(|| decide(limits, black_box(estimate), usage, epoch))
        });
    }

    // (b) A refusal: the tenant and the tenant on the route take, the route's rule (spent
    // beforehand) refuses, the takes are given back and the refusal's headers computed.
    let spent = limits(&[ROUTE], ONE_A_MINUTE);
    admit(spent.clone(), Estimate::default(), now_ns(epoch)).unwrap();
    let mut refusing = limits(&[TENANT, TENANT_ON_ROUTE], REQUESTS_AND_TOKENS);
    refusing.insert(1, spent[0].clone());
    group.bench_function("refused/3_limits_requests_tokens", |b| {
        b.iter(|| {
            let rejection = admit(refusing.clone(), black_box(estimate), now_ns(epoch));
            rejection.unwrap_err().refusal
        })
    });

    // (c) For scale: the token estimate the step makes first when a tokens rule applies.
    group.bench_function("estimate_chat_1k/chars", |b| {
        b.iter(|| estimator.input_tokens(Operation::Chat, Some(black_box(prompt)), None))
    });
    // ... and the two together: the whole limiter cost of such a request with 3 limits.
    group.bench_function("estimate_admit_settle/3_limits_requests_tokens", |b| {
        b.iter(|| {
            let input = estimator.input_tokens(Operation::Chat, Some(black_box(prompt)), None);
            let estimate = Estimate { input, ..estimate };
            decide(&three, estimate, usage, epoch)
        })
    });

    // (d) The response's `x-ratelimit-*` headers: the admission's report (a requests and a
    // tokens rule) written into a response head that holds what the gateway's own response
    // headers hold by then (the map is built, and dropped, outside the timing).
    let admission = admit(three.clone(), estimate, now_ns(epoch)).unwrap();
    let mut head = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("x-tollgate-request-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("x-tollgate-route", "fast"),
        ("x-tollgate-route-version", "stable"),
    ] {
        head.insert(name, HeaderValue::from_static(value));
    }
    group.bench_function("report_write/requests_tokens", |b| {
        b.iter_batched(
            || head.clone(),
            |mut head| {
                admission.report.write(&mut head);
                head
            },
            BatchSize::SmallInput,
        )
    });
    admission.settle(Outcome::default(), now_ns(epoch));

    // (e) Two threads at once. Each iteration is one decision on each thread; the time is
    // per decision per thread. On one shared limit both threads move the same atomics (the
    // limit's reference count and each rule's bucket); on limits of their own they share no
    // written memory (their buckets are allocated apart; a warning says when they may not be).
    let own: [Applicable; 2] = [
        limits(&[ROUTE], REQUESTS_AND_TOKENS),
        limits(&[ROUTE], REQUESTS_AND_TOKENS),
    ];
    let (a, b) = (
        own[0][0].rules.as_ptr() as usize,
        own[1][0].rules.as_ptr() as usize,
    );
    if a.abs_diff(b) < 128 {
        eprintln!("the two limits' buckets may share a cache line: `own_limits` is not clean");
    }
    let shared = &own[0];
    group.bench_function("admit_settle/1_limit_requests_tokens", |b| {
        b.iter(|| decide(shared, black_box(estimate), usage, epoch))
    });
    group.bench_function("2_threads_shared_limit/1_limit_requests_tokens", |b| {
        b.iter_custom(|iters| {
            concurrently(2, iters, |_| {
                decide(shared, black_box(estimate), usage, epoch)
            })
        })
    });
    group.bench_function("2_threads_own_limits/1_limit_requests_tokens", |b| {
        b.iter_custom(|iters| {
            concurrently(2, iters, |t| {
                decide(&own[t], black_box(estimate), usage, epoch)
            })
        })
    });
    // The machine's own cost of two threads, with no memory written in common: the estimate,
    // which reads the shared prompt and writes nothing shared.
    group.bench_function("2_threads/estimate_chat_1k/chars", |b| {
        b.iter_custom(|iters| {
            concurrently(2, iters, |_| {
                black_box(estimator.input_tokens(Operation::Chat, Some(black_box(prompt)), None));
            })
        })
    });
    group.finish();

    // Nothing was refused but the refusal bench's requests.
    for limit in one
        .iter()
        .chain(&three)
        .chain(&five)
        .chain(own.iter().flatten())
    {
        assert_no_rejections(limit);
    }
}

fn assert_no_rejections(limit: &Arc<Limit>) {
    for (rule, n) in limit.rejections() {
        assert_eq!(n, 0, "{} {rule} refused {n} requests", limit.name);
    }
}

criterion_group! {
    name = benches;
    // Nanosecond functions: a short run gives stable medians and keeps `cargo bench` quick.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
