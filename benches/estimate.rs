//! Criterion benches of the token estimate a request pays before an upstream call when a
//! token budget applies: a chat prompt of about 1 KiB and one of about 16 KiB, counted by the
//! chars rule and by the o200k_base and cl100k_base tokenizers (loaded once, before timing),
//! and the tokenizer's bounded work on hostile 1 MiB inputs (runs of one character, random
//! letters or code points), of which it reads the first `TOKENIZER_BUDGET_BYTES`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use tollgate::ratelimit::estimate::{Estimator, TokenCounting};
use tollgate::telemetry::metrics::Operation;

const SYSTEM: &str = "You are the support assistant for an online bookshop. Answer politely \
and briefly, in the customer's language, and say so when you do not know the answer.";

/// Turns of a support conversation, repeated until the prompt is long enough.
const TURNS: [(&str, &str); 4] = [
    (
        "user",
        "Hello! I ordered two paperbacks last Tuesday and the tracking page still says the \
         parcel is being prepared. Is something wrong with my order, or is this normal?",
    ),
    (
        "assistant",
        "Thanks for your patience. Orders with several items ship once every item is in our \
         warehouse; one of your books was on back order until yesterday, so the parcel should \
         leave within two working days.",
    ),
    (
        "user",
        "Could you split the order instead, so that the first book ships now? I need it for a \
         reading group on Saturday morning, and the second one can wait until next week.",
    ),
    (
        "assistant",
        "Of course. I have split the order: the first paperback ships today by express post at \
         no extra cost, and you will receive a second tracking number for the other one.",
    ),
];

/// A chat `messages` array of about `bytes` bytes of JSON.
fn messages(bytes: usize) -> Box<RawValue> {
    let mut list = vec![serde_json::json!({"role": "system", "content": SYSTEM})];
    let mut size = SYSTEM.len();
    for (role, content) in TURNS.iter().cycle() {
        if size >= bytes {
            break;
        }
        list.push(serde_json::json!({"role": role, "content": content}));
        size += content.len() + 30;
    }
    RawValue::from_string(serde_json::to_string(&list).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let methods = [
        ("chars", TokenCounting::default()),
        ("o200k_base", TokenCounting::O200kBase),
        ("cl100k_base", TokenCounting::Cl100kBase),
    ];
    // Loading an encoding is once per process, on the first snapshot that uses it.
    for (name, counting) in &methods[1..] {
        let (rss, start) = (resident_kib(), Instant::now());
        Estimator::new(counting).unwrap();
        let (took, grew) = (start.elapsed(), resident_kib().saturating_sub(rss));
        eprintln!("loading {name}: {took:.1?}, resident memory +{grew} KiB");
    }
    let mut group = c.benchmark_group("estimate");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for (label, size) in [("1k", 1024), ("16k", 16 * 1024)] {
        let prompt = messages(size);
        group.throughput(Throughput::Bytes(prompt.get().len() as u64));
        for (name, counting) in &methods {
            let estimator = Estimator::new(counting).unwrap();
            group.bench_function(format!("chat_{label}/{name}"), |b| {
                b.iter(|| estimator.input_tokens(Operation::Chat, Some(black_box(&prompt)), None))
            });
        }
    }
    // The tokenizer reads at most its budget; the rest is extrapolated.
    let mut rng = fastrand::Rng::with_seed(3);
    let hostile: [(&str, String); 8] = [
        ("one_letter", "a".repeat(1 << 20)),
        ("spaces", " ".repeat(1 << 20)),
        ("newlines", "\n".repeat(1 << 20)),
        ("bangs", "!".repeat(1 << 20)),
        ("emoji", "\u{1F600}".repeat(1 << 18)),
        (
            "random_cjk",
            (0..1 << 18)
                .map(|_| rng.char('\u{4E00}'..'\u{9FFF}'))
                .collect(),
        ),
        (
            "random_letters",
            (0..1 << 20).map(|_| rng.alphabetic()).collect(),
        ),
        ("random_any", (0..1 << 18).map(|_| rng.char(..)).collect()),
    ];
    for (label, text) in hostile {
        let long = RawValue::from_string(serde_json::to_string(&text).unwrap()).unwrap();
        group.throughput(Throughput::Bytes(long.get().len() as u64));
        for (name, counting) in &methods[..2] {
            let estimator = Estimator::new(counting).unwrap();
            group.bench_function(format!("{label}_1m/{name}"), |b| {
                b.iter(|| {
                    estimator.input_tokens(Operation::Embeddings, Some(black_box(&long)), None)
                })
            });
        }
    }
    group.finish();
}

/// Resident memory of this process (Linux; 0 elsewhere).
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

criterion_group!(benches, bench);
criterion_main!(benches);
