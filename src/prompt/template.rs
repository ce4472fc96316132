//! A prompt version's file as written: messages with template text, the variables they take,
//! and what the version sets on the request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `<dir>/<id>/<version>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateFile {
    /// What the prompt is for; shown by `GET /v1/prompts`.
    #[serde(default)]
    pub description: Option<String>,
    /// Who answers for it (a team, a person).
    #[serde(default)]
    pub owner: Option<String>,
    /// Route alias used when the request names no model.
    #[serde(default)]
    pub model: Option<String>,
    /// Generation parameters set when the caller did not set them (the names a route
    /// version's `defaults` takes).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// What to do with messages the caller sends beside the prompt.
    #[serde(default)]
    pub caller_messages: CallerMessages,
    #[serde(default)]
    pub variables: BTreeMap<String, VariableSpec>,
    pub messages: Vec<MessageTemplate>,
}

/// The caller's own `messages`, next to a prompt's.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallerMessages {
    /// After the rendered ones: a chat that goes on from the prompt.
    #[default]
    Append,
    /// Answered with 400: the prompt is the whole conversation.
    Reject,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    pub role: Role,
    /// minijinja template text.
    pub content: String,
}

/// One variable a prompt takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    #[serde(default, rename = "type")]
    pub kind: VariableType,
    /// The request must give it (a required variable has no default).
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Longest value: characters of a string, items of an array.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// A typical value: `tollgate check` renders the version with it.
    #[serde(default)]
    pub example: Option<serde_json::Value>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl VariableType {
    pub fn as_str(self) -> &'static str {
        match self {
            VariableType::String => "string",
            VariableType::Integer => "integer",
            VariableType::Number => "number",
            VariableType::Boolean => "boolean",
            VariableType::Array => "array",
            VariableType::Object => "object",
        }
    }

    /// Does `value` have this type? (`integer` takes whole numbers only.)
    pub fn admits(self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match self {
            VariableType::String => value.is_string(),
            VariableType::Integer => value.is_i64() || value.is_u64(),
            VariableType::Number => value.is_number(),
            VariableType::Boolean => value.is_boolean(),
            VariableType::Array => matches!(value, Value::Array(_)),
            VariableType::Object => matches!(value, Value::Object(_)),
        }
    }
}

/// What a version's content hash covers: everything that changes what is sent upstream or
/// what a request may carry. Description, owner and examples are notes about the version,
/// so fixing a typo in them is not a new version.
#[derive(Serialize)]
pub struct HashedContent<'a> {
    pub model: &'a Option<String>,
    pub params: &'a BTreeMap<String, serde_json::Value>,
    pub caller_messages: CallerMessages,
    pub variables: BTreeMap<&'a str, HashedVariable<'a>>,
    pub messages: &'a [MessageTemplate],
}

#[derive(Serialize)]
pub struct HashedVariable<'a> {
    #[serde(rename = "type")]
    pub kind: VariableType,
    pub required: bool,
    pub default: &'a Option<serde_json::Value>,
    pub max_length: Option<usize>,
}

impl TemplateFile {
    /// The first 12 hex digits of the SHA-256 of [`HashedContent`] as canonical JSON (object
    /// keys sorted), so reformatting the YAML does not change it.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let content = HashedContent {
            model: &self.model,
            params: &self.params,
            caller_messages: self.caller_messages,
            variables: self
                .variables
                .iter()
                .map(|(name, v)| {
                    (
                        name.as_str(),
                        HashedVariable {
                            kind: v.kind,
                            required: v.required,
                            default: &v.default,
                            max_length: v.max_length,
                        },
                    )
                })
                .collect(),
            messages: &self.messages,
        };
        let json = serde_json::to_vec(&content).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..6])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> TemplateFile {
        serde_norway::from_str(yaml).unwrap()
    }

    const BASE: &str = "messages:\n  - role: system\n    content: \"Hi {{ name }}\"\nvariables:\n  name: {required: true, max_length: 10}\n";

    #[test]
    fn the_hash_covers_content_not_notes_or_layout() {
        let base = parse(BASE).content_hash();
        assert_eq!(base.len(), 12);
        let notes = parse(&format!(
            "description: greets\nowner: team\n{}",
            BASE.replace("max_length: 10}", "max_length: 10, example: Ann}")
        ));
        assert_eq!(notes.content_hash(), base, "notes are not content");
        let layout = parse(
            "variables: {name: {max_length: 10, required: true}}\nmessages: [{content: \"Hi {{ name }}\", role: system}]\n",
        );
        assert_eq!(layout.content_hash(), base, "YAML layout is not content");
        for changed in [
            BASE.replace("Hi {{", "Hello {{"),
            BASE.replace("max_length: 10", "max_length: 11"),
            BASE.replace("role: system", "role: user"),
            format!("{BASE}params: {{temperature: 0.1}}\n"),
            format!("{BASE}model: other\n"),
            format!("{BASE}caller_messages: reject\n"),
        ] {
            assert_ne!(parse(&changed).content_hash(), base, "{changed}");
        }
    }

    #[test]
    fn types_admit_their_values() {
        use serde_json::json;
        assert!(VariableType::Integer.admits(&json!(3)));
        assert!(!VariableType::Integer.admits(&json!(3.5)));
        assert!(VariableType::Number.admits(&json!(3.5)));
        assert!(!VariableType::String.admits(&json!(3)));
        assert!(VariableType::Array.admits(&json!([1])));
        assert!(VariableType::Object.admits(&json!({})));
        assert!(!VariableType::Boolean.admits(&json!("true")));
    }
}
