//! The Vertex-native surface wired in: `google-genai` requests to
//! `/{v1|v1beta1}/[projects/P/locations/L/]publishers/PUB/models/ALIAS:METHOD`, the model id
//! naming a Tollgate alias, served through the same routes, versions, retries and telemetry
//! as OpenAI requests, with answers and errors in Gemini's format.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::gemini::{errors, request, response};
use super::{ApiRequest, request_body, serve, snapshot_of};
use crate::body::GatewayBody;
use crate::config::UnsupportedParams;
use crate::error::{ErrorKind, GatewayError};
use crate::exchange::Exchange;
use crate::providers::Provider;
use crate::providers::vertex::provider::VertexApi;
use crate::upstream::{Call, Outbound, Surface};

/// What a native path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeMethod {
    Generate,
    /// `:streamGenerateContent`, with `alt=sse` (SSE) or without (one JSON array).
    Stream {
        sse: bool,
    },
    CountTokens,
}

/// A request on the native surface: the alias its model id names, and the method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeCall<'a> {
    pub alias: &'a str,
    pub method: NativeMethod,
}

/// The call a path (and query) names, or `None` when it is not a native path.
pub fn parse_path<'a>(path: &'a str, query: Option<&str>) -> Option<NativeCall<'a>> {
    let rest = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/v1beta1/"))?;
    let (resource, method) = rest.rsplit_once(':')?;
    let segments: Vec<&str> = resource.split('/').collect();
    let alias = match segments.as_slice() {
        [
            "projects",
            p,
            "locations",
            l,
            "publishers",
            publisher,
            "models",
            model,
        ] if !p.is_empty() && !l.is_empty() && !publisher.is_empty() => *model,
        ["publishers", publisher, "models", model] if !publisher.is_empty() => *model,
        _ => return None,
    };
    if alias.is_empty() {
        return None;
    }
    let sse = query.is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
    let method = match method {
        "generateContent" => NativeMethod::Generate,
        "streamGenerateContent" => NativeMethod::Stream { sse },
        "countTokens" => NativeMethod::CountTokens,
        _ => return None,
    };
    Some(NativeCall { alias, method })
}

/// True for a path on the native surface: its errors are written in Google's format.
pub fn is_native_path(path: &str) -> bool {
    parse_path(path, None).is_some()
}

/// Serves a native request.
pub async fn handle(
    req: ApiRequest,
    alias: &str,
    method: NativeMethod,
) -> Result<Response<GatewayBody>, GatewayError> {
    if req.http.method() != Method::POST {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            "this URL accepts POST only",
        ));
    }
    let stream = match method {
        NativeMethod::Generate | NativeMethod::CountTokens => false,
        NativeMethod::Stream { .. } => true,
    };
    let ApiRequest { exchange, http } = req;
    let _ = exchange.operation.set(Surface::Chat.operation());
    let snapshot = snapshot_of(&exchange)?.clone();
    let (parts, body) = http.into_parts();
    let body = request_body::read(&parts.headers, body, &snapshot.limits).await?;
    if method == NativeMethod::CountTokens {
        return count_tokens(&exchange, &parts.headers, alias, body).await;
    }
    // The route's policy for what the OpenAI side cannot take; an unknown alias is refused
    // by the route choice that follows.
    let policy = snapshot
        .routes
        .get(alias)
        .map_or(UnsupportedParams::Reject, |route| route.unsupported_params);
    let openai = Bytes::from(request::chat_request(&body, alias, stream, policy)?);
    let mut answer = serve(&exchange, &parts.headers, &openai, Surface::Chat).await?;
    as_gemini(&mut answer, method);
    Ok(answer)
}

/// `:countTokens`, answered by the chosen version's Vertex AI model (other servers have no
/// such call, and the gateway no tokenizer of their models).
async fn count_tokens(
    exchange: &Arc<Exchange>,
    headers: &http::HeaderMap,
    alias: &str,
    body: Bytes,
) -> Result<Response<GatewayBody>, GatewayError> {
    let snapshot = snapshot_of(exchange)?;
    let tenant = super::tenant_of(exchange)?;
    if names_prompt(&body, headers) {
        return Err(GatewayError::new(
            ErrorKind::InvalidField,
            "countTokens counts contents as sent: it does not render prompt templates",
        )
        .with_param("prompt"));
    }
    let wanted = super::choose::Wanted {
        model: alias,
        user: None,
        headers,
    };
    let choice = super::choose::route_and_version(snapshot, tenant, &wanted)?;
    let _ = exchange.route.set(choice.route.clone());
    // Counting is not a canary's business: the chosen version if it speaks Gemini's API on
    // Vertex AI, else the route's first version that does.
    let on_vertex = |i: &usize| {
        matches!(&choice.route.versions[*i].provider,
            Provider::Vertex(p) if p.api == VertexApi::Gemini)
    };
    let index = std::iter::once(choice.version)
        .chain(0..choice.route.versions.len())
        .find(on_vertex)
        .unwrap_or(choice.version);
    exchange.start_attempt(index);
    let version = &choice.route.versions[index];
    let Provider::Vertex(provider) = &version.provider else {
        return Err(not_counted(alias));
    };
    let out = Outbound {
        surface: Surface::Chat,
        body,
        stream: false,
        strip_usage: false,
        arrived: exchange.arrived,
        call: Call::OpenAi,
    };
    let limit = version.timeouts.first_token.0.min(version.timeouts.total.0);
    let out = tokio::time::timeout(limit, provider.count_tokens_call(version, out))
        .await
        .map_err(|_| {
            GatewayError::new(
                ErrorKind::UpstreamTimeout,
                "no Vertex AI token came within the route's first-token timeout",
            )
        })?
        .ok_or_else(|| not_counted(alias))??;
    let mut answer =
        crate::upstream::forward(exchange, &provider.upstream, version, &snapshot.limits, out)
            .await?;
    if !answer.status().is_success() {
        as_gemini(&mut answer, NativeMethod::CountTokens);
    }
    Ok(answer)
}

/// Does a countTokens request name a prompt template (body or header)?
fn names_prompt(body: &[u8], headers: &http::HeaderMap) -> bool {
    #[derive(serde::Deserialize)]
    struct TopLevel<'a> {
        #[serde(borrow, default)]
        prompt: Option<&'a serde_json::value::RawValue>,
    }
    headers.contains_key(crate::prompt::reference::PROMPT_HEADER)
        || serde_json::from_slice::<TopLevel<'_>>(body).is_ok_and(|t| t.prompt.is_some())
}

fn not_counted(alias: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::UnsupportedParameter,
        format!(
            "countTokens needs a model on Vertex AI; `{alias}` is served by a server without it"
        ),
    )
}

/// Puts an OpenAI answer in Gemini's terms: a stream's chunks, a whole completion, or an
/// upstream's error body.
fn as_gemini(answer: &mut Response<GatewayBody>, method: NativeMethod) {
    let status = answer.status();
    let body = answer.body_mut();
    if let NativeMethod::Stream { sse } = method
        && body.is_stream()
    {
        body.stream_as_gemini(sse);
        let content_type = if sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        return;
    }
    let mut failed = false;
    body.map_full(|bytes| {
        let translated = if status.is_success() {
            response::generate_content_response(&bytes).ok()
        } else {
            // An error keeps its status; a body in no known format gets a plain message.
            Some(errors::from_openai(&bytes, status).unwrap_or_else(|| {
                errors::error_body(status, "the upstream answered with an error")
            }))
        };
        Bytes::from(translated.unwrap_or_else(|| {
            failed = true;
            errors::error_body(
                StatusCode::BAD_GATEWAY,
                "the upstream answer could not be put in Gemini's format",
            )
        }))
    });
    if failed {
        body.mark_error(ErrorKind::UpstreamProtocol);
        *answer.status_mut() = StatusCode::BAD_GATEWAY;
    }
    // A whole answer is JSON whichever way it went; a stream that was refused before it
    // began is a whole error body.
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_paths() {
        let full =
            "/v1/projects/p/locations/us-central1/publishers/google/models/flash:generateContent";
        assert_eq!(
            parse_path(full, None),
            Some(NativeCall {
                alias: "flash",
                method: NativeMethod::Generate
            })
        );
        let short = "/v1beta1/publishers/google/models/flash:streamGenerateContent";
        assert_eq!(
            parse_path(short, Some("alt=sse")).map(|c| c.method),
            Some(NativeMethod::Stream { sse: true })
        );
        assert_eq!(
            parse_path(short, None).map(|c| c.method),
            Some(NativeMethod::Stream { sse: false })
        );
        assert_eq!(
            parse_path("/v1/publishers/google/models/m:countTokens", None).map(|c| c.method),
            Some(NativeMethod::CountTokens)
        );
        for not_native in [
            "/v1/chat/completions",
            "/v1/publishers/google/models/m:predict",
            "/v1/publishers/google/models/:generateContent",
            "/v2/publishers/google/models/m:generateContent",
            "/v1/projects/p/locations/l/endpoints/1:generateContent",
        ] {
            assert_eq!(parse_path(not_native, None), None, "{not_native}");
        }
    }
}
