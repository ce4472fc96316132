//! What of a Gemini request an OpenAI-compatible server can be given: the nested fields
//! with no equivalent (for routes that refuse them), and Gemini's OpenAPI-subset schemas
//! as JSON Schema.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// `generationConfig` fields the translation carries.
const GENERATION_FIELDS: [&str; 13] = [
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "seed",
    "candidateCount",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "thinkingConfig",
];

/// Part fields the translation carries (`thought` parts are left out on purpose).
const PART_FIELDS: [&str; 7] = [
    "text",
    "thought",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "thoughtSignature",
];

/// Where the JSON request `body` asks for something an OpenAI-compatible server cannot do:
/// `generationConfig.responseModalities`, `tools[0].googleSearch`, a part kind, a
/// function-calling mode. Empty when everything is carried (or the body is not an object,
/// which the translation refuses anyway).
pub fn uncarried_nested(body: &[u8]) -> Vec<String> {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(Value::Object(config)) = request.get("generationConfig") {
        found.extend(
            (config.iter())
                .filter(|(key, value)| {
                    !GENERATION_FIELDS.contains(&key.as_str()) && !value.is_null()
                })
                .map(|(key, _)| format!("generationConfig.{key}")),
        );
    }
    for (i, tool) in array(&request, "tools").iter().enumerate() {
        if let Value::Object(tool) = tool {
            found.extend(
                (tool.keys())
                    .filter(|key| *key != "functionDeclarations")
                    .map(|key| format!("tools[{i}].{key}")),
            );
        }
    }
    for (i, content) in array(&request, "contents").iter().enumerate() {
        let Value::Object(content) = content else {
            continue;
        };
        for (j, part) in array(content, "parts").iter().enumerate() {
            if let Value::Object(part) = part {
                found.extend(
                    (part.keys())
                        .filter(|key| !PART_FIELDS.contains(&key.as_str()))
                        .map(|key| format!("contents[{i}].parts[{j}].{key}")),
                );
            }
        }
    }
    let calling = request
        .get("toolConfig")
        .and_then(|c| c.get("functionCallingConfig"));
    if let Some(calling) = calling {
        let mode = calling
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("AUTO");
        let names = calling
            .get("allowedFunctionNames")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match (mode, names) {
            ("NONE" | "AUTO" | "MODE_UNSPECIFIED", _) | ("ANY", 0 | 1) => {}
            ("ANY", _) => {
                found.push("toolConfig mode ANY with several allowedFunctionNames".into())
            }
            (other, _) => found.push(format!("toolConfig mode {other}")),
        }
    }
    found
}

fn array<'a>(object: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    object
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Gemini's OpenAPI-subset schema (`type: "OBJECT"`, `nullable`, `propertyOrdering`) as
/// JSON Schema: types in lowercase, `nullable: true` as a `"null"` type, ordering dropped.
pub fn json_schema_of(schema: &RawValue) -> Value {
    let mut value: Value = serde_json::from_str(schema.get()).unwrap_or(Value::Null);
    convert(&mut value);
    value
}

fn convert(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.remove("propertyOrdering");
            let nullable = object.remove("nullable") == Some(Value::Bool(true));
            if let Some(Value::String(kind)) = object.get_mut("type") {
                *kind = kind.to_ascii_lowercase();
                if nullable {
                    let kind = Value::String(std::mem::take(kind));
                    object.insert("type".into(), Value::Array(vec![kind, "null".into()]));
                }
            }
            for (key, child) in object.iter_mut() {
                // Property names are data, not schema keywords: only their schemas convert.
                if key == "properties" {
                    if let Value::Object(properties) = child {
                        properties.values_mut().for_each(convert);
                    }
                } else {
                    convert(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(convert),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_with_no_openai_equivalent_are_found() {
        let body = json!({
            "contents": [{"role": "user", "parts": [{"text": "x"}, {"executableCode": {"code": "1"}}]}],
            "tools": [{"functionDeclarations": []}, {"googleSearch": {}}],
            "generationConfig": {"temperature": 1, "responseModalities": ["TEXT"], "seed": null},
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "b"]}}
        });
        let found = uncarried_nested(body.to_string().as_bytes());
        assert_eq!(
            found,
            vec![
                "generationConfig.responseModalities",
                "tools[1].googleSearch",
                "contents[0].parts[1].executableCode",
                "toolConfig mode ANY with several allowedFunctionNames",
            ]
        );
        let validated =
            json!({"contents": [], "toolConfig": {"functionCallingConfig": {"mode": "VALIDATED"}}});
        assert_eq!(
            uncarried_nested(validated.to_string().as_bytes()),
            vec!["toolConfig mode VALIDATED"]
        );
        assert!(uncarried_nested(br#"{"contents":[{"parts":[{"text":"x"}]}]}"#).is_empty());
    }

    #[test]
    fn openapi_schemas_become_json_schema() {
        let raw: Box<RawValue> = serde_json::from_str(
            r#"{"type":"OBJECT","propertyOrdering":["a"],"properties":{"a":{"type":"STRING","nullable":true},
                "type":{"type":"ARRAY","items":{"type":"INTEGER"}}},"required":["a"]}"#,
        )
        .unwrap();
        assert_eq!(
            json_schema_of(&raw),
            json!({"type": "object", "properties": {
                "a": {"type": ["string", "null"]},
                "type": {"type": "array", "items": {"type": "integer"}}},
                "required": ["a"]})
        );
    }
}
