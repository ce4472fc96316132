//! What a request asks of the prompt registry: the body's `prompt` object, or the same
//! through headers for clients that cannot change the body.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::HeaderName;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::VersionName;
use crate::error::{ErrorKind, GatewayError};

/// `x-tollgate-prompt: id`, `id@version` or `id:label`.
pub const PROMPT_HEADER: HeaderName = HeaderName::from_static("x-tollgate-prompt");
/// `x-tollgate-prompt-variables: {"name": "value", ...}` (JSON; `\u` escapes for non-ASCII).
pub const VARIABLES_HEADER: HeaderName = HeaderName::from_static("x-tollgate-prompt-variables");

/// Which version a request wants.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    Version(Cow<'a, str>),
    Label(Cow<'a, str>),
    /// Neither: the route's canary for the prompt, else the `production` label.
    Default,
}

/// A request's prompt: id, version choice, variables.
#[derive(Debug)]
pub struct Reference<'a> {
    pub id: Cow<'a, str>,
    pub pick: Pick<'a>,
    pub variables: Option<Map<String, Value>>,
}

fn invalid(param: &'static str, message: impl Into<Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidField, message).with_param(param)
}

/// The body form, as OpenAI's Responses API writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyForm {
    id: String,
    #[serde(default)]
    version: Option<VersionName>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
}

impl<'a> Reference<'a> {
    /// The request's prompt, from the body's `prompt` object or the headers; `None` when it
    /// names none. Both at once is refused: they could disagree.
    pub fn find(
        body_prompt: Option<&RawValue>,
        headers: &'a HeaderMap,
    ) -> Result<Option<Reference<'a>>, GatewayError> {
        let header = headers.get(PROMPT_HEADER);
        match (body_prompt, header) {
            (Some(_), Some(_)) => Err(invalid(
                "prompt",
                "name the prompt in the body or in x-tollgate-prompt, not both",
            )),
            (Some(raw), None) => {
                if headers.contains_key(VARIABLES_HEADER) {
                    return Err(invalid(
                        "prompt",
                        "x-tollgate-prompt-variables goes with x-tollgate-prompt; with a body `prompt`, put them in prompt.variables",
                    ));
                }
                Self::from_body(raw).map(Some)
            }
            (None, Some(value)) => Self::from_headers(value.as_bytes(), headers).map(Some),
            (None, None) => {
                if headers.contains_key(VARIABLES_HEADER) {
                    return Err(invalid(
                        "prompt",
                        "x-tollgate-prompt-variables needs x-tollgate-prompt",
                    ));
                }
                Ok(None)
            }
        }
    }

    fn from_body(raw: &RawValue) -> Result<Reference<'static>, GatewayError> {
        let form: BodyForm = serde_json::from_str(raw.get()).map_err(|e| {
            invalid(
                "prompt",
                format!("`prompt` must be an object {{id, version | label, variables}}: {e}"),
            )
        })?;
        let pick = match (form.version, form.label) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "prompt",
                    "`prompt` takes a version or a label, not both",
                ));
            }
            (Some(version), None) => Pick::Version(Cow::Owned(version.0)),
            (None, Some(label)) => Pick::Label(Cow::Owned(label)),
            (None, None) => Pick::Default,
        };
        Ok(Reference {
            id: Cow::Owned(form.id),
            pick,
            variables: form.variables,
        })
    }

    fn from_headers(value: &'a [u8], headers: &HeaderMap) -> Result<Reference<'a>, GatewayError> {
        let text = std::str::from_utf8(value)
            .map_err(|_| invalid("prompt", "x-tollgate-prompt must be UTF-8 text"))?
            .trim();
        let (id, pick) = if let Some((id, version)) = text.split_once('@') {
            (id, Pick::Version(Cow::Borrowed(version)))
        } else if let Some((id, label)) = text.split_once(':') {
            (id, Pick::Label(Cow::Borrowed(label)))
        } else {
            (text, Pick::Default)
        };
        let variables = match headers.get(VARIABLES_HEADER) {
            None => None,
            Some(value) => Some(serde_json::from_slice(value.as_bytes()).map_err(|e| {
                invalid(
                    "prompt",
                    format!("x-tollgate-prompt-variables must be a JSON object: {e}"),
                )
            })?),
        };
        Ok(Reference {
            id: Cow::Borrowed(id),
            pick,
            variables,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn the_body_form_reads_version_label_and_variables() {
        let headers = HeaderMap::new();
        let body = raw(r#"{"id":"a","version":2,"variables":{"x":"1"}}"#);
        let r = Reference::find(Some(&body), &headers).unwrap().unwrap();
        assert_eq!((r.id.as_ref(), &r.pick), ("a", &Pick::Version("2".into())));
        assert_eq!(r.variables.unwrap()["x"], "1");
        let body = raw(r#"{"id":"a","label":"canary"}"#);
        let r = Reference::find(Some(&body), &headers).unwrap().unwrap();
        assert_eq!(r.pick, Pick::Label("canary".into()));
        let body = raw(r#"{"id":"a"}"#);
        assert_eq!(
            Reference::find(Some(&body), &headers)
                .unwrap()
                .unwrap()
                .pick,
            Pick::Default
        );
        for bad in [
            r#"{"id":"a","version":"1","label":"b"}"#,
            r#"{"id":"a","versoin":"1"}"#,
            r#"{"version":"1"}"#,
            r#"{"id":"a","variables":[1]}"#,
            r#""a@1""#,
        ] {
            let err = Reference::find(Some(&raw(bad)), &headers).unwrap_err();
            assert_eq!(
                (err.kind, err.param.as_deref()),
                (ErrorKind::InvalidField, Some("prompt")),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_header_form_reads_the_same() {
        let mut headers = HeaderMap::new();
        headers.insert(PROMPT_HEADER, "a@3".parse().unwrap());
        headers.insert(VARIABLES_HEADER, r#"{"x":"\u00e9"}"#.parse().unwrap());
        let r = Reference::find(None, &headers).unwrap().unwrap();
        assert_eq!((r.id.as_ref(), &r.pick), ("a", &Pick::Version("3".into())));
        assert_eq!(r.variables.unwrap()["x"], "é");
        headers.insert(PROMPT_HEADER, "a:canary".parse().unwrap());
        assert_eq!(
            Reference::find(None, &headers).unwrap().unwrap().pick,
            Pick::Label("canary".into())
        );
        headers.insert(VARIABLES_HEADER, "not json".parse().unwrap());
        assert!(Reference::find(None, &headers).is_err());
        // Both forms at once could disagree.
        headers.remove(VARIABLES_HEADER);
        assert!(Reference::find(Some(&raw(r#"{"id":"a"}"#)), &headers).is_err());
        // Variables without a prompt are a mistake, not ignored.
        let mut only_vars = HeaderMap::new();
        only_vars.insert(VARIABLES_HEADER, "{}".parse().unwrap());
        assert!(Reference::find(None, &only_vars).is_err());
        assert!(Reference::find(None, &HeaderMap::new()).unwrap().is_none());
    }
}
