//! Parsing and validation of Gemini request bodies (`generateContent`, `streamGenerateContent`,
//! `countTokens`), strict where Vertex is strict so a gateway's translation bugs surface here.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::google_error::GoogleError;
use crate::responses;

/// Top-level fields of `GenerateContentRequest` and `CountTokensRequest`; like Vertex, the mock
/// refuses any other (proto3 JSON also accepts the snake_case names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body<'a> {
    #[serde(borrow)]
    contents: Option<&'a RawValue>,
    #[serde(borrow, alias = "system_instruction")]
    system_instruction: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(alias = "tool_config")]
    tool_config: Option<ToolConfig>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    labels: Option<BTreeMap<String, String>>,
    // Accepted so that valid requests pass; the mock does not act on them.
    #[serde(rename = "safetySettings", alias = "safety_settings")]
    _safety_settings: Option<IgnoredAny>,
    #[serde(rename = "cachedContent", alias = "cached_content")]
    _cached_content: Option<IgnoredAny>,
    #[serde(rename = "model")]
    _model: Option<IgnoredAny>,
    #[serde(rename = "modelArmorConfig", alias = "model_armor_config")]
    _model_armor_config: Option<IgnoredAny>,
    #[serde(rename = "instances")]
    _instances: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default)]
    parts: Vec<Part>,
}

/// The `data` oneof of a part: exactly one must be set.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<IgnoredAny>,
    #[serde(alias = "inline_data")]
    inline_data: Option<IgnoredAny>,
    #[serde(alias = "file_data")]
    file_data: Option<IgnoredAny>,
    #[serde(alias = "function_call")]
    function_call: Option<IgnoredAny>,
    #[serde(alias = "function_response")]
    function_response: Option<IgnoredAny>,
    #[serde(alias = "executable_code")]
    executable_code: Option<IgnoredAny>,
    #[serde(alias = "code_execution_result")]
    code_execution_result: Option<IgnoredAny>,
}

impl Part {
    fn data_fields(&self) -> usize {
        [
            self.text.is_some(),
            self.inline_data.is_some(),
            self.file_data.is_some(),
            self.function_call.is_some(),
            self.function_response.is_some(),
            self.executable_code.is_some(),
            self.code_execution_result.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    #[serde(alias = "function_declarations")]
    function_declarations: Option<Vec<FunctionDeclaration>>,
}

/// One declared function: what the mock needs to call it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionDeclaration {
    pub(crate) name: String,
    pub(crate) parameters: Option<serde_json::Value>,
    #[serde(alias = "parameters_json_schema")]
    pub(crate) parameters_json_schema: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<i64>,
    #[serde(alias = "candidate_count")]
    candidate_count: Option<i64>,
    #[serde(alias = "thinking_config")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    #[serde(alias = "thinking_budget")]
    thinking_budget: Option<i64>,
    #[serde(alias = "thinking_level")]
    thinking_level: Option<String>,
    #[serde(alias = "include_thoughts")]
    include_thoughts: Option<bool>,
}

/// What the mock needs from a valid request.
#[derive(Debug)]
pub(crate) struct GeminiRequest {
    /// Counted from `contents`, `systemInstruction` and `tools`, so `countTokens` on the same
    /// prompt gives the same number.
    pub(crate) prompt_tokens: u64,
    pub(crate) functions: Vec<FunctionDeclaration>,
    /// `functionCallingConfig.mode` is `ANY`.
    pub(crate) mode_any: bool,
    pub(crate) allowed_function_names: Vec<String>,
    /// The last content carries `functionResponse` parts.
    pub(crate) answers_function: bool,
    pub(crate) max_output_tokens: Option<usize>,
    pub(crate) candidate_count: usize,
    /// Thinking asked for: `Some(budget)` (-1 = dynamic), `None` for no thinking.
    pub(crate) thinking_budget: Option<i64>,
    pub(crate) include_thoughts: bool,
}

/// A function name as Vertex accepts it: starts with a letter or `_`; letters, digits, `_`,
/// `.`, `:`, `-`; at most 64.
fn valid_function_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// A label key or value: at most 63 lowercase letters, digits, `_` or `-`; keys start with a
/// lowercase letter.
fn valid_label(text: &str, key: bool) -> bool {
    let allowed = |c: char| c.is_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    text.chars().count() <= 63
        && text.chars().all(allowed)
        && (!key || text.chars().next().is_some_and(char::is_lowercase))
}

fn invalid(message: impl Into<String>) -> GoogleError {
    GoogleError::invalid_argument(message)
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), GoogleError> {
    if labels.len() > 64 {
        return Err(invalid("labels: at most 64 labels are allowed"));
    }
    for (key, value) in labels {
        if !valid_label(key, true) {
            return Err(invalid(format!(
                "labels: invalid key `{key}`: 1-63 lowercase letters, digits, `_` or `-`, \
                 starting with a lowercase letter"
            )));
        }
        if !valid_label(value, false) {
            return Err(invalid(format!(
                "labels: invalid value `{value}` for key `{key}`: at most 63 lowercase letters, \
                 digits, `_` or `-`"
            )));
        }
    }
    Ok(())
}

/// Checks the contents; returns whether the last one answers a function call.
fn check_contents(raw: &RawValue) -> Result<bool, GoogleError> {
    let contents: Vec<Content<'_>> = serde_json::from_str(raw.get())
        .map_err(|e| invalid(format!("Invalid JSON payload received in `contents`: {e}")))?;
    if contents.is_empty() {
        return Err(invalid(
            "Unable to submit request because it must include at least one contents field.",
        ));
    }
    for (i, content) in contents.iter().enumerate() {
        if let Some(role) = content.role.as_deref()
            && !matches!(role, "user" | "model")
        {
            return Err(invalid(format!(
                "contents[{i}].role `{role}`: Please use a valid role: user, model."
            )));
        }
        if content.parts.is_empty() {
            return Err(invalid(format!(
                "contents[{i}]: Unable to submit request because it must include at least one \
                 parts field, which describes the prompt input."
            )));
        }
        for (j, part) in content.parts.iter().enumerate() {
            if part.data_fields() != 1 {
                return Err(invalid(format!(
                    "contents[{i}].parts[{j}]: a part must set exactly one of text, inlineData, \
                     fileData, functionCall, functionResponse, executableCode, \
                     codeExecutionResult"
                )));
            }
        }
    }
    Ok(contents
        .last()
        .is_some_and(|c| c.parts.iter().any(|p| p.function_response.is_some())))
}

fn functions(raw: Option<&RawValue>) -> Result<Vec<FunctionDeclaration>, GoogleError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let tools: Vec<Tool> = serde_json::from_str(raw.get())
        .map_err(|e| invalid(format!("Invalid JSON payload received in `tools`: {e}")))?;
    let functions: Vec<FunctionDeclaration> = tools
        .into_iter()
        .flat_map(|t| t.function_declarations.unwrap_or_default())
        .collect();
    if let Some(bad) = functions.iter().find(|f| !valid_function_name(&f.name)) {
        return Err(invalid(format!(
            "Invalid function name `{}`. Must start with a letter or an underscore. Must be \
             alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), \
             with a maximum length of 64.",
            bad.name
        )));
    }
    Ok(functions)
}

/// Parses and validates a body; errors are `INVALID_ARGUMENT`s worded like Vertex's.
pub(crate) fn parse(body: &[u8]) -> Result<GeminiRequest, GoogleError> {
    let body: Body<'_> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))?;
    let Some(contents) = body.contents else {
        return Err(invalid("contents is not specified"));
    };
    let answers_function = check_contents(contents)?;
    if let Some(labels) = &body.labels {
        check_labels(labels)?;
    }
    let functions = functions(body.tools)?;
    let calling = body.tool_config.and_then(|t| t.function_calling_config);
    let (mode, allowed) = match calling {
        Some(c) => (c.mode, c.allowed_function_names.unwrap_or_default()),
        None => (None, Vec::new()),
    };
    let mode = mode.as_deref().unwrap_or("AUTO");
    if !matches!(
        mode,
        "MODE_UNSPECIFIED" | "AUTO" | "ANY" | "NONE" | "VALIDATED"
    ) {
        return Err(invalid(format!(
            "Invalid value at 'tool_config.function_calling_config.mode', `{mode}`"
        )));
    }
    if !allowed.is_empty() && !matches!(mode, "ANY" | "VALIDATED") {
        return Err(invalid(
            "allowed_function_names should only be set when the Function Calling Mode is ANY.",
        ));
    }
    let generation = body.generation_config.unwrap_or_default();
    let max_output_tokens = match generation.max_output_tokens {
        Some(n) if n < 1 => return Err(invalid("max_output_tokens must be positive.")),
        n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let candidate_count = match generation.candidate_count.unwrap_or(1) {
        n @ 1..=8 => n as usize,
        n => {
            return Err(invalid(format!(
                "candidate_count must be in the range [1, 8]; got {n}."
            )));
        }
    };
    let thinking = generation.thinking_config.unwrap_or_default();
    let thinking_budget = match (thinking.thinking_budget, thinking.thinking_level) {
        (Some(b), _) if b < -1 => {
            return Err(invalid(format!("thinking_budget {b} is out of range.")));
        }
        (Some(0), _) => None,
        (Some(b), _) => Some(b),
        (None, Some(_)) => Some(-1),
        (None, None) => None,
    };
    let counted = contents.get().len()
        + body.system_instruction.map_or(0, |s| s.get().len())
        + body.tools.map_or(0, |t| t.get().len());
    Ok(GeminiRequest {
        prompt_tokens: responses::prompt_tokens(counted),
        functions,
        mode_any: mode == "ANY",
        allowed_function_names: allowed,
        answers_function,
        max_output_tokens,
        candidate_count,
        thinking_budget,
        include_thoughts: thinking.include_thoughts.unwrap_or(false),
    })
}

/// Deterministic arguments for a declared function: one value per declared property, chosen
/// by its type (`mock` for strings, or the first enum value; 1; true; []; {}).
pub(crate) fn sample_args(function: &FunctionDeclaration) -> serde_json::Value {
    use serde_json::Value;
    let schema = function
        .parameters
        .as_ref()
        .or(function.parameters_json_schema.as_ref());
    let mut args = serde_json::Map::new();
    if let Some(Value::Object(properties)) = schema.and_then(|s| s.get("properties")) {
        for (name, property) in properties {
            let kind = match property.get("type") {
                Some(Value::String(t)) => t.to_ascii_lowercase(),
                // JSON Schema allows a list such as ["string", "null"].
                Some(Value::Array(types)) => types
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|t| *t != "null")
                    .unwrap_or("string")
                    .to_ascii_lowercase(),
                _ => "string".to_owned(),
            };
            let first_enum = property
                .get("enum")
                .and_then(|e| e.get(0))
                .cloned()
                .filter(|_| kind == "string");
            let value = match kind.as_str() {
                _ if first_enum.is_some() => first_enum.unwrap_or_default(),
                "integer" | "number" => Value::from(1),
                "boolean" => Value::Bool(true),
                "array" => Value::Array(Vec::new()),
                "object" => Value::Object(serde_json::Map::new()),
                _ => Value::from("mock"),
            };
            args.insert(name.clone(), value);
        }
    }
    Value::Object(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str) -> Result<GeminiRequest, String> {
        parse(body.as_bytes()).map_err(|e| e.message)
    }

    #[test]
    fn accepts_a_full_request() {
        let body = r#"{
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "AA=="}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
            ],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT"}}]}, {"googleSearch": {}}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"maxOutputTokens": 5, "candidateCount": 2, "temperature": 0.2,
                "thinkingConfig": {"thinkingBudget": 100, "includeThoughts": true}},
            "safetySettings": [],
            "labels": {"tenant": "acme", "prompt_version": "v-3"}
        }"#;
        let req = parse_str(body).unwrap();
        assert!(req.answers_function && req.mode_any && req.include_thoughts);
        assert_eq!(req.functions[0].name, "get_weather");
        assert_eq!(req.allowed_function_names, ["get_weather"]);
        assert_eq!(req.max_output_tokens, Some(5));
        assert_eq!(req.candidate_count, 2);
        assert_eq!(req.thinking_budget, Some(100));
        let snake = r#"{"contents":[{"parts":[{"text":"x"}]}],"generation_config":{"max_output_tokens":3}}"#;
        assert_eq!(parse_str(snake).unwrap().max_output_tokens, Some(3));
    }

    #[test]
    fn prompt_tokens_ignore_generation_settings() {
        let plain = r#"{"contents":[{"role":"user","parts":[{"text":"hello there"}]}]}"#;
        let tuned = r#"{"contents":[{"role":"user","parts":[{"text":"hello there"}]}],"generationConfig":{"maxOutputTokens":9}}"#;
        assert_eq!(
            parse_str(plain).unwrap().prompt_tokens,
            parse_str(tuned).unwrap().prompt_tokens
        );
    }

    #[test]
    fn refuses_what_vertex_refuses() {
        for (body, needle) in [
            ("{not json", "Invalid JSON payload"),
            (r#"{"generationConfig":{}}"#, "contents is not specified"),
            (r#"{"contents":[]}"#, "at least one contents"),
            (r#"{"contents":[{"parts":[]}]}"#, "parts field"),
            (
                r#"{"contents":[{"role":"assistant","parts":[{"text":"x"}]}]}"#,
                "valid role",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x","functionCall":{}}]}]}"#,
                "exactly one",
            ),
            (
                r#"{"contents":[{"parts":[{"thought":true}]}]}"#,
                "exactly one",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"model":"m","stream":true}"#,
                "unknown field `stream`",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"labels":{"Tenant":"a"}}"#,
                "invalid key",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"labels":{"t":"A B"}}"#,
                "invalid value",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"9x"}]}]}"#,
                "function name",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"toolConfig":{"functionCallingConfig":{"mode":"SOMETIMES"}}}"#,
                "mode",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"toolConfig":{"functionCallingConfig":{"mode":"AUTO","allowedFunctionNames":["f"]}}}"#,
                "allowed_function_names",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"maxOutputTokens":0}}"#,
                "max_output_tokens",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"candidateCount":9}}"#,
                "candidate_count",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"thinkingConfig":{"thinkingBudget":-2}}}"#,
                "thinking_budget",
            ),
        ] {
            let message = parse_str(body)
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert!(message.contains(needle), "{body}: {message}");
        }
        let long_label = format!(
            r#"{{"contents":[{{"parts":[{{"text":"x"}}]}}],"labels":{{"k":"{}"}}}}"#,
            "a".repeat(64)
        );
        assert!(parse_str(&long_label).is_err());
    }

    #[test]
    fn thinking_levels_and_zero_budgets() {
        let level = r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"thinkingConfig":{"thinkingLevel":"LOW"}}}"#;
        assert_eq!(parse_str(level).unwrap().thinking_budget, Some(-1));
        let off = r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"thinkingConfig":{"thinkingBudget":0}}}"#;
        assert_eq!(parse_str(off).unwrap().thinking_budget, None);
    }

    #[test]
    fn sample_args_follow_the_schema() {
        let function: FunctionDeclaration = serde_json::from_str(
            r#"{"name":"f","parameters":{"type":"OBJECT","properties":{
                "city":{"type":"STRING"},"unit":{"type":"STRING","enum":["C","F"]},
                "days":{"type":"INTEGER"},"exact":{"type":"BOOLEAN"},"tags":{"type":"ARRAY"},
                "opts":{"type":"OBJECT"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            sample_args(&function),
            serde_json::json!({"city":"mock","unit":"C","days":1,"exact":true,"tags":[],"opts":{}})
        );
        let json_schema: FunctionDeclaration = serde_json::from_str(
            r#"{"name":"g","parametersJsonSchema":{"type":"object","properties":{"n":{"type":["number","null"]}}}}"#,
        )
        .unwrap();
        assert_eq!(sample_args(&json_schema), serde_json::json!({"n": 1}));
        let bare: FunctionDeclaration = serde_json::from_str(r#"{"name":"h"}"#).unwrap();
        assert_eq!(sample_args(&bare), serde_json::json!({}));
    }
}
