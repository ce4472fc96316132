//! The admin listener's control endpoints: `GET /admin/config` (what is serving, and how the
//! last reload went) and `POST /admin/reload` (token-protected).

use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminConfig;
use crate::reload::Outcome;
use crate::server::Shared;

/// Reads the admin token named by `admin.token_env` or `admin.token_file`, as its SHA-256
/// (compared in constant time, and never kept in the clear). `Ok(None)`: none configured.
pub fn read_token(admin: &AdminConfig) -> Result<Option<[u8; 32]>, String> {
    let token = match (&admin.token_env, &admin.token_file) {
        (Some(_), Some(_)) => {
            return Err("set admin.token_env or admin.token_file, not both".into());
        }
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("admin.token_env: environment variable `{var}` is not set"))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|err| format!("admin.token_file: cannot read {}: {err}", path.display()))?,
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.len() < 16 {
        return Err("the admin token must be at least 16 characters".into());
    }
    Ok(Some(Sha256::digest(token.as_bytes()).into()))
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` for the configured token.
pub fn authorized(expected: &[u8; 32], headers: &HeaderMap) -> bool {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    presented.is_some_and(|token| {
        let digest: [u8; 32] = Sha256::digest(token).into();
        bool::from(digest.ct_eq(expected))
    })
}

/// `GET /admin/config`.
pub fn config_status(shared: &Shared) -> Bytes {
    let last = shared
        .reloads
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let last = last.map(|(at, error)| {
        serde_json::json!({
            "at_unix_seconds": at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "ok": error.is_none(),
            "error": error,
        })
    });
    let body = serde_json::json!({
        "version": &*shared.live.load().version,
        "config_file": shared.config_path.as_ref().map(|p| p.display().to_string()),
        "last_reload": last,
    });
    Bytes::from(serde_json::to_vec_pretty(&body).unwrap_or_default())
}

/// `POST /admin/reload`: the status and JSON body to answer.
pub async fn reload(shared: &Shared, headers: &HeaderMap) -> (StatusCode, Bytes) {
    let answer = |status, body: serde_json::Value| {
        (
            status,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        )
    };
    let Some(expected) = &shared.admin_token else {
        return answer(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "reload over HTTP is off: set admin.token_env or admin.token_file"}),
        );
    };
    if !authorized(expected, headers) {
        return answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "missing or wrong admin token (Authorization: Bearer TOKEN)"}),
        );
    }
    if shared.config_path.is_none() {
        return answer(
            StatusCode::CONFLICT,
            serde_json::json!({"error": "the gateway was not started from a config file; there is nothing to reload"}),
        );
    }
    match shared.reloader.reload_now().await {
        Outcome::Swapped { version } => answer(
            StatusCode::OK,
            serde_json::json!({"result": "swapped", "version": version}),
        ),
        Outcome::Unchanged { version } => answer(
            StatusCode::OK,
            serde_json::json!({"result": "unchanged", "version": version}),
        ),
        Outcome::Failed { error } => answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"result": "failed", "error": error, "version": &*shared.live.load().version}),
        ),
    }
}
