//! The messages of an OpenAI chat request as Gemini `contents`: roles, content parts,
//! images, tool calls and their answers.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::request::invalid;
use crate::error::{ErrorKind, GatewayError};

#[derive(Deserialize)]
pub struct Message<'a> {
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
    /// Where Tollgate (like Google's own OpenAI-compatible layer) hands a Gemini call's
    /// `thoughtSignature` to the client, which sends it back with the call.
    #[serde(borrow, default)]
    extra_content: Option<ExtraContent<'a>>,
}

#[derive(Deserialize)]
struct ExtraContent<'a> {
    #[serde(borrow, default)]
    google: Option<GoogleExtra<'a>>,
}

#[derive(Deserialize)]
struct GoogleExtra<'a> {
    #[serde(borrow, default)]
    thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// JSON text of the arguments object, as OpenAI sends it.
    #[serde(borrow)]
    arguments: Cow<'a, str>,
}

#[derive(Serialize)]
pub struct GeminiContent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

/// One part of a content: its data, and the thought signature Gemini gave a function call
/// (Gemini 3 refuses a history whose calls lost theirs).
#[derive(Serialize)]
pub struct Part<'a> {
    #[serde(flatten)]
    data: PartData<'a>,
    #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
    thought_signature: Option<Cow<'a, str>>,
}

impl<'a> From<PartData<'a>> for Part<'a> {
    fn from(data: PartData<'a>) -> Self {
        Part {
            data,
            thought_signature: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PartData<'a> {
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

pub type Contents<'a> = (Option<GeminiContent<'a>>, Vec<GeminiContent<'a>>);

/// System and developer messages become the system instruction; the turns become contents,
/// consecutive turns of one Gemini role merged (Gemini wants a tool call's answers together).
pub fn contents<'a>(messages: &'a [Message<'a>]) -> Result<Contents<'a>, GatewayError> {
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
                    let args = json_object(&call.function.arguments).ok_or_else(|| {
                        invalid(format!(
                            "messages[{i}]: the arguments of tool call `{}` are not a JSON object",
                            call.id
                        ))
                    })?;
                    let signature = (call.extra_content.as_ref())
                        .and_then(|extra| extra.google.as_ref())
                        .and_then(|google| google.thought_signature.clone());
                    parts.push(Part {
                        data: PartData::FunctionCall {
                            name: call.function.name.clone(),
                            args,
                        },
                        thought_signature: signature,
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
        // Gemini refuses empty turns (an assistant message with neither text nor calls).
        if parts.is_empty() {
            continue;
        }
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

/// The content parts of a message. Empty text is left out: Gemini refuses empty text parts
/// (an assistant message with `content: ""` and tool calls is common).
fn parts<'a>(message: &'a Message<'a>, i: usize) -> Result<Vec<Part<'a>>, GatewayError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![PartData::Text(text.clone()).into()]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter(|part| !(part.kind == "text" && part.text.as_deref() == Some("")))
            .map(|part| match (&*part.kind, &part.text, &part.image_url) {
                ("text", Some(text), _) => Ok(PartData::Text(text.clone()).into()),
                ("image_url", _, Some(image)) => image_part(&image.url, i).map(Part::from),
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
fn image_part<'a>(url: &'a Cow<'a, str>, i: usize) -> Result<PartData<'a>, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| invalid(format!("messages[{i}]: an image data URL must be base64")))?;
        return Ok(PartData::InlineData {
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
    Ok(PartData::FileData {
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
    // The nearest earlier call with that id: some servers reuse ids (`call_0`) turn after
    // turn, and a history can mix several providers' answers.
    let name = messages[..i]
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter().rev())
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
    Ok(PartData::FunctionResponse { name, response }.into())
}

/// `text` as raw JSON when it is a JSON object.
pub fn json_object(text: &str) -> Option<Box<RawValue>> {
    let raw: Box<RawValue> = serde_json::from_str(text).ok()?;
    raw.get().trim_start().starts_with('{').then_some(raw)
}
