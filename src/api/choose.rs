//! The route and version a request goes to: alias lookup, permission, pinning, stickiness.

use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;

use crate::auth::Tenant;
use crate::config::StickyKey;
use crate::error::{ErrorKind, GatewayError};
use crate::routing::key_hash;
use crate::snapshot::{Route, Snapshot};

/// Request header that pins a route version (when the tenant may pin).
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-tollgate-version");

/// What the request says about where it wants to go.
pub struct Wanted<'a> {
    /// The body's `model`: an alias, or `alias@version`.
    pub model: &'a str,
    /// The OpenAI `user` field.
    pub user: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Where a request goes: the route, the index of its version, and whether the caller pinned
/// that version (then only that version may answer).
pub struct Choice {
    pub route: Arc<Route>,
    pub version: usize,
    pub pinned: bool,
}

/// Resolves `wanted` to a route and one of its versions.
pub fn route_and_version(
    snapshot: &Snapshot,
    tenant: &Tenant,
    wanted: &Wanted<'_>,
) -> Result<Choice, GatewayError> {
    let (alias, pinned_in_model) = match wanted.model.split_once('@') {
        Some((alias, version)) => (alias, Some(version)),
        None => (wanted.model, None),
    };
    let route = snapshot.routes.get(alias).ok_or_else(|| {
        GatewayError::new(
            ErrorKind::ModelNotFound,
            format!("the model `{}` does not exist", truncate(alias, 200)),
        )
        .with_param("model")
    })?;
    if !tenant.may_use(route.index) {
        return Err(GatewayError::new(
            ErrorKind::ModelNotAllowed,
            format!("this key may not use the model `{}`", route.alias),
        )
        .with_param("model"));
    }
    let pinned_in_header = wanted.headers.get(VERSION_HEADER).map(|v| {
        std::str::from_utf8(v.as_bytes())
            .unwrap_or("\u{fffd}")
            .trim()
    });
    let pinned = match (pinned_in_model, pinned_in_header) {
        (Some(a), Some(b)) if a != b => {
            return Err(GatewayError::new(
                ErrorKind::InvalidField,
                format!(
                    "`model` pins version `{}` but x-tollgate-version pins `{}`",
                    truncate(a, 100),
                    truncate(b, 100)
                ),
            )
            .with_param("model"));
        }
        (Some(name), _) | (None, Some(name)) => Some(name),
        (None, None) => None,
    };
    let index = match pinned {
        Some(name) => {
            if !tenant.may_pin {
                return Err(GatewayError::new(
                    ErrorKind::VersionPinNotAllowed,
                    "this key may not pin a model version",
                ));
            }
            // A shadow version's answers are never served, pinned or not.
            route
                .version(name)
                .filter(|i| route.versions[*i].shadow.is_none())
                .ok_or_else(|| {
                    GatewayError::new(
                        ErrorKind::VersionNotFound,
                        format!(
                            "the model `{}` has no version `{}` that serves answers",
                            route.alias,
                            truncate(name, 100)
                        ),
                    )
                    .with_param("model")
                })?
        }
        None => {
            let key = sticky_key(route, tenant, wanted);
            route.choose(key).ok_or_else(|| {
                GatewayError::new(ErrorKind::Internal, "route has no version with traffic")
            })?
        }
    };
    Ok(Choice {
        route: route.clone(),
        version: index,
        pinned: pinned.is_some(),
    })
}

/// The hash of the route's stickiness key for this request: what keeps a caller on one
/// version of the model, and on one version of a prompt the route canaries. `None` when the
/// route is not sticky or the request lacks the key.
pub fn sticky_key(route: &Route, tenant: &Tenant, wanted: &Wanted<'_>) -> Option<u64> {
    route.sticky.as_ref().and_then(|sticky| match sticky {
        StickyKey::Tenant => Some(key_hash(tenant.name.as_bytes())),
        StickyKey::User => wanted.user.map(|u| key_hash(u.as_bytes())),
        StickyKey::Header(name) => wanted.headers.get(name).map(|v| key_hash(v.as_bytes())),
    })
}

/// At most `max` characters of `text`, for echoing client input in messages.
pub fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
