//! A prompt version's variables, compiled: what a request must and may give, checked before
//! anything renders.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::template::{VariableSpec, VariableType};

/// The variables of one prompt version, by name.
#[derive(Debug)]
pub struct Schema {
    variables: Box<[Variable]>,
}

#[derive(Debug)]
pub struct Variable {
    pub name: Box<str>,
    pub kind: VariableType,
    pub required: bool,
    pub default: Option<Value>,
    pub max_length: Option<usize>,
    pub example: Option<Value>,
    pub description: Option<Box<str>>,
}

/// A variable a request got wrong: which, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableError {
    pub name: String,
    pub message: String,
}

/// Longest variable name; names are identifiers, so they fit in error params.
const MAX_NAME: usize = 64;

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME
}

impl Schema {
    /// Compiles the `variables` of a template file; an error is (variable name, why).
    pub fn compile(specs: &BTreeMap<String, VariableSpec>) -> Result<Schema, (String, String)> {
        let mut variables = Vec::with_capacity(specs.len());
        for (name, spec) in specs {
            let fail = |why: String| Err((name.clone(), why));
            if !is_identifier(name) {
                return fail(format!(
                    "a variable name is an identifier (letters, digits, `_`; at most {MAX_NAME})"
                ));
            }
            if spec.required && spec.default.is_some() {
                return fail("a required variable has no default".into());
            }
            if spec.max_length.is_some()
                && !matches!(spec.kind, VariableType::String | VariableType::Array)
            {
                return fail("max_length applies to string and array variables".into());
            }
            let variable = Variable {
                name: name.as_str().into(),
                kind: spec.kind,
                required: spec.required,
                default: spec.default.clone(),
                max_length: spec.max_length,
                example: spec.example.clone(),
                description: spec.description.as_deref().map(Into::into),
            };
            for (what, value) in [("default", &spec.default), ("example", &spec.example)] {
                if let Some(value) = value
                    && let Err(why) = variable.check(value)
                {
                    return fail(format!("its {what} does not fit: {why}"));
                }
            }
            variables.push(variable);
        }
        Ok(Schema {
            variables: variables.into(),
        })
    }

    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    fn get(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| &*v.name == name)
    }

    /// Checks the request's variables (a JSON object, or none) and fills in defaults: the
    /// values the template renders with. An absent optional variable without a default
    /// stays absent (the template may test `is defined`).
    pub fn bind(
        &self,
        given: Option<Map<String, Value>>,
    ) -> Result<Map<String, Value>, VariableError> {
        let mut values = given.unwrap_or_default();
        // JSON null means "not given", as for OpenAI's optional fields.
        values.retain(|_, value| !value.is_null());
        if let Some(unknown) = values.keys().find(|name| self.get(name).is_none()) {
            return Err(VariableError {
                name: super::clip(unknown, MAX_NAME).to_owned(),
                message: format!(
                    "the prompt has no variable `{}`",
                    super::clip(unknown, MAX_NAME)
                ),
            });
        }
        for variable in self.variables.iter() {
            match values.get(&*variable.name) {
                Some(value) => variable.check(value).map_err(|why| VariableError {
                    name: variable.name.to_string(),
                    message: format!("variable `{}` {why}", variable.name),
                })?,
                None if variable.required => {
                    return Err(VariableError {
                        name: variable.name.to_string(),
                        message: format!("variable `{}` is required", variable.name),
                    });
                }
                None => {
                    if let Some(default) = &variable.default {
                        values.insert(variable.name.to_string(), default.clone());
                    }
                }
            }
        }
        Ok(values)
    }

    /// Values for rendering the version offline: each variable's example, else its default,
    /// else a value of its type. `with_optional` false leaves optional variables without a
    /// default out, as a request may.
    pub fn examples(&self, with_optional: bool) -> Map<String, Value> {
        let mut values = Map::new();
        for variable in self.variables.iter() {
            if !with_optional && !variable.required {
                // Left out: `bind` fills in its default, if it has one.
                continue;
            }
            let value = (variable.example.as_ref())
                .or(variable.default.as_ref())
                .cloned()
                .unwrap_or_else(|| stand_in(variable.kind));
            values.insert(variable.name.to_string(), value);
        }
        values
    }
}

/// A value of `kind` for an example render of a variable that has no example.
fn stand_in(kind: VariableType) -> Value {
    match kind {
        VariableType::String => Value::String("example".into()),
        VariableType::Integer => Value::from(1),
        VariableType::Number => Value::from(1.5),
        VariableType::Boolean => Value::Bool(true),
        VariableType::Array => Value::Array(vec![Value::String("example".into())]),
        VariableType::Object => Value::Object(Map::new()),
    }
}

impl Variable {
    /// Why `value` does not fit this variable, if it does not.
    fn check(&self, value: &Value) -> Result<(), String> {
        if !self.kind.admits(value) {
            return Err(format!("must be of type {}", self.kind.as_str()));
        }
        let length = match value {
            Value::String(text) => text.chars().count(),
            Value::Array(items) => items.len(),
            _ => return Ok(()),
        };
        match self.max_length {
            Some(max) if length > max => Err(format!(
                "is {length} {} long, over its max_length of {max}",
                if value.is_string() {
                    "characters"
                } else {
                    "items"
                }
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(yaml: &str) -> Result<Schema, (String, String)> {
        let specs: BTreeMap<String, VariableSpec> = serde_norway::from_str(yaml).unwrap();
        Schema::compile(&specs)
    }

    fn object(value: Value) -> Option<Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    const SPECS: &str = "question: {required: true, max_length: 5}\ntone: {default: calm}\nn: {type: integer}\ntags: {type: array, max_length: 2}\n";

    #[test]
    fn binding_checks_types_lengths_and_fills_defaults() {
        let s = schema(SPECS).unwrap();
        let bound = s.bind(object(json!({"question": "why", "n": 3}))).unwrap();
        assert_eq!(
            Value::Object(bound),
            json!({"question": "why", "n": 3, "tone": "calm"})
        );

        let error = |given: Value| s.bind(object(given)).unwrap_err();
        let e = error(json!({}));
        assert_eq!(
            (e.name.as_str(), e.message.as_str()),
            ("question", "variable `question` is required")
        );
        let e = error(json!({"question": "too long"}));
        assert_eq!(e.name, "question");
        assert!(
            e.message
                .contains("8 characters long, over its max_length of 5"),
            "{}",
            e.message
        );
        let e = error(json!({"question": "ok", "n": 1.5}));
        assert_eq!(
            (e.name.as_str(), e.message.as_str()),
            ("n", "variable `n` must be of type integer")
        );
        let e = error(json!({"question": "ok", "tags": ["a", "b", "c"]}));
        assert!(e.message.contains("3 items long"), "{}", e.message);
        let e = error(json!({"question": "ok", "questoin": "typo"}));
        assert_eq!(e.name, "questoin");
        // Length counts characters, not bytes.
        assert!(s.bind(object(json!({"question": "ééééé"}))).is_ok());
        // null is "not given".
        let bound = s
            .bind(object(json!({"question": "q", "tone": null})))
            .unwrap();
        assert_eq!(bound["tone"], "calm");
    }

    #[test]
    fn compile_refuses_contradictions() {
        let why = |yaml: &str| schema(yaml).unwrap_err();
        assert_eq!(why("x: {required: true, default: a}\n").0, "x");
        assert!(
            why("x: {type: integer, max_length: 3}\n")
                .1
                .contains("max_length")
        );
        assert!(
            why("x: {type: integer, default: nope}\n")
                .1
                .contains("default")
        );
        assert!(
            why("x: {max_length: 2, example: long}\n")
                .1
                .contains("example")
        );
        assert!(why("\"bad name\": {}\n").1.contains("identifier"));
    }

    #[test]
    fn examples_come_from_example_then_default_then_type() {
        let s = schema("a: {example: hello}\nb: {default: 2, type: integer}\nc: {type: boolean}\nd: {required: true}\n").unwrap();
        assert_eq!(
            Value::Object(s.examples(true)),
            json!({"a": "hello", "b": 2, "c": true, "d": "example"})
        );
        // Without optional ones: only required variables (binding adds the defaults).
        assert_eq!(Value::Object(s.examples(false)), json!({"d": "example"}));
        assert_eq!(
            Value::Object(s.bind(Some(s.examples(false))).unwrap()),
            json!({"b": 2, "d": "example"})
        );
    }
}
