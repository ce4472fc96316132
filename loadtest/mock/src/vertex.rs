//! The Vertex AI (Gemini) surface: routes, auth, and turning a valid request plus the
//! requested outcome into a unary answer, a stream, or a Google error.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response};
use serde_json::value::RawValue;

use crate::body::MockBody;
use crate::config::Effective;
use crate::fault::Fault;
use crate::gemini_request::{self, GeminiRequest};
use crate::gemini_response::{Answer, AnswerKind};
use crate::google_error::{GoogleError, GrpcStatus};
use crate::handler::{Dialect, Prepared, Shared, respond};
use crate::vertex_config::{GeminiOutcome, VertexConfig};
use crate::vertex_sse::{Framing, GeminiStream};

/// The RPC a Vertex path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rpc {
    Generate,
    Stream,
    CountTokens,
    /// A method the mock does not serve (`:predict`, `:rawPredict`, ...).
    Other,
}

/// A request path on the Vertex surface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VertexRoute<'a> {
    pub(crate) rpc: Rpc,
    pub(crate) method: &'a str,
    /// Model id, or endpoint id for `.../endpoints/{id}`.
    pub(crate) model: &'a str,
    /// `None` on the express (collection-scoped) form `/{v}/publishers/{pub}/models/{m}`.
    pub(crate) project: Option<&'a str>,
    /// The resource part of the path (before `:`), for error messages.
    pub(crate) resource: &'a str,
}

/// Recognises `/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{pub}/models/{m}:{rpc}`,
/// `/{v}/projects/{p}/locations/{l}/endpoints/{id}:{rpc}` and `/{v}/publishers/{pub}/models/{m}:{rpc}`.
pub(crate) fn route(path: &str) -> Option<VertexRoute<'_>> {
    let (resource, method) = path.rsplit_once(':')?;
    let rest = resource
        .strip_prefix("/v1/")
        .or_else(|| resource.strip_prefix("/v1beta1/"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) || method.is_empty() {
        return None;
    }
    let (project, model) = match segments.as_slice() {
        ["projects", p, "locations", _, "publishers", _, "models", m] => (Some(*p), *m),
        ["projects", p, "locations", _, "endpoints", id] => (Some(*p), *id),
        ["publishers", _, "models", m] => (None, *m),
        _ => return None,
    };
    let rpc = match method {
        "generateContent" => Rpc::Generate,
        "streamGenerateContent" => Rpc::Stream,
        "countTokens" => Rpc::CountTokens,
        _ => Rpc::Other,
    };
    Some(VertexRoute {
        rpc,
        method,
        model,
        project,
        resource,
    })
}

/// The project of a path on Vertex's OpenAI-compatible surface:
/// `/{v}/projects/{p}/locations/{l}/endpoints/{openapi|id}/chat/completions`, or a deployed
/// model's `/{v}/projects/{p}/locations/{l}/endpoints/{id}:rawPredict` and
/// `:streamRawPredict` (the OpenAI body passed to the model's container as is).
pub(crate) fn openai_route(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/v1beta1/"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        [
            "projects",
            p,
            "locations",
            l,
            "endpoints",
            _,
            "chat",
            "completions",
        ] if !p.is_empty() && !l.is_empty() => Some(p),
        ["projects", p, "locations", l, "endpoints", raw] if !p.is_empty() && !l.is_empty() => {
            let (id, method) = raw.split_once(':')?;
            let numeric = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            (numeric && matches!(method, "rawPredict" | "streamRawPredict")).then_some(p)
        }
        _ => None,
    }
}

/// `{m}-001`, the way Vertex names the version behind an alias; ids that already end in a
/// three-digit version stay as they are.
fn model_version(model: &str) -> String {
    let versioned = model
        .rsplit_once('-')
        .is_some_and(|(_, v)| v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()));
    if versioned {
        model.to_owned()
    } else {
        format!("{model}-001")
    }
}

/// The outcome asked for: `x-mock-gemini` replaces the configured one.
fn outcome(parts: &Parts, config: &VertexConfig) -> Result<GeminiOutcome, GoogleError> {
    match parts.headers.get("x-mock-gemini") {
        None => Ok(config.outcome.clone().unwrap_or_default()),
        Some(value) => value
            .to_str()
            .map_err(|_| "x-mock-gemini: value is not visible ASCII".to_owned())
            .and_then(|v| {
                v.parse()
                    .map_err(|e: crate::config::SpecError| e.to_string())
            })
            .map_err(GoogleError::invalid_argument),
    }
}

/// The function calls to answer with, if the request and outcome call for them.
fn calls(
    req: &GeminiRequest,
    outcome: &GeminiOutcome,
) -> Result<Option<Vec<Box<RawValue>>>, GoogleError> {
    let wanted = match outcome.tool_calls {
        Some(n) => n,
        None if req.mode_any && !req.answers_function => 1,
        None => return Ok(None),
    };
    let allowed: Vec<_> = if req.mode_any && !req.allowed_function_names.is_empty() {
        req.allowed_function_names
            .iter()
            .filter_map(|name| req.functions.iter().find(|f| f.name == *name))
            .collect()
    } else {
        req.functions.iter().collect()
    };
    if allowed.is_empty() {
        if outcome.tool_calls.is_some() {
            return Err(GoogleError::invalid_argument(
                "x-mock-gemini asks for tool_call, but the request declares no (allowed) \
                 functionDeclarations",
            ));
        }
        return Ok(None);
    }
    let calls = (0..wanted)
        .map(|i| {
            let function = allowed[i % allowed.len()];
            let call = serde_json::json!({
                "name": function.name,
                "args": gemini_request::sample_args(function),
            });
            RawValue::from_string(call.to_string())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| GoogleError::new(GrpcStatus::INTERNAL, e.to_string()))?;
    Ok(Some(calls))
}

fn answer(
    req: &GeminiRequest,
    outcome: &GeminiOutcome,
    eff: &Effective,
    vertex: &VertexConfig,
    model: &str,
    id: u64,
) -> Result<Answer, GoogleError> {
    let thoughts = outcome.thoughts.unwrap_or(match req.thinking_budget {
        Some(budget) if budget > 0 => vertex
            .thoughts_tokens
            .min(usize::try_from(budget).unwrap_or(usize::MAX)),
        Some(_) => vertex.thoughts_tokens,
        None => 0,
    });
    let mut finish_reason = outcome.finish.unwrap_or("STOP");
    let kind = if let Some(reason) = outcome.blocked {
        AnswerKind::Blocked(reason)
    } else if let Some(calls) = calls(req, outcome)? {
        AnswerKind::Calls(calls)
    } else {
        let tokens = match req.max_output_tokens {
            Some(cap) if cap < eff.tokens => {
                finish_reason = outcome.finish.unwrap_or("MAX_TOKENS");
                cap
            }
            _ => eff.tokens,
        };
        AnswerKind::Text { tokens }
    };
    Ok(Answer {
        kind,
        finish_reason,
        candidates: req.candidate_count,
        prompt_tokens: req.prompt_tokens,
        cached_tokens: outcome.cached.map(|c| c.min(req.prompt_tokens)),
        thoughts_tokens: thoughts as u64,
        include_thoughts: req.include_thoughts,
        tokens_per_event: vertex.tokens_per_event.max(1),
        model_version: model_version(model),
        response_id: format!("mock{id:06}{:08x}", fastrand::u32(..)),
    })
}

/// Serves one request on a Vertex path (already recorded by the caller).
pub(crate) async fn handle(
    route: VertexRoute<'_>,
    parts: &Parts,
    body: &Bytes,
    shared: &Shared,
) -> Result<Response<MockBody>, io::Error> {
    let sse = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
    // The JSON-array stream endpoint wraps every error it answers in an array.
    let array = route.rpc == Rpc::Stream && !sse;
    let dialect = Dialect::Google { array };
    let refuse = |error: GoogleError| Ok(error.response(array));
    if route.rpc == Rpc::Other || parts.method != Method::POST {
        return refuse(GoogleError::new(
            GrpcStatus::NOT_FOUND,
            format!(
                "tollgate-mock serves POST :generateContent, :streamGenerateContent and \
                 :countTokens, not {} :{}",
                parts.method, route.method
            ),
        ));
    }
    let vertex = &shared.config.vertex;
    if let Err(error) =
        shared
            .auth
            .check(&vertex.auth, &parts.headers, route.project, route.resource)
    {
        return refuse(error);
    }
    let mut eff = match Effective::resolve(&shared.config, &parts.headers) {
        Ok(eff) => eff,
        Err(message) => return refuse(GoogleError::invalid_argument(message)),
    };
    let outcome = match outcome(parts, vertex) {
        Ok(outcome) => outcome,
        Err(error) => return refuse(error),
    };
    let req = match gemini_request::parse(body) {
        Ok(req) => req,
        Err(error) => return refuse(error),
    };
    let mut stream_error = GoogleError::new(GrpcStatus::INTERNAL, "mock mid-stream failure");
    if let Some(injected) = &outcome.error {
        let mut error = GoogleError::new(
            injected.status,
            format!("{} (injected by tollgate-mock)", injected.status.name),
        );
        error.retry = injected.retry;
        match injected.after {
            Some(after) if route.rpc == Rpc::Stream => {
                eff.fault = Some(Fault::ErrorAfter(after));
                stream_error = error;
            }
            _ => return refuse(error),
        }
    }
    if route.rpc == Rpc::CountTokens {
        let count = serde_json::json!({
            "totalTokens": req.prompt_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": req.prompt_tokens}],
        });
        let prepared: Prepared<GeminiStream> = Prepared::Json {
            body: Bytes::from(count.to_string()),
            delay: Duration::ZERO,
        };
        return respond(prepared, &eff, shared, dialect).await;
    }
    let answer = match answer(&req, &outcome, &eff, vertex, route.model, shared.next_id()) {
        Ok(answer) => answer,
        Err(error) => return refuse(error),
    };
    if route.rpc == Rpc::Generate {
        let generated = match &answer.kind {
            AnswerKind::Text { tokens } => *tokens,
            _ => 1,
        };
        let steps = u32::try_from(generated.saturating_sub(1)).unwrap_or(u32::MAX);
        let prepared: Prepared<GeminiStream> = Prepared::Json {
            body: Bytes::from(answer.unary_json()),
            delay: eff.ttft + eff.inter_token.saturating_mul(steps),
        };
        return respond(prepared, &eff, shared, dialect).await;
    }
    let framing = if sse {
        // Gemini ends SSE lines in CRLF; `x-mock-line-ending` may still ask for another.
        let eol = if parts.headers.contains_key("x-mock-line-ending") {
            eff.line_ending.as_str()
        } else {
            "\r\n"
        };
        Framing::Sse {
            eol,
            keepalive: eff.keepalive,
        }
    } else {
        Framing::JsonArray
    };
    let plan = GeminiStream {
        answer,
        framing,
        ttft: eff.ttft,
        inter_token: eff.inter_token,
        error: stream_error,
        malformed_first: false,
    };
    respond(Prepared::Stream(plan), &eff, shared, dialect).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_three_path_forms() {
        let full = route(
            "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
        )
        .unwrap();
        assert_eq!(full.rpc, Rpc::Generate);
        assert_eq!(full.model, "gemini-2.5-flash");
        assert_eq!(full.project, Some("p-1"));
        let express =
            route("/v1beta1/publishers/google/models/gemini-2.0-flash:streamGenerateContent")
                .unwrap();
        assert_eq!(express.rpc, Rpc::Stream);
        assert_eq!(express.project, None);
        let endpoint = route("/v1/projects/p/locations/l/endpoints/123:countTokens").unwrap();
        assert_eq!(endpoint.rpc, Rpc::CountTokens);
        assert_eq!(endpoint.model, "123");
        assert_eq!(
            route("/v1/projects/p/locations/l/endpoints/123:predict")
                .unwrap()
                .rpc,
            Rpc::Other
        );
        for not_vertex in [
            "/v1/chat/completions",
            "/v2/publishers/google/models/m:generateContent",
            "/v1/publishers/google/models/:generateContent",
            "/v1/publishers/google/models/m:",
            "/v1/projects/p/locations/l/endpoints/openapi/chat/completions",
            "/v1/models",
        ] {
            assert!(route(not_vertex).is_none(), "{not_vertex}");
        }
    }

    #[test]
    fn routes_the_openai_compatible_paths() {
        let base = "/v1/projects/p/locations/us-central1/endpoints";
        assert_eq!(
            openai_route(&format!("{base}/openapi/chat/completions")),
            Some("p")
        );
        assert_eq!(
            openai_route(&format!("{base}/123/chat/completions")),
            Some("p")
        );
        assert_eq!(openai_route(&format!("{base}/123:rawPredict")), Some("p"));
        assert_eq!(
            openai_route(&format!("{base}/123:streamRawPredict")),
            Some("p")
        );
        assert_eq!(openai_route(&format!("{base}/openapi:rawPredict")), None);
        assert_eq!(openai_route(&format!("{base}/123:predict")), None);
        assert_eq!(openai_route("/v1/chat/completions"), None);
    }

    #[test]
    fn model_versions() {
        assert_eq!(model_version("gemini-2.5-flash"), "gemini-2.5-flash-001");
        assert_eq!(
            model_version("gemini-2.0-flash-002"),
            "gemini-2.0-flash-002"
        );
        assert_eq!(model_version("123"), "123-001");
    }
}
