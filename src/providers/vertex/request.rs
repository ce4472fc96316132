//! An OpenAI chat request as a Gemini `generateContent` request: messages to `contents` and
//! `systemInstruction`, tools to function declarations, parameters to `generationConfig`.

use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::contents::{self, GeminiContent, Message};
use crate::api::decode::GENERATION_PARAMS;
use crate::config::UnsupportedParams;
use crate::error::{ErrorKind, GatewayError};

/// Top-level fields besides the generation parameters (each of [`GENERATION_PARAMS`] has a
/// Gemini equivalent) that Gemini can express or the gateway itself handles (model, stream,
/// stream_options, user): anything else is an unsupported parameter.
const OTHER_KNOWN_FIELDS: [&str; 8] = [
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "model",
    "stream",
    "stream_options",
    "user",
];

/// The OpenAI request, as far as Gemini can express it. Strings borrow from the body when
/// they hold no escapes; schemas pass through as raw JSON.
#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    #[serde(borrow)]
    stop: Option<Stop<'a>>,
    seed: Option<i64>,
    n: Option<u32>,
    #[serde(borrow)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(borrow)]
    response_format: Option<ResponseFormat<'a>>,
    #[serde(borrow)]
    reasoning_effort: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    function: FunctionDecl<'a>,
}

#[derive(Deserialize, Serialize)]
struct FunctionDecl<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    /// Sent as `parametersJsonSchema`: OpenAI tools carry full JSON Schema
    /// (`additionalProperties`, `$defs`, `const`, ...), which Gemini's OpenAPI-subset
    /// `parameters` refuses.
    #[serde(
        borrow,
        default,
        rename(serialize = "parametersJsonSchema"),
        skip_serializing_if = "Option::is_none"
    )]
    parameters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolChoice<'a> {
    Mode(#[serde(borrow)] Cow<'a, str>),
    Function {
        #[serde(borrow)]
        function: Named<'a>,
    },
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// `{"type": "text" | "json_object" | "json_schema", "json_schema"}`. A struct so that the
/// schema can stay raw JSON (serde buffers tagged enums, which raw values cannot go through).
#[derive(Deserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    json_schema: Option<JsonSchema<'a>>,
}

#[derive(Deserialize)]
struct JsonSchema<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
}

/// The Gemini request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContent<'a> {
    contents: Vec<GeminiContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<GeminiContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<GeminiTools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<serde_json::Value>,
    generation_config: GenerationConfig<'a>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels<'a>,
}

/// Billing labels, written as the JSON object Gemini expects.
struct Labels<'a>(&'a [(&'a str, &'a str)]);

impl Labels<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Labels<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiTools<'a> {
    function_declarations: Vec<FunctionDecl<'a>>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `responseJsonSchema`, full JSON Schema, for the same reason as tool parameters.
    response_json_schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u32,
}

pub(super) fn invalid(message: impl Into<Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidField, message)
}

/// The Gemini `generateContent` body for the OpenAI chat request `body`, with `labels`
/// stamped in. Parameters Gemini cannot take are refused or dropped per `unsupported`.
pub fn generate_content(
    body: &[u8],
    unsupported: UnsupportedParams,
    labels: &[(&str, &str)],
) -> Result<Vec<u8>, GatewayError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body)
        .map_err(|err| invalid(format!("the chat request cannot be sent to Gemini: {err}")))?;
    if unsupported == UnsupportedParams::Reject {
        let carried = |name: &str, value: &str| {
            GENERATION_PARAMS.contains(&name)
                || OTHER_KNOWN_FIELDS.contains(&name)
                || is_no_op(name, value)
        };
        crate::api::unsupported::refuse_uncarried(body, carried, "Gemini")?;
    }
    let (system, contents) = contents::contents(&request.messages)?;
    let out = GenerateContent {
        contents,
        system_instruction: system,
        tools: match &request.tools {
            Some(tools) if !tools.is_empty() => vec![GeminiTools {
                function_declarations: tools
                    .iter()
                    .map(|tool| FunctionDecl {
                        name: tool.function.name.clone(),
                        description: tool.function.description.clone(),
                        parameters: tool.function.parameters,
                    })
                    .collect(),
            }],
            _ => Vec::new(),
        },
        tool_config: request.tool_choice.as_ref().map(tool_config).transpose()?,
        generation_config: generation_config(&request)?,
        labels: Labels(labels),
    };
    serde_json::to_vec(&out).map_err(|err| {
        GatewayError::new(
            ErrorKind::Internal,
            format!("cannot encode the Gemini request: {err}"),
        )
    })
}

fn generation_config<'a>(request: &ChatRequest<'a>) -> Result<GenerationConfig<'a>, GatewayError> {
    let (response_mime_type, response_schema) = match &request.response_format {
        None => (None, None),
        Some(format) => match &*format.kind {
            "text" => (None, None),
            "json_object" => (Some("application/json"), None),
            "json_schema" => (
                Some("application/json"),
                format.json_schema.as_ref().and_then(|s| s.schema),
            ),
            other => {
                return Err(invalid(format!(
                    "response_format type `{other}` is not one of text, json_object, json_schema"
                ))
                .with_param("response_format"));
            }
        },
    };
    let thinking_budget = match request.reasoning_effort.as_deref() {
        None => None,
        Some(effort) => Some(thinking_budget(effort).ok_or_else(|| {
            invalid(format!(
                "reasoning_effort `{effort}` is not one of none, minimal, low, medium, high"
            ))
            .with_param("reasoning_effort")
        })?),
    };
    Ok(GenerationConfig {
        temperature: request.temperature,
        top_p: request.top_p,
        // `max_completion_tokens` replaces the older `max_tokens`; either caps output.
        max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        stop_sequences: match &request.stop {
            None => Vec::new(),
            Some(Stop::One(one)) => vec![one.clone()],
            Some(Stop::Many(many)) => many.clone(),
        },
        seed: request.seed,
        candidate_count: request.n,
        response_mime_type,
        response_json_schema: response_schema,
        thinking_config: thinking_budget.map(|thinking_budget| ThinkingConfig { thinking_budget }),
    })
}

/// A parameter whose value asks for nothing Gemini would do differently: `null`, or a
/// setting that is Gemini's behaviour anyway. SDKs send these by default.
fn is_no_op(name: &str, value: &str) -> bool {
    value == "null"
        || matches!(
            (name, value),
            ("logprobs" | "store", "false") | ("parallel_tool_calls", "true")
        )
}

/// Gemini's thinking budget (tokens) for an OpenAI `reasoning_effort`.
pub fn thinking_budget(effort: &str) -> Option<u32> {
    match effort {
        "none" => Some(0),
        "minimal" => Some(128),
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

fn tool_config(choice: &ToolChoice<'_>) -> Result<serde_json::Value, GatewayError> {
    let config = match choice {
        ToolChoice::Mode(mode) => {
            let mode = match &**mode {
                "none" => "NONE",
                "auto" => "AUTO",
                "required" => "ANY",
                other => {
                    return Err(invalid(format!(
                        "tool_choice `{other}` is not one of none, auto, required"
                    ))
                    .with_param("tool_choice"));
                }
            };
            serde_json::json!({ "mode": mode })
        }
        ToolChoice::Function { function } => {
            serde_json::json!({ "mode": "ANY", "allowedFunctionNames": [function.name] })
        }
    };
    Ok(serde_json::json!({ "functionCallingConfig": config }))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
