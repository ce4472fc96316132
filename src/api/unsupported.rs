//! Refusing the request fields a translation to another API cannot carry, by name, for
//! routes whose `unsupported_params` is `reject`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::error::{ErrorKind, GatewayError};

/// Fails with 400 `unsupported_parameter` naming every top-level field of the JSON object
/// `body` for which `carried(name, raw_value)` is false; `target` names the API (e.g.
/// "Gemini") in the message.
pub fn refuse_uncarried(
    body: &[u8],
    carried: impl Fn(&str, &str) -> bool,
    target: &str,
) -> Result<(), GatewayError> {
    // A second pass over the keys only: cheap, and only for routes that refuse.
    let fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(body).map_err(|err| {
            GatewayError::new(
                ErrorKind::InvalidField,
                format!("the body is not a JSON object: {err}"),
            )
        })?;
    let names: Vec<&str> = (fields.iter())
        .filter(|(name, value)| !carried(name, value.get()))
        .map(|(name, _)| &**name)
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(GatewayError::new(
        ErrorKind::UnsupportedParameter,
        format!(
            "{target} has no equivalent for {}; this route refuses such parameters rather than ignore them",
            names.join(", ")
        ),
    ))
}
