//! Writes the body a prompt request becomes: the caller's members in their order and bytes,
//! `prompt` taken out, the rendered messages before the caller's own, and the model and
//! generation parameters the prompt version sets where the caller set none.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::template::CallerMessages;
use crate::api::decode::ParamDefault;
use crate::error::{ErrorKind, GatewayError};

/// What goes into the body besides the caller's members.
pub struct Splice<'a> {
    /// The rendered messages, as JSON array members.
    pub rendered: &'a [u8],
    /// The route alias to name when the body has no `model`.
    pub model: Option<&'a str>,
    /// The prompt version's generation parameters, and which the body already sets.
    pub params: &'a [ParamDefault],
    pub params_present: u16,
    pub caller_messages: CallerMessages,
    /// `id@version`, for error messages.
    pub reference: &'a str,
}

/// A top-level key: borrowed unless it has escapes to undo.
enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(text) => text,
            Key::Owned(text) => text,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(text))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(text.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The top-level members of a JSON object, in order, values raw.
struct Members<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

fn invalid(param: &'static str, message: String) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidField, message).with_param(param)
}

/// The new body. `body` was already parsed once (it is a JSON object).
pub fn splice(body: &[u8], with: &Splice<'_>) -> Result<Vec<u8>, GatewayError> {
    let Members(members) = serde_json::from_slice(body).map_err(|e| {
        GatewayError::new(
            ErrorKind::MalformedJson,
            format!("request body is not a JSON object: {e}"),
        )
    })?;
    let mut out = Vec::with_capacity(body.len() + with.rendered.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, key: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
    };
    let (mut has_messages, mut has_model) = (false, false);
    for (key, value) in &members {
        match key.as_str() {
            "prompt" => continue,
            "messages" => {
                if has_messages {
                    return Err(invalid(
                        "messages",
                        "`messages` appears more than once".into(),
                    ));
                }
                has_messages = true;
                let caller = value.get().trim();
                let inner = caller
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
                    .map(str::trim);
                let inner = match (inner, caller) {
                    (Some(inner), _) => inner,
                    (None, "null") => "",
                    (None, _) => {
                        return Err(invalid("messages", "`messages` must be an array".into()));
                    }
                };
                if !inner.is_empty() && with.caller_messages == CallerMessages::Reject {
                    return Err(invalid(
                        "messages",
                        format!(
                            "prompt {} is the whole conversation: send no `messages` with it",
                            with.reference
                        ),
                    ));
                }
                member(&mut out, "messages");
                out.push(b'[');
                out.extend_from_slice(with.rendered);
                if !inner.is_empty() {
                    out.push(b',');
                    out.extend_from_slice(inner.as_bytes());
                }
                out.push(b']');
                continue;
            }
            "model" if value.get() != "null" => has_model = true,
            "model" => continue,
            _ => {}
        }
        member(&mut out, key.as_str());
        out.extend_from_slice(value.get().as_bytes());
    }
    if !has_messages {
        member(&mut out, "messages");
        out.push(b'[');
        out.extend_from_slice(with.rendered);
        out.push(b']');
    }
    if !has_model {
        let Some(model) = with.model else {
            return Err(GatewayError::new(
                ErrorKind::MissingModel,
                format!(
                    "you must provide a model parameter: prompt {} names no default model",
                    with.reference
                ),
            )
            .with_param("model"));
        };
        member(&mut out, "model");
        let _ = serde_json::to_writer(&mut out, model);
    }
    for param in with.params {
        if with.params_present & (1 << param.bit) == 0 {
            // `member` is `,"name":value`; the body has at least `messages` before it.
            out.extend_from_slice(&param.member);
        }
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::decode::generation_param;

    fn with<'a>(rendered: &'a [u8], params: &'a [ParamDefault], present: u16) -> Splice<'a> {
        Splice {
            rendered,
            model: Some("chat"),
            params,
            params_present: present,
            caller_messages: CallerMessages::Append,
            reference: "p@1",
        }
    }

    fn text(body: &str, splice_with: &Splice<'_>) -> String {
        String::from_utf8(splice(body.as_bytes(), splice_with).unwrap()).unwrap()
    }

    const RENDERED: &[u8] = br#"{"role":"system","content":"S"}"#;

    #[test]
    fn rendered_messages_go_first_and_prompt_goes() {
        let out = text(
            r#"{"stream":true, "pr\u006fmpt":{"id":"p"},"messages":[ {"role":"user","content":"U"} ],"x":{"k":[1, 2]}}"#,
            &with(RENDERED, &[], 0),
        );
        assert_eq!(
            out,
            r#"{"stream":true,"messages":[{"role":"system","content":"S"},{"role":"user","content":"U"}],"x":{"k":[1, 2]},"model":"chat"}"#
        );
    }

    #[test]
    fn model_and_params_are_filled_only_where_missing() {
        let params = ParamDefault::compile_all(
            &serde_json::from_str(r#"{"temperature":0.2,"max_tokens":9}"#).unwrap(),
        )
        .unwrap();
        let present = 1 << generation_param("temperature").unwrap();
        let out = text(
            r#"{"model":"mine","temperature":1}"#,
            &with(RENDERED, &params, present),
        );
        assert_eq!(
            out,
            r#"{"model":"mine","temperature":1,"messages":[{"role":"system","content":"S"}],"max_tokens":9}"#
        );
        let mut no_model = with(RENDERED, &[], 0);
        no_model.model = None;
        let err = splice(br#"{"messages":[]}"#, &no_model).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MissingModel);
    }

    #[test]
    fn caller_messages_follow_the_version_setting() {
        let mut reject = with(RENDERED, &[], 0);
        reject.caller_messages = CallerMessages::Reject;
        assert!(
            splice(br#"{"messages":[]}"#, &reject).is_ok(),
            "an empty list is no messages"
        );
        let err = splice(br#"{"messages":[{"role":"user","content":"x"}]}"#, &reject).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        let err = splice(br#"{"messages":"hi"}"#, &with(RENDERED, &[], 0)).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        let err = splice(br#"{"messages":[],"messages":[]}"#, &with(RENDERED, &[], 0)).unwrap_err();
        assert!(err.message.contains("more than once"));
    }

    #[test]
    fn the_result_is_valid_json_for_any_member_shapes() {
        for body in [
            r#"{}"#,
            r#"{"messages":null}"#,
            r#"{"a":"\"}","b":[{}],"messages":[ ]}"#,
        ] {
            let out = splice(body.as_bytes(), &with(RENDERED, &[], 0)).unwrap();
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(json["messages"][0]["content"], "S", "{body}");
        }
    }
}
