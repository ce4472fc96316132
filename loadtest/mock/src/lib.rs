//! A fast mock of an OpenAI-compatible model server and of Vertex AI (Gemini), with injectable
//! faults, for Tollgate's black-box tests (in-process) and load tests (the `tollgate-mock`
//! binary).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tollgate_mock::{Fault, MockConfig, MockServer};
//!
//! let server = MockServer::start(MockConfig {
//!     tokens: 4,
//!     fault: Some("status=429;retry-after=1".parse().map_err(std::io::Error::other)?),
//!     ..MockConfig::default()
//! })
//! .await?;
//! println!("upstream at {}", server.base_url());
//! server.stats().wait_requests(1).await;
//! server.shutdown().await;
//! # let _ = Fault::Malformed;
//! # Ok(())
//! # }
//! ```
//!
//! # Vertex AI (Gemini)
//!
//! On the same listener, `POST` to
//! `/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{pub}/models/{m}:{rpc}`,
//! `/{v}/projects/{p}/locations/{l}/endpoints/{id}:{rpc}` or the express form
//! `/{v}/publishers/{pub}/models/{m}:{rpc}`, where `{rpc}` is `generateContent`,
//! `streamGenerateContent` (`?alt=sse`: SSE with CRLF lines and no `[DONE]`; otherwise one JSON
//! array written element by element) or `countTokens`. Bodies are validated like Vertex does
//! (unknown top-level fields, roles, one data field per part, labels, function names) and
//! refused with 400 `INVALID_ARGUMENT` in Google's error format; errors on the JSON-array stream
//! endpoint come array-wrapped. Text comes from the same generator as the OpenAI surface
//! (`x-mock-tokens`, `--tokens`), capped by `maxOutputTokens` (`MAX_TOKENS`); streams carry
//! [`VertexConfig::tokens_per_event`] tokens per event, each event with the cumulative
//! `usageMetadata`. `candidateCount` gives that many candidates; a `thinkingBudget` above 0
//! reports `min(budget, thoughts_tokens)` thoughts tokens (plus a `"thought": true` part with
//! `includeThoughts`). With declared functions and `functionCallingConfig.mode` `ANY`, and the
//! last content not a `functionResponse`, the answer is a `functionCall` (the first allowed or
//! declared function, arguments filled from its schema). `x-mock-fault` works here too, with
//! Google-format error bodies.
//!
//! Outcomes on demand: the `x-mock-gemini` header (or [`MockConfig::with_gemini_outcome`],
//! `--gemini-outcome`; the header replaces the configured outcome, `none` clears it) takes
//! comma-separated directives:
//!
//! | directive | effect |
//! | --- | --- |
//! | `blocked[=REASON]` | HTTP 200, `promptFeedback{blockReason, blockReasonMessage}`, no candidates (a stream: one such event); REASON defaults to `SAFETY` |
//! | `safety`, `max_tokens`, `finish=REASON` | that `finishReason`; reasons other than `STOP`/`MAX_TOKENS` withhold the content (streams: text events, then a final event without content) |
//! | `tool_call[=N]` | N `functionCall` parts (one event each when streamed), even in mode `AUTO`; 400 if no function is declared |
//! | `thoughts=N` | N thoughts tokens, whatever the thinking config |
//! | `cached=N` | `cachedContentTokenCount` N (at most the prompt tokens) |
//! | `error=STATUS[:retry=DURATION][:after=N]` | STATUS (name such as `RESOURCE_EXHAUSTED`, or an HTTP code) as a Google error with its HTTP code and, with `retry`, a `google.rpc.RetryInfo` (`retryDelay` in proto JSON form, `1.5s` -> `"1.500s"`); with `after` a stream sends N events, then the error as an event of the 200 response |
//!
//! Auth ([`VertexAuth`], builders on [`MockConfig`], `--vertex-*` flags): with nothing
//! configured every request passes; otherwise a request needs an accepted `x-goog-api-key` or
//! `Authorization: Bearer` token, a listed one or one this mock issued (unexpired, not revoked),
//! else 401 `UNAUTHENTICATED` (`details[].reason` tells why); a listed project restriction
//! answers 403 `PERMISSION_DENIED` for other projects.
//!
//! `POST /token` (form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`)
//! verifies an RS256 JWT against [`TokenEndpoint::public_key_pem`] (by default the committed
//! test key, see [`fixtures`]): header `kid`, `iss`, `aud` (the endpoint's own URL,
//! [`MockServer::token_url`]), a `scope` with cloud-platform, `iat`/`exp` at most an hour apart
//! and current (60 s skew). It answers `{access_token, expires_in, token_type: "Bearer"}`, or 400
//! `invalid_grant` (`invalid_scope` for the scope, `unsupported_grant_type`, `invalid_request`).
//! `GET /computeMetadata/v1/instance/service-accounts/default/token` needs
//! `Metadata-Flavor: Google` (else 403). Both are counted in [`MockStats`]; knobs on
//! [`MockServer`] fail the next N token requests or hold token answers.

mod body;
mod config;
mod fault;
pub mod fixtures;
mod gemini_request;
mod gemini_response;
mod google_auth;
mod google_error;
mod google_jwt;
mod handler;
mod responses;
mod server;
mod sse;
mod stats;
mod vertex;
mod vertex_config;
mod vertex_sse;

pub use config::{Latency, LineEnding, MockConfig, SpecError, parse_duration};
pub use fault::Fault;
pub use google_auth::{TokenFailure, TokenHold};
pub use server::MockServer;
pub use stats::{MockStats, RECORDED_CAPACITY, RecordedRequest};
pub use vertex_config::{GeminiOutcome, TokenEndpoint, VertexAuth, VertexConfig};
