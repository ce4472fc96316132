//! Requests that name a prompt template: resolve the version (explicit, by label, or by the
//! route's canary), check the variables, render, and write the body the rest of the path
//! serves as if the caller had sent it.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::choose::{Wanted, sticky_key};
use super::decode::RequestFields;
use crate::auth::Tenant;
use crate::error::{ErrorKind, GatewayError};
use crate::exchange::Exchange;
use crate::prompt::{PRODUCTION, PromptVersion, Reference};
use crate::snapshot::Snapshot;
use crate::telemetry::trace::StepKind;
use crate::upstream::Surface;

/// The body to serve instead of `body`, or `None` when the request names no prompt.
pub fn render_request(
    exchange: &Exchange,
    snapshot: &Snapshot,
    tenant: &Tenant,
    fields: &RequestFields<'_>,
    body: &[u8],
    headers: &HeaderMap,
    surface: Surface,
) -> Result<Option<Bytes>, GatewayError> {
    if surface == Surface::Chat
        && let Some(raw) = fields.prompt_field()
        && !raw.get().starts_with('{')
        && raw.get() != "null"
    {
        // On chat, `prompt` only ever names a template: anything but an object is a mistake
        // to refuse, not a field to pass upstream.
        return Err(GatewayError::new(
            ErrorKind::InvalidField,
            "`prompt` names a prompt template: an object {id, version | label, variables}",
        )
        .with_param("prompt"));
    }
    let Some(reference) = Reference::find(fields.prompt_reference(), headers)? else {
        return Ok(None);
    };
    let started = exchange.since_arrival();
    let chosen = choose_version(snapshot, tenant, fields, headers, surface, &reference);
    let (version, canary_route) = match chosen {
        Ok(chosen) => chosen,
        Err(err) => {
            exchange.step(StepKind::Prompt, started, false);
            return Err(err);
        }
    };
    let _ = exchange.prompt.set(version.clone());
    // A version a route's canary picked serves on that route, whatever model it names.
    let model = canary_route.or(version.model.as_deref());
    let rendered = version.render_body(reference.variables, body, fields.params_present, model);
    exchange.step(StepKind::Prompt, started, canary_route.is_some());
    rendered.map(|b| Some(Bytes::from(b)))
}

/// The prompt version for `reference`, and the route whose canary picked it (if one did).
fn choose_version<'s>(
    snapshot: &'s Snapshot,
    tenant: &Tenant,
    fields: &RequestFields<'_>,
    headers: &HeaderMap,
    surface: Surface,
    reference: &Reference<'_>,
) -> Result<(Arc<PromptVersion>, Option<&'s str>), GatewayError> {
    if surface != Surface::Chat {
        return Err(GatewayError::new(
            ErrorKind::InvalidField,
            "prompt templates render chat messages: send them to /v1/chat/completions",
        )
        .with_param("prompt"));
    }
    let id = crate::prompt::clip(&reference.id, 100);
    let prompt = snapshot.prompts.get(&reference.id).ok_or_else(|| {
        GatewayError::new(
            ErrorKind::PromptNotFound,
            format!("the prompt `{id}` does not exist"),
        )
        .with_param("prompt")
    })?;
    if !tenant.may_use_prompt(prompt.index) {
        return Err(GatewayError::new(
            ErrorKind::PromptNotAllowed,
            format!("this key may not use the prompt `{}`", prompt.id),
        )
        .with_param("prompt"));
    }
    let not_found = |what: String| {
        GatewayError::new(ErrorKind::PromptVersionNotFound, what).with_param("prompt")
    };
    if let Some(version) = prompt.named(&reference.pick).map_err(not_found)? {
        return Ok((version.clone(), None));
    }
    // Neither a version nor a label: the canary of the route the request goes to (its
    // model, else the production version's), else the production label.
    let production = prompt.label(PRODUCTION);
    let alias = match (&*fields.model, production) {
        ("", Some(v)) => v.model.as_deref().unwrap_or_default(),
        (model, _) => model.split_once('@').map_or(model, |(alias, _)| alias),
    };
    if let Some(route) = snapshot.routes.get(alias)
        && let Some(canary) = route.prompt_canaries.get(&*prompt.id)
    {
        let wanted = Wanted {
            model: &fields.model,
            user: fields.user.as_deref(),
            headers,
        };
        if let Some(version) = canary.pick(sticky_key(route, tenant, &wanted)) {
            return Ok((version.clone(), Some(&route.alias)));
        }
    }
    production.cloned().map(|v| (v, None)).ok_or_else(|| {
        not_found(format!(
            "the prompt `{}` has no `{PRODUCTION}` label: name a version or a label",
            prompt.id
        ))
    })
}
