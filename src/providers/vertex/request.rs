//! An OpenAI chat request as a Gemini `generateContent` request: messages to `contents` and
//! `systemInstruction`, tools to function declarations, parameters to `generationConfig`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::api::decode::GENERATION_PARAMS;
use crate::error::{ErrorKind, GatewayError};

/// What to do with an OpenAI parameter Gemini has no equivalent for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedParams {
    /// Answer 400 naming the parameter: the caller learns it had no effect.
    #[default]
    Reject,
    /// Leave it out of the upstream request.
    Drop,
}

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
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    tool_calls: Vec<ToolCall<'a>>,
    #[serde(borrow, default)]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<ContentPart<'a>>),
}

/// A content part: `{"type": "text", "text"}`, `{"type": "image_url", "image_url"}` or a kind
/// Gemini is not sent. A struct rather than a tagged enum: serde buffers tagged enums.
#[derive(Deserialize)]
struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrl<'a>>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: FunctionCall<'a>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// JSON text of the arguments object, as OpenAI sends it.
    #[serde(borrow)]
    arguments: Cow<'a, str>,
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
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
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
struct GeminiContent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Part<'a> {
    Text(Cow<'a, str>),
    InlineData {
        #[serde(rename = "mimeType")]
        mime_type: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    FileData {
        #[serde(rename = "mimeType")]
        mime_type: &'static str,
        #[serde(rename = "fileUri")]
        file_uri: Cow<'a, str>,
    },
    FunctionCall {
        name: Cow<'a, str>,
        args: Box<RawValue>,
    },
    FunctionResponse {
        name: Cow<'a, str>,
        response: Box<RawValue>,
    },
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
    response_schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u32,
}

fn invalid(message: impl Into<Cow<'static, str>>) -> GatewayError {
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
        // A second pass over the keys only: cheap, and only for routes that refuse.
        let fields: BTreeMap<Cow<'_, str>, IgnoredAny> = serde_json::from_slice(body)
            .map_err(|err| invalid(format!("the chat request is not a JSON object: {err}")))?;
        let names: Vec<&str> = (fields.keys().map(|k| &**k))
            .filter(|name| !GENERATION_PARAMS.contains(name) && !OTHER_KNOWN_FIELDS.contains(name))
            .collect();
        if !names.is_empty() {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedParameter,
                format!(
                    "Gemini has no equivalent for {}; this route refuses such parameters rather than ignore them",
                    names.join(", ")
                ),
            ));
        }
    }
    let (system, contents) = contents(&request.messages)?;
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
        response_schema,
        thinking_config: thinking_budget.map(|thinking_budget| ThinkingConfig { thinking_budget }),
    })
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

type Contents<'a> = (Option<GeminiContent<'a>>, Vec<GeminiContent<'a>>);

/// System and developer messages become the system instruction; the turns become contents,
/// consecutive turns of one Gemini role merged (Gemini wants a tool call's answers together).
fn contents<'a>(messages: &'a [Message<'a>]) -> Result<Contents<'a>, GatewayError> {
    let mut system: Vec<Part<'a>> = Vec::new();
    let mut turns: Vec<GeminiContent<'a>> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let (role, parts) = match &*message.role {
            "system" | "developer" => {
                system.extend(parts(message, i)?);
                continue;
            }
            "user" => ("user", parts(message, i)?),
            "assistant" => {
                let mut parts = parts(message, i)?;
                for call in &message.tool_calls {
                    parts.push(Part::FunctionCall {
                        name: call.function.name.clone(),
                        args: json_object(&call.function.arguments).ok_or_else(|| {
                            invalid(format!(
                                "messages[{i}]: the arguments of tool call `{}` are not a JSON object",
                                call.id
                            ))
                        })?,
                    });
                }
                ("model", parts)
            }
            "tool" => ("user", vec![function_response(messages, message, i)?]),
            other => {
                return Err(invalid(format!(
                    "messages[{i}]: role `{other}` is not one of system, developer, user, assistant, tool"
                )));
            }
        };
        match turns.last_mut() {
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => turns.push(GeminiContent {
                role: Some(role),
                parts,
            }),
        }
    }
    let system = (!system.is_empty()).then_some(GeminiContent {
        role: None,
        parts: system,
    });
    Ok((system, turns))
}

fn parts<'a>(message: &'a Message<'a>, i: usize) -> Result<Vec<Part<'a>>, GatewayError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![Part::Text(text.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|part| match (&*part.kind, &part.text, &part.image_url) {
                ("text", Some(text), _) => Ok(Part::Text(text.clone())),
                ("image_url", _, Some(image)) => image_part(&image.url, i),
                ("text" | "image_url", _, _) => Err(invalid(format!(
                    "messages[{i}]: a {} part without its `{}` field",
                    part.kind, part.kind
                ))),
                (other, _, _) => Err(GatewayError::new(
                    ErrorKind::UnsupportedParameter,
                    format!(
                        "messages[{i}]: `{other}` content parts cannot be sent to Gemini; text and image_url can"
                    ),
                )),
            })
            .collect(),
    }
}

/// A data URL becomes inline data; any other URL a file reference, its media type taken from
/// the file's extension (Gemini requires one, and guessing wrong would misread the file).
fn image_part<'a>(url: &'a Cow<'a, str>, i: usize) -> Result<Part<'a>, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| invalid(format!("messages[{i}]: an image data URL must be base64")))?;
        return Ok(Part::InlineData {
            mime_type: Cow::Owned(mime_type.to_owned()),
            data: Cow::Owned(data.to_owned()),
        });
    }
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    let mime_type = match extension.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        Some("pdf") => "application/pdf",
        _ => {
            return Err(invalid(format!(
                "messages[{i}]: cannot tell the media type of image URL `{}` from its extension; send a data URL",
                crate::api::choose::truncate(path, 200)
            )));
        }
    };
    Ok(Part::FileData {
        mime_type,
        file_uri: url.clone(),
    })
}

/// A tool message answers the call with its `tool_call_id`; Gemini names the function, so the
/// name comes from the assistant message that made the call.
fn function_response<'a>(
    messages: &'a [Message<'a>],
    message: &'a Message<'a>,
    i: usize,
) -> Result<Part<'a>, GatewayError> {
    let id = message
        .tool_call_id
        .as_deref()
        .ok_or_else(|| invalid(format!("messages[{i}]: a tool message needs tool_call_id")))?;
    let name = messages[..i]
        .iter()
        .flat_map(|m| &m.tool_calls)
        .find(|call| call.id == id)
        .map(|call| call.function.name.clone())
        .ok_or_else(|| {
            invalid(format!(
                "messages[{i}]: tool_call_id `{}` matches no earlier assistant tool call",
                crate::api::choose::truncate(id, 100)
            ))
        })?;
    let text = match &message.content {
        Some(Content::Text(text)) => text.to_string(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|part| part.text.as_deref())
            .collect(),
        None => String::new(),
    };
    // Gemini's response is an object: a JSON object answer is passed as is, anything else
    // wrapped as `{"content": ...}`.
    let response = match json_object(&text) {
        Some(object) => object,
        None => RawValue::from_string(serde_json::json!({ "content": text }).to_string())
            .map_err(|err| invalid(format!("messages[{i}]: {err}")))?,
    };
    Ok(Part::FunctionResponse { name, response })
}

/// `text` as raw JSON when it is a JSON object.
fn json_object(text: &str) -> Option<Box<RawValue>> {
    let raw: Box<RawValue> = serde_json::from_str(text).ok()?;
    raw.get().trim_start().starts_with('{').then_some(raw)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
