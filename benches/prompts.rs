//! Criterion benches of the prompt step a request naming a template pays: rendering a
//! version's messages, the whole step (reference, version, render, splice into the body), and
//! the parse of the body it produces. Compiling is per config snapshot, not per request: done
//! once here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use serde_json::{Map, Value};
use tollgate::api::decode::RequestFields;
use tollgate::config::{PromptsConfig, VersionName};
use tollgate::prompt::{Library, PRODUCTION, PromptFiles, PromptVersion, Reference};
use tollgate::telemetry::metrics::Metrics;

/// A typical three-message template: a system message with a conditional list (a loop over
/// an array variable), the user's question, and an assistant message that opens the answer.
const SUPPORT: &str = r#"model: fast
params: {temperature: 0.2, max_tokens: 300}
variables:
  product: {required: true, max_length: 64, example: Tollgate}
  facts: {type: array, max_length: 8, default: []}
  question: {required: true, max_length: 4000, example: How do I get a refund?}
messages:
  - role: system
    content: >-
      You are the support assistant for {{ product }}. Answer in at most five sentences,
      and say so when you do not know.
      {%- if facts %} What you know:{% for fact in facts %} ({{ loop.index }}) {{ fact }}{% endfor %}{% endif %}
  - role: user
    content: "{{ question }}"
  - role: assistant
    content: "Happy to help with {{ product }}. Here is what applies to your case:"
"#;

/// A request for [`SUPPORT`], as a client sends it: the prompt names no version, so it gets
/// the `production` label.
const REQUEST: &str = r#"{"model":"fast","prompt":{"id":"support","variables":{"product":"Tollgate","facts":["Refunds are issued within 14 days of purchase.","Annual plans are refunded pro rata.","Refunds go to the original payment method."],"question":"I bought the annual plan last week by mistake. Can I get my money back, and how long will it take?"}},"user":"u-42"}"#;

/// A request for the repository's example prompt (`config/prompts/support-answer/1.yaml`:
/// two messages, three variables), as the load harness's `prompt` variant sends it.
const EXAMPLE_REQUEST: &str = r#"{"model":"fast","prompt":{"id":"support-answer","variables":{"product":"Tollgate","language":"English","question":"How do I get a refund?"}}}"#;

/// `support` from [`SUPPORT`] and the shipped `support-answer` prompt, each with
/// `production` on version 1, compiled as a config snapshot compiles them.
fn library() -> Library {
    let mut files = PromptFiles::default();
    files
        .templates
        .insert(("support".into(), "1".into()), SUPPORT.into());
    for (path, text) in tollgate::prompt::files::EMBEDDED {
        if let Some(version) = path.strip_prefix("support-answer/")
            && let Some(version) = version.strip_suffix(".yaml")
            && !version.contains('/')
        {
            files
                .templates
                .insert(("support-answer".into(), version.into()), text.to_string());
        }
    }
    let production = |v: &str| BTreeMap::from([(PRODUCTION.to_owned(), VersionName(v.into()))]);
    let config = PromptsConfig {
        dir: PathBuf::from("unused"),
        labels: BTreeMap::from([
            ("support".to_owned(), production("1")),
            ("support-answer".to_owned(), production("1")),
        ]),
        embedded: false,
    };
    tollgate::prompt::compile(&config, &files, None, &Metrics::new()).unwrap()
}

/// The `production` version of prompt `id`.
fn production<'a>(library: &'a Library, id: &str) -> &'a PromptVersion {
    library.get(id).unwrap().label(PRODUCTION).unwrap()
}

/// The variables of a request body's prompt.
fn variables(request: &str) -> Map<String, Value> {
    let body: Value = serde_json::from_str(request).unwrap();
    match &body["prompt"]["variables"] {
        Value::Object(map) => map.clone(),
        _ => unreachable!("the requests above have variables"),
    }
}

/// The prompt step of one request after the body's first parse, as `api::prompted` runs it
/// (less the tenant's permission check, the canary lookup and the step's timing): the body's
/// reference, its version, then `render_body`: variables checked, messages rendered, the new
/// body written.
fn step(
    library: &Library,
    fields: &RequestFields<'_>,
    body: &[u8],
    headers: &HeaderMap,
) -> Vec<u8> {
    let reference = Reference::find(fields.prompt_reference(), headers)
        .unwrap()
        .unwrap();
    let prompt = library.get(&reference.id).unwrap();
    let version = match prompt.named(&reference.pick).unwrap() {
        Some(version) => version,
        None => prompt.label(PRODUCTION).unwrap(),
    };
    version
        .render_body(
            reference.variables,
            body,
            fields.params_present,
            version.model.as_deref(),
        )
        .unwrap()
}

fn prompts(c: &mut Criterion) {
    let library = library();
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("prompt");
    for (name, id, request, messages) in [
        ("3_messages", "support", REQUEST, 3),
        ("support-answer@1", "support-answer", EXAMPLE_REQUEST, 2),
    ] {
        let version = production(&library, id);
        let given = variables(request);
        let mut members = Vec::new();
        version
            .render_json(Some(given.clone()), &mut members)
            .unwrap();
        let rendered: Vec<Value> =
            serde_json::from_slice(&[b"[", &members[..], b"]"].concat()).unwrap();
        assert_eq!(rendered.len(), messages, "{name}");

        // (a) Variables checked and messages rendered to JSON members. The variables are the
        // request's (a map `Reference::find` built), cloned outside the timing.
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("render_json/{name}"), |b| {
            b.iter_batched(
                || given.clone(),
                |given| {
                    let mut out = Vec::with_capacity(512);
                    version.render_json(Some(given), &mut out).unwrap();
                    out
                },
                BatchSize::SmallInput,
            )
        });

        // (b) The whole step on the body as received (parsed once before, as the path does).
        let body = request.as_bytes();
        let fields = RequestFields::parse(body).unwrap();
        let spliced = step(&library, &fields, body, &headers);
        let reparsed = RequestFields::parse(&spliced).unwrap();
        assert!(reparsed.prompt_reference().is_none() && reparsed.model == "fast");
        group.bench_function(format!("step/{name}"), |b| {
            b.iter(|| step(&library, &fields, black_box(body), &headers))
        });
        // ... and the re-parse of the new body the path does next: the step's whole cost.
        group.bench_function(format!("step_and_reparse/{name}"), |b| {
            b.iter(|| {
                let spliced = step(&library, &fields, black_box(body), &headers);
                RequestFields::parse(&spliced).unwrap().params_present
            })
        });

        // (c) For scale: the parse every request pays, of the body as sent and of the body it
        // became (what a chat request with the same upstream body parses instead).
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("parse_request/{name}"), |b| {
            b.iter(|| {
                RequestFields::parse(black_box(body))
                    .unwrap()
                    .params_present
            })
        });
        group.throughput(Throughput::Bytes(spliced.len() as u64));
        group.bench_function(format!("parse_rendered/{name}"), |b| {
            b.iter(|| {
                RequestFields::parse(black_box(&spliced))
                    .unwrap()
                    .params_present
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Microsecond functions: a short run gives stable medians and keeps `cargo bench` quick.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = prompts
}
criterion_main!(benches);
