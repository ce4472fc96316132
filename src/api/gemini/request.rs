//! A Gemini `generateContent` request as an OpenAI chat request, for a route version that
//! speaks OpenAI: contents to messages, function declarations to tools, `generationConfig`
//! to the OpenAI parameters.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::UnsupportedParams;
use crate::error::{ErrorKind, GatewayError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContent<'a> {
    #[serde(borrow, default)]
    contents: Vec<Content<'a>>,
    #[serde(borrow, default)]
    system_instruction: Option<Content<'a>>,
    #[serde(borrow, default)]
    tools: Vec<Tool<'a>>,
    #[serde(borrow, default)]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(borrow, default)]
    generation_config: Option<GenerationConfig<'a>>,
    /// Tollgate's prompt template reference, carried as is to the OpenAI body (where the
    /// prompt step renders it); not a Gemini field.
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
}

/// Top-level fields this translation reads, `labels` (billing on Google's side, nothing
/// to an OpenAI server), and Tollgate's own `prompt`; anything else is an unsupported
/// parameter.
const KNOWN_FIELDS: [&str; 7] = [
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "labels",
    "prompt",
];

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: bool,
    #[serde(borrow, default)]
    inline_data: Option<Blob<'a>>,
    #[serde(borrow, default)]
    file_data: Option<FileData<'a>>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
    #[serde(borrow, default)]
    function_response: Option<FunctionResponse<'a>>,
    /// Gemini 3's signature of a function call, carried in the tool call's `extra_content`
    /// (as Google's OpenAI-compatible API does) so it comes back.
    #[serde(borrow, default)]
    thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    #[serde(borrow)]
    mime_type: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    #[serde(borrow)]
    file_uri: Cow<'a, str>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FunctionResponse<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool<'a> {
    #[serde(borrow, default)]
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parameters_json_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    #[serde(borrow, default)]
    function_calling_config: Option<FunctionCallingConfig<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    allowed_function_names: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    max_output_tokens: Option<u32>,
    #[serde(borrow, default)]
    stop_sequences: Vec<Cow<'a, str>>,
    seed: Option<i64>,
    candidate_count: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    #[serde(borrow, default)]
    response_mime_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response_schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_json_schema: Option<&'a RawValue>,
    #[serde(default)]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: Option<i64>,
}

/// The OpenAI request body.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a RawValue>,
    #[serde(flatten)]
    params: BTreeMap<&'static str, Value>,
}

fn invalid(message: impl Into<Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidField, message)
}

/// The OpenAI chat request (for `model`, streaming or not) equivalent to the Gemini request
/// `body`. Fields with no OpenAI equivalent are refused or dropped per `unsupported`.
pub fn chat_request(
    body: &[u8],
    model: &str,
    stream: bool,
    unsupported: UnsupportedParams,
) -> Result<Vec<u8>, GatewayError> {
    if !super::is_object(body) {
        return Err(invalid("the body is not a JSON object"));
    }
    let request: GenerateContent<'_> = serde_json::from_slice(body)
        .map_err(|err| invalid(format!("not a GenerateContentRequest: {err}")))?;
    if unsupported == UnsupportedParams::Reject {
        let carried = |name: &str, value: &str| KNOWN_FIELDS.contains(&name) || value == "null";
        crate::api::unsupported::refuse_uncarried(body, carried, "the OpenAI-compatible server")?;
        let nested = super::carried::uncarried_nested(body);
        if !nested.is_empty() {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedParameter,
                format!(
                    "the OpenAI-compatible server has no equivalent for {}; this route refuses such parameters rather than ignore them",
                    nested.join(", ")
                ),
            ));
        }
    }
    if let Some(n) = request
        .generation_config
        .as_ref()
        .and_then(|c| c.candidate_count)
        && n > super::stream::MAX_CHOICES as u32
    {
        return Err(invalid(format!(
            "candidateCount {n} is more than {} answers",
            super::stream::MAX_CHOICES
        )));
    }
    let mut messages = Vec::new();
    if let Some(system) = &request.system_instruction {
        let text: Vec<&str> = (system.parts.iter())
            .filter_map(|p| p.text.as_deref())
            .collect();
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text.join("\n")}));
        }
    }
    turns(&request.contents, &mut messages)?;
    let out = ChatRequest {
        model,
        messages,
        stream,
        tools: (request.tools.iter())
            .flat_map(|tool| &tool.function_declarations)
            .map(|f| {
                let mut function = json!({"name": f.name});
                if let Some(description) = &f.description {
                    function["description"] = json!(description);
                }
                // JSON Schema as is; Gemini's OpenAPI-subset schema converted.
                let parameters = match (f.parameters_json_schema, f.parameters) {
                    (Some(schema), _) => Some(json!(schema)),
                    (None, Some(schema)) => Some(super::carried::json_schema_of(schema)),
                    (None, None) => None,
                };
                if let Some(parameters) = parameters {
                    function["parameters"] = parameters;
                }
                json!({"type": "function", "function": function})
            })
            .collect(),
        tool_choice: request
            .tool_config
            .as_ref()
            .and_then(|c| c.function_calling_config.as_ref())
            .and_then(tool_choice),
        prompt: request.prompt.filter(|p| p.get() != "null"),
        params: params(request.generation_config.as_ref(), stream),
    };
    serde_json::to_vec(&out).map_err(|err| {
        GatewayError::new(
            ErrorKind::Internal,
            format!("cannot encode the chat request: {err}"),
        )
    })
}

fn tool_choice(config: &FunctionCallingConfig<'_>) -> Option<Value> {
    match (
        config.mode.as_deref()?,
        config.allowed_function_names.as_slice(),
    ) {
        ("NONE", _) => Some(json!("none")),
        ("AUTO", _) => Some(json!("auto")),
        ("ANY", [only]) => Some(json!({"type": "function", "function": {"name": only}})),
        ("ANY", _) => Some(json!("required")),
        _ => None,
    }
}

/// The OpenAI parameters of a `generationConfig`.
fn params(config: Option<&GenerationConfig<'_>>, stream: bool) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    if stream {
        // The gateway counts tokens from the usage chunk, as for OpenAI clients.
        out.insert("stream_options", json!({"include_usage": true}));
    }
    let Some(config) = config else {
        return out;
    };
    let mut put = |name: &'static str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(name, value);
        }
    };
    put("temperature", config.temperature.map(Value::from));
    put("top_p", config.top_p.map(Value::from));
    // Not OpenAI's, but vLLM, TGI and llama.cpp take it.
    put("top_k", config.top_k.map(Value::from));
    put("max_tokens", config.max_output_tokens.map(Value::from));
    put("seed", config.seed.map(Value::from));
    put("n", config.candidate_count.map(Value::from));
    put("presence_penalty", config.presence_penalty.map(Value::from));
    put(
        "frequency_penalty",
        config.frequency_penalty.map(Value::from),
    );
    if !config.stop_sequences.is_empty() {
        put("stop", Some(json!(config.stop_sequences)));
    }
    let schema = match (config.response_json_schema, config.response_schema) {
        (Some(schema), _) => Some(json!(schema)),
        (None, Some(schema)) => Some(super::carried::json_schema_of(schema)),
        (None, None) => None,
    };
    let format = match (config.response_mime_type.as_deref(), schema) {
        (_, Some(schema)) => Some(json!({"type": "json_schema",
            "json_schema": {"name": "response", "schema": schema}})),
        (Some("application/json"), None) => Some(json!({"type": "json_object"})),
        _ => None,
    };
    put("response_format", format);
    // vLLM takes `low`, `medium` and `high` only: a budget of 0 (thinking off) and -1
    // (dynamic) have no OpenAI equivalent and are left to the server's default.
    let effort = (config.thinking_config.as_ref())
        .and_then(|t| t.thinking_budget)
        .and_then(|budget| match budget {
            ..=0 => None,
            1..=2048 => Some("low"),
            2049..=12288 => Some("medium"),
            _ => Some("high"),
        });
    put("reasoning_effort", effort.map(Value::from));
    out
}

/// Contents to messages. A model turn's function calls get ids (Gemini's, or made from the
/// turn and position); the next user turn's function responses answer them in order.
fn turns(contents: &[Content<'_>], messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let mut open_calls: Vec<(String, String)> = Vec::new();
    for (turn, content) in contents.iter().enumerate() {
        let role = content.role.as_deref().unwrap_or("user");
        let mut text = String::new();
        let mut parts: Vec<Value> = Vec::new();
        let mut calls: Vec<Value> = Vec::new();
        for part in content.parts.iter().filter(|p| !p.thought) {
            if let Some(piece) = &part.text {
                text.push_str(piece);
                parts.push(json!({"type": "text", "text": piece}));
            }
            if let Some(blob) = &part.inline_data {
                let url = format!("data:{};base64,{}", blob.mime_type, blob.data);
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            if let Some(file) = &part.file_data {
                parts.push(json!({"type": "image_url", "image_url": {"url": file.file_uri}}));
            }
            if let Some(call) = &part.function_call {
                let id = match &call.id {
                    Some(id) => id.to_string(),
                    None => format!("call_{turn}_{}", calls.len()),
                };
                let arguments = call.args.map_or("{}", RawValue::get);
                let mut tool_call = json!({"id": id, "type": "function",
                    "function": {"name": call.name, "arguments": arguments}});
                if let Some(signature) = &part.thought_signature {
                    tool_call["extra_content"] =
                        json!({"google": {"thought_signature": signature}});
                }
                calls.push(tool_call);
                open_calls.push((id, call.name.to_string()));
            }
            if let Some(answer) = &part.function_response {
                let id = answer_id(&mut open_calls, answer)?;
                let content = answer.response.map_or("{}", RawValue::get);
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
        }
        let only_text = parts.iter().all(|p| p["type"] == "text");
        let content = match (parts.is_empty(), only_text) {
            (true, _) => Value::Null,
            (false, true) => Value::from(text),
            (false, false) => Value::from(parts),
        };
        match role {
            "model" if !calls.is_empty() || !content.is_null() => {
                let mut message = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    message["tool_calls"] = Value::from(calls);
                }
                messages.push(message);
            }
            "model" => {}
            // `tool` and `function` turns carry function responses (google-genai's own
            // examples send them so); like `user`, they are what the caller says.
            "user" | "tool" | "function" if !content.is_null() => {
                messages.push(json!({"role": "user", "content": content}));
            }
            "user" | "tool" | "function" => {}
            other => {
                return Err(invalid(format!(
                    "contents[{turn}]: role `{other}` is not user, model or tool"
                )));
            }
        }
    }
    Ok(())
}

/// The id of the open call a function response answers: by Gemini's id when it has one,
/// else the latest open call of that name.
fn answer_id(
    open_calls: &mut Vec<(String, String)>,
    answer: &FunctionResponse<'_>,
) -> Result<String, GatewayError> {
    // By name, the most recent open call: an earlier one left unanswered is not this one.
    let at = open_calls.iter().rposition(|(id, name)| match &answer.id {
        Some(wanted) => id == wanted,
        None => *name == answer.name,
    });
    match at {
        Some(at) => Ok(open_calls.remove(at).0),
        None => Err(invalid(format!(
            "a functionResponse for `{}` answers no earlier functionCall",
            crate::api::choose::truncate(&answer.name, 100)
        ))),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
