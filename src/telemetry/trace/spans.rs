//! A finished request's spans, encoded as OTLP `Span` messages: one SERVER span, INTERNAL
//! spans for its steps, one CLIENT span per upstream attempt, with the GenAI attributes.

use super::Finished;
use super::content;
use super::proto::{
    self, AttrKey, Value, attribute, bytes_field, bytes_field_parts, fixed32_field, fixed64_field,
    message,
};
use super::record::{AttemptRecord, Step, StepKind};
use crate::error::{ErrorKind, Fault};
use crate::exchange::Exchange;
use crate::snapshot::Version;

/// `Span` field numbers.
mod field {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

const KIND_INTERNAL: u64 = 1;
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: the is-remote bit of the parent is known (bit 8) and set (bit 9).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Appends every span of `finished` as field `field` (ScopeSpans.spans) to `out`.
pub fn encode(out: &mut Vec<u8>, span_field: u32, finished: &Finished) {
    let exchange = finished.exchange;
    let log = &finished.spans;
    let base = log.start_unix_nanos;
    server_span(out, span_field, finished);
    for step in &log.steps {
        message(out, span_field, |span| {
            header(
                span,
                exchange,
                step.span_id,
                Some(exchange.trace.server_span),
                false,
            );
            bytes_field(span, field::NAME, step.kind.span_name().as_bytes());
            proto::varint_field(span, field::KIND, KIND_INTERNAL);
            times(span, base + step.start, base + step.end);
            step_attributes(span, exchange, step, finished);
        });
    }
    let last = log.attempts.len().saturating_sub(1);
    for (n, attempt) in log.attempts.iter().enumerate() {
        let Some(version) = exchange
            .route
            .get()
            .and_then(|route| route.versions.get(attempt.version))
        else {
            continue;
        };
        message(out, span_field, |span| {
            client_span(span, finished, attempt, version, n, n == last);
        });
    }
}

/// Trace id, span id, trace state, parent and flags.
fn header(span: &mut Vec<u8>, exchange: &Exchange, id: u64, parent: Option<u64>, remote: bool) {
    let trace = &exchange.trace;
    bytes_field(span, field::TRACE_ID, &trace.trace_id.to_be_bytes());
    bytes_field(span, field::SPAN_ID, &id.to_be_bytes());
    if let Some(state) = &trace.tracestate {
        bytes_field(span, field::TRACE_STATE, state.as_bytes());
    }
    if let Some(parent) = parent {
        bytes_field(span, field::PARENT_SPAN_ID, &parent.to_be_bytes());
    }
    let remote_bits = if remote {
        HAS_IS_REMOTE | IS_REMOTE
    } else {
        HAS_IS_REMOTE
    };
    fixed32_field(span, field::FLAGS, u32::from(trace.flags) | remote_bits);
}

fn times(span: &mut Vec<u8>, start: u64, end: u64) {
    fixed64_field(span, field::START, start);
    fixed64_field(span, field::END, end.max(start));
}

fn error_status(span: &mut Vec<u8>, message_text: &str) {
    message(span, field::STATUS, |status| {
        bytes_field(status, 2, message_text.as_bytes());
        proto::varint_field(status, 3, STATUS_ERROR);
    });
}

/// Writes a span attribute named by a literal, its key framed when the program compiles.
macro_rules! attr {
    ($span:expr, $name:literal, $value:expr $(,)?) => {{
        const KEY: AttrKey = AttrKey::new($name);
        proto::attribute_with($span, field::ATTRIBUTES, &KEY, &$value)
    }};
}

/// The method as the HTTP conventions want it: the standard ones by name, others `_OTHER`.
fn standard_method(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The route template of a known API path; raw paths are not span names.
fn http_route(path: &str) -> Option<&'static str> {
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
    ]
    .into_iter()
    .find(|known| *known == path)
}

fn server_span(out: &mut Vec<u8>, span_field: u32, finished: &Finished) {
    let exchange = finished.exchange;
    let answer = &finished.answer;
    let route_template = http_route(&exchange.path);
    message(out, span_field, |span| {
        let trace = &exchange.trace;
        header(
            span,
            exchange,
            trace.server_span,
            trace.remote_parent,
            trace.remote_parent.is_some() && !exchange.shadow,
        );
        // Only the standard methods name a span; a client's invented one is `_OTHER`.
        let method = standard_method(&exchange.method).as_bytes();
        match (exchange.shadow, route_template) {
            (true, _) => bytes_field(span, field::NAME, b"tollgate.shadow"),
            (false, Some(route)) => {
                bytes_field_parts(span, field::NAME, &[method, b" ", route.as_bytes()]);
            }
            (false, None) => bytes_field(span, field::NAME, method),
        }
        let kind = if exchange.shadow {
            KIND_INTERNAL
        } else {
            KIND_SERVER
        };
        proto::varint_field(span, field::KIND, kind);
        let base = finished.spans.start_unix_nanos;
        times(span, base, base + finished.end);

        attr!(
            span,
            "http.request.method",
            Value::Str(standard_method(&exchange.method)),
        );
        if let Some(route) = route_template {
            attr!(span, "http.route", Value::Str(route));
            attr!(span, "url.path", Value::Str(route));
        }
        attr!(
            span,
            "http.response.status_code",
            Value::Int(i64::from(answer.status)),
        );
        let id = exchange.id.hex();
        attr!(
            span,
            "tollgate.request_id",
            Value::Str(std::str::from_utf8(&id).unwrap_or_default()),
        );
        common_attributes(span, exchange, None);
        if let Some(op) = exchange.operation.get() {
            attr!(span, "gen_ai.operation.name", Value::Str(op.as_str()));
        }
        attr!(
            span,
            "tollgate.attempts",
            Value::Int(exchange.attempts() as i64),
        );
        if !answer.completed {
            attr!(span, "tollgate.client_disconnected", Value::Bool(true));
        }
        if let Some(kind) = answer.error {
            attr!(span, "error.type", Value::Str(kind.code()));
            // A server span is an error for the server's failures, not for the caller's.
            if kind.fault() != Fault::Client || answer.status >= 500 {
                error_status(span, kind.code());
            }
        } else if answer.status >= 500 {
            attr!(span, "error.type", Value::Str(status_text(answer.status)));
            error_status(span, status_text(answer.status));
        }
    });
}

/// Tenant, prompt version, route, version (the exchange's, unless given) and config version:
/// on the server span and every attempt span.
fn common_attributes(span: &mut Vec<u8>, exchange: &Exchange, version: Option<&Version>) {
    if let Some(tenant) = exchange.tenant.get() {
        span.extend_from_slice(&tenant.span_attribute);
    }
    if let Some(prompt) = exchange.prompt.get() {
        span.extend_from_slice(&prompt.span_attributes);
    }
    if let Some(version) = version.or_else(|| exchange.version()) {
        // Route, version and config version, encoded when the config was compiled.
        span.extend_from_slice(&version.span_attributes.common);
        return;
    }
    if let Some(route) = exchange.route.get() {
        attr!(span, "tollgate.route", Value::Str(&route.alias));
    }
    if let Some(snapshot) = exchange.snapshot() {
        attr!(
            span,
            "tollgate.config.version",
            Value::Str(&snapshot.version),
        );
    }
}

/// A route version's span attributes, encoded once when the config compiles: what every
/// span of a request it serves repeats.
#[derive(Debug, Default)]
pub struct VersionAttributes {
    /// `tollgate.route`, `tollgate.route.version`, `tollgate.config.version`.
    pub common: Box<[u8]>,
    /// `gen_ai.provider.name`, `gen_ai.request.model`, `tollgate.provider`.
    pub upstream: Box<[u8]>,
}

impl VersionAttributes {
    pub fn new(
        alias: &str,
        version: &str,
        config_version: &str,
        provider: &crate::providers::Provider,
        model: &str,
    ) -> Self {
        let block = |pairs: &[(&str, &str)]| {
            let mut out = Vec::new();
            for (key, value) in pairs {
                attribute(&mut out, field::ATTRIBUTES, key, &Value::Str(value));
            }
            out.into_boxed_slice()
        };
        Self {
            common: block(&[
                ("tollgate.route", alias),
                ("tollgate.route.version", version),
                ("tollgate.config.version", config_version),
            ]),
            upstream: block(&[
                ("gen_ai.provider.name", provider.genai_name()),
                ("gen_ai.request.model", model),
                ("tollgate.provider", provider.name()),
            ]),
        }
    }
}

/// `tollgate.prompt.id`, `tollgate.prompt.version` and `tollgate.prompt.hash` of a prompt
/// version, encoded once.
pub fn prompt_attributes(id: &str, version: &str, hash: &str) -> Box<[u8]> {
    let mut out = Vec::new();
    attr!(&mut out, "tollgate.prompt.id", Value::Str(id));
    attr!(&mut out, "tollgate.prompt.version", Value::Str(version));
    attr!(&mut out, "tollgate.prompt.hash", Value::Str(hash));
    out.into_boxed_slice()
}

/// `tollgate.tenant` for tenant `name`, encoded once.
pub fn tenant_attribute(name: &str) -> Box<[u8]> {
    let mut out = Vec::new();
    attr!(&mut out, "tollgate.tenant", Value::Str(name));
    out.into_boxed_slice()
}

fn step_attributes(span: &mut Vec<u8>, exchange: &Exchange, step: &Step, finished: &Finished) {
    match step.kind {
        StepKind::Auth => match exchange.tenant.get() {
            Some(tenant) => span.extend_from_slice(&tenant.span_attribute),
            None => {
                let code = finished
                    .answer
                    .error
                    .map_or("unauthenticated", ErrorKind::code);
                attr!(span, "error.type", Value::Str(code));
                error_status(span, code);
            }
        },
        StepKind::Prompt => match exchange.prompt.get() {
            Some(prompt) => {
                span.extend_from_slice(&prompt.span_attributes);
                attr!(span, "tollgate.prompt.canary", Value::Bool(step.flag));
                // The version resolved, but its variables or its template failed.
                if let Some(
                    kind @ (ErrorKind::InvalidPromptVariable | ErrorKind::PromptRenderFailed),
                ) = finished.answer.error
                {
                    attr!(span, "error.type", Value::Str(kind.code()));
                    error_status(span, kind.code());
                }
            }
            None => {
                if let Some(kind) = finished.answer.error {
                    attr!(span, "error.type", Value::Str(kind.code()));
                    error_status(span, kind.code());
                }
            }
        },
        StepKind::Route => {
            let route = exchange.route.get();
            if let Some(route) = route {
                attr!(span, "tollgate.route", Value::Str(&route.alias));
                let first = finished.spans.attempts.first().map(|a| a.version);
                if let Some(version) = first.and_then(|i| route.versions.get(i)) {
                    attr!(span, "tollgate.route.version", Value::Str(&version.name));
                }
                attr!(span, "tollgate.route.pinned", Value::Bool(step.flag));
            } else if let Some(kind) = finished.answer.error {
                attr!(span, "error.type", Value::Str(kind.code()));
            }
        }
    }
}

fn client_span(
    span: &mut Vec<u8>,
    finished: &Finished,
    attempt: &AttemptRecord,
    version: &Version,
    n: usize,
    last: bool,
) {
    let exchange = finished.exchange;
    let answer = &finished.answer;
    let request = &finished.spans.request;
    header(
        span,
        exchange,
        attempt.span_id,
        Some(exchange.trace.server_span),
        false,
    );
    let op = exchange.operation.get().map_or("chat", |op| op.as_str());
    bytes_field_parts(
        span,
        field::NAME,
        &[op.as_bytes(), b" ", version.upstream_model.as_bytes()],
    );
    proto::varint_field(span, field::KIND, KIND_CLIENT);
    let base = finished.spans.start_unix_nanos;
    let end = attempt.end.unwrap_or(finished.end);
    times(span, base + attempt.start, base + end);

    attr!(span, "gen_ai.operation.name", Value::Str(op));
    span.extend_from_slice(&version.span_attributes.upstream);
    if let Some(v) = request.max_tokens {
        attr!(span, "gen_ai.request.max_tokens", Value::Int(v));
    }
    if let Some(v) = request.temperature {
        attr!(span, "gen_ai.request.temperature", Value::Double(v));
    }
    if let Some(v) = request.top_p {
        attr!(span, "gen_ai.request.top_p", Value::Double(v));
    }
    if let Some(v) = request.seed {
        attr!(span, "gen_ai.request.seed", Value::Int(v));
    }
    attr!(span, "gen_ai.request.stream", Value::Bool(request.stream));
    if let Some(provider) = version.provider.connections()
        && let Some(endpoint) = attempt.endpoint.and_then(|i| provider.endpoints.get(i))
    {
        attr!(span, "server.address", Value::Str(&endpoint.host));
        attr!(span, "server.port", Value::Int(i64::from(endpoint.port)));
    }
    common_attributes(span, exchange, Some(version));
    attr!(span, "tollgate.attempt", Value::Int(n as i64 + 1));

    let (status, error) = if last && attempt.end.is_none() {
        (answer.upstream_status, answer.error)
    } else {
        (attempt.status, attempt.error)
    };
    if let Some(status) = status {
        attr!(
            span,
            "http.response.status_code",
            Value::Int(i64::from(status)),
        );
    }
    if last && attempt.end.is_none() {
        answer_attributes(span, finished, attempt);
    }
    let failed = error.or_else(|| {
        status
            .filter(|s| *s >= 400)
            .map(|_| ErrorKind::UpstreamStatus)
    });
    if let Some(kind) = failed {
        let code = if kind == ErrorKind::UpstreamStatus {
            status.map_or(kind.code(), status_text)
        } else {
            kind.code()
        };
        attr!(span, "error.type", Value::Str(code));
        error_status(span, code);
    }
}

/// What the answer said: response id and model, finish reasons, usage, time to first chunk,
/// and (routes that opt in) the content.
fn answer_attributes(span: &mut Vec<u8>, finished: &Finished, attempt: &AttemptRecord) {
    let answer = &finished.answer;
    if let Some(id) = answer.response_id {
        attr!(span, "gen_ai.response.id", Value::Str(id));
    }
    if let Some(model) = answer.response_model {
        attr!(span, "gen_ai.response.model", Value::Str(model));
    }
    if let Some(reason) = answer.finish_reason {
        attr!(
            span,
            "gen_ai.response.finish_reasons",
            Value::StrArray(&[reason.as_str()]),
        );
    }
    if let Some(usage) = &answer.usage {
        attr!(
            span,
            "gen_ai.usage.input_tokens",
            Value::Int(usage.prompt_tokens as i64),
        );
        attr!(
            span,
            "gen_ai.usage.output_tokens",
            Value::Int(usage.completion_tokens as i64),
        );
        if let Some(cached) = usage.prompt_tokens_details.and_then(|d| d.cached_tokens) {
            attr!(
                span,
                "gen_ai.usage.cache_read.input_tokens",
                Value::Int(cached as i64),
            );
        }
        if let Some(reasoning) = usage
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
        {
            attr!(
                span,
                "gen_ai.usage.reasoning.output_tokens",
                Value::Int(reasoning as i64),
            );
        }
    }
    if answer.stream
        && let Some(ttft) = answer.ttft
    {
        let from_attempt = super::record::nanos(ttft).saturating_sub(attempt.start);
        attr!(
            span,
            "gen_ai.response.time_to_first_chunk",
            Value::Double(from_attempt as f64 / 1e9),
        );
    }
    if finished
        .exchange
        .route
        .get()
        .is_some_and(|r| r.trace_content)
    {
        if let Some(input) = &finished.spans.input
            && let Some(op) = finished.exchange.operation.get()
            && let Some(json) = content::input_messages(*op, input)
        {
            attr!(span, "gen_ai.input.messages", Value::Str(&json));
        }
        if let Some(text) = answer.output {
            let json = content::output_messages(text, answer.finish_reason);
            attr!(span, "gen_ai.output.messages", Value::Str(&json));
        }
    }
}

/// `error.type` for a failure known only by its HTTP status.
fn status_text(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s >= 500 => "5xx",
        _ => "4xx",
    }
}
