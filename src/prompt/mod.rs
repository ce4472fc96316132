//! The prompt registry: templates as versioned code, compiled once per config snapshot,
//! resolved and rendered per request (`prompt id@version`, `id:label`, or a route's canary).

mod compile;
pub mod files;
pub mod fixtures;
pub mod reference;
mod render;
mod schema;
pub mod splice;
pub mod template;

pub use compile::{Library, compile};
pub use files::PromptFiles;
pub use reference::{Pick, Reference};
pub use render::Message;
pub use schema::VariableError;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderValue;
use serde_json::{Map, Value};

use crate::api::decode::ParamDefault;
use crate::error::{ErrorKind, GatewayError};
use crate::routing::Split;
use crate::telemetry::metrics::PromptMetrics;
use render::MessageTemplates;
use schema::Schema;
use template::CallerMessages;

/// The label a request gets when it names neither a version nor a label.
pub const PRODUCTION: &str = "production";

/// One prompt id: its versions and labels.
#[derive(Debug)]
pub struct Prompt {
    pub id: Box<str>,
    /// Dense index, for per-tenant permission tables.
    pub index: usize,
    /// By version name.
    pub versions: BTreeMap<Box<str>, Arc<PromptVersion>>,
    /// Label -> version.
    pub labels: BTreeMap<Box<str>, Arc<PromptVersion>>,
}

impl Prompt {
    pub fn version(&self, name: &str) -> Option<&Arc<PromptVersion>> {
        self.versions.get(name)
    }

    pub fn label(&self, name: &str) -> Option<&Arc<PromptVersion>> {
        self.labels.get(name)
    }

    /// The version `pick` names outright (by version or label); `Ok(None)` for
    /// [`Pick::Default`], which depends on the route. The error says what is missing.
    pub fn named(&self, pick: &Pick<'_>) -> Result<Option<&Arc<PromptVersion>>, String> {
        let (found, what, name) = match pick {
            Pick::Version(name) => (self.version(name), "version", name),
            Pick::Label(name) => (self.label(name), "label", name),
            Pick::Default => return Ok(None),
        };
        found.map(Some).ok_or_else(|| {
            format!(
                "the prompt `{}` has no {what} `{}`",
                self.id,
                clip(name, 100)
            )
        })
    }
}

/// One immutable version of a prompt, compiled.
#[derive(Debug)]
pub struct PromptVersion {
    pub id: Box<str>,
    pub version: Box<str>,
    /// Content hash (12 hex digits); see [`template::TemplateFile::content_hash`].
    pub hash: Box<str>,
    /// `id@version`: the response header `x-tollgate-prompt-version`, validated once.
    pub reference: HeaderValue,
    pub hash_header: HeaderValue,
    pub description: Option<Box<str>>,
    pub owner: Option<Box<str>>,
    /// Route alias for requests that name no model.
    pub model: Option<Box<str>>,
    /// Generation parameters the version sets when the caller did not.
    pub params: Box<[ParamDefault]>,
    pub caller_messages: CallerMessages,
    schema: Schema,
    messages: MessageTemplates,
    pub metrics: Arc<PromptMetrics>,
    /// `tollgate.prompt.{id,version,hash}`, encoded once for every span that repeats them.
    pub span_attributes: Box<[u8]>,
}

/// Why a prompt did not render for a request.
#[derive(Debug)]
pub enum RenderError {
    Variable(VariableError),
    Template(minijinja::Error),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Variable(v) => f.write_str(&v.message),
            RenderError::Template(t) => write!(f, "{t}"),
        }
    }
}

impl PromptVersion {
    /// `id@version`.
    pub fn reference_str(&self) -> &str {
        self.reference.to_str().unwrap_or_default()
    }

    /// Checks `variables` and renders the messages as JSON array members into `out`.
    pub fn render_json(
        &self,
        variables: Option<Map<String, Value>>,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        let values = self.schema.bind(variables).map_err(RenderError::Variable)?;
        self.messages
            .render_json(&values, out)
            .map_err(RenderError::Template)
    }

    /// The request `body` with this version's messages rendered from `variables` into it,
    /// `prompt` taken out, `model` where the body names none, and the version's parameters
    /// where the body sets none (`params_present`: the generation parameters it sets, as
    /// bits).
    pub fn render_body(
        &self,
        variables: Option<Map<String, Value>>,
        body: &[u8],
        params_present: u16,
        model: Option<&str>,
    ) -> Result<Vec<u8>, GatewayError> {
        let mut rendered = Vec::with_capacity(512);
        self.render_json(variables, &mut rendered)
            .map_err(|err| match err {
                RenderError::Variable(v) => {
                    GatewayError::new(ErrorKind::InvalidPromptVariable, v.message)
                        .with_param(format!("prompt.variables.{}", v.name))
                }
                RenderError::Template(t) => GatewayError::new(
                    ErrorKind::PromptRenderFailed,
                    format!("prompt {} did not render: {t}", self.reference_str()),
                ),
            })?;
        splice::splice(
            body,
            &splice::Splice {
                rendered: &rendered,
                model,
                params: &self.params,
                params_present,
                caller_messages: self.caller_messages,
                reference: self.reference_str(),
            },
        )
    }

    /// Checks `variables` and renders the messages (offline tools and fixtures).
    pub fn render(
        &self,
        variables: Option<Map<String, Value>>,
    ) -> Result<Vec<Message>, RenderError> {
        let values = self.schema.bind(variables).map_err(RenderError::Variable)?;
        self.messages.render(&values).map_err(RenderError::Template)
    }

    /// The variables, as `GET /v1/prompts` lists them.
    pub fn variables_json(&self) -> Value {
        let mut out = Map::new();
        for v in self.schema.variables() {
            let mut spec = Map::new();
            spec.insert("type".into(), v.kind.as_str().into());
            spec.insert("required".into(), v.required.into());
            if let Some(default) = &v.default {
                spec.insert("default".into(), default.clone());
            }
            if let Some(max) = v.max_length {
                spec.insert("max_length".into(), max.into());
            }
            if let Some(text) = &v.description {
                spec.insert("description".into(), Value::String(text.to_string()));
            }
            out.insert(v.name.to_string(), Value::Object(spec));
        }
        Value::Object(out)
    }
}

/// A prompt as `GET /v1/prompts` lists it: labels, and each version with its hash, model
/// and variables.
pub fn listing(prompt: &Prompt) -> Value {
    let labels: Map<String, Value> = prompt
        .labels
        .iter()
        .map(|(label, v)| (label.to_string(), Value::String(v.version.to_string())))
        .collect();
    let versions: Vec<Value> = prompt
        .versions
        .values()
        .map(|v| {
            serde_json::json!({
                "version": &*v.version,
                "hash": &*v.hash,
                "description": v.description.as_deref(),
                "owner": v.owner.as_deref(),
                "model": v.model.as_deref(),
                "variables": v.variables_json(),
            })
        })
        .collect();
    serde_json::json!({
        "id": &*prompt.id,
        "object": "prompt",
        "labels": labels,
        "versions": versions,
    })
}

/// A route's traffic split between versions of one prompt: the routing code's [`Split`],
/// with the versions it picks from.
#[derive(Debug)]
pub struct PromptCanary {
    pub split: Split,
    pub versions: Box<[Arc<PromptVersion>]>,
}

impl PromptCanary {
    /// The version for a sticky key, or by a random draw without one.
    pub fn pick(&self, sticky_key: Option<u64>) -> Option<&Arc<PromptVersion>> {
        self.versions.get(self.split.pick(sticky_key)?)
    }
}

/// At most `max` characters of `text`, for echoing client input in messages.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    crate::api::choose::truncate(text, max)
}
