//! The committed TEST-ONLY service-account key (`fixtures/`), and helpers that sign JWT
//! assertions with it, so tests can drive the mock's token endpoint.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

/// A Google service-account key file; its `token_uri` is a placeholder
/// (see [`service_account_json`]).
pub const SERVICE_ACCOUNT_JSON: &str = include_str!("../fixtures/service_account.json");

/// The public half of the key in [`SERVICE_ACCOUNT_JSON`] (SubjectPublicKeyInfo PEM).
pub const PUBLIC_KEY_PEM: &str = include_str!("../fixtures/public_key.pem");

/// `client_email` of the fixture key: the `iss` the token endpoint expects by default.
pub const CLIENT_EMAIL: &str = "tollgate-test@tollgate-mock-project.iam.gserviceaccount.com";

/// `private_key_id` of the fixture key: the `kid` the token endpoint expects by default.
pub const PRIVATE_KEY_ID: &str = "dd3e510c97a152b9d832d826ebfedaccb852fdc5";

/// `project_id` of the fixture key.
pub const PROJECT_ID: &str = "tollgate-mock-project";

/// The OAuth scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn key_file() -> io::Result<serde_json::Value> {
    serde_json::from_str(SERVICE_ACCOUNT_JSON).map_err(|e| invalid(e.to_string()))
}

/// The fixture key file with `token_uri` replaced, e.g. by `MockServer::token_url()`.
pub fn service_account_json(token_uri: &str) -> io::Result<String> {
    let mut key = key_file()?;
    key["token_uri"] = token_uri.into();
    serde_json::to_string_pretty(&key).map_err(|e| invalid(e.to_string()))
}

/// The fixture's PKCS#8 PEM private key.
pub fn private_key_pem() -> io::Result<String> {
    key_file()?["private_key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid("fixture key file has no private_key"))
}

/// Signs `claims` as an RS256 JWT whose header carries `kid`, with a PKCS#8 PEM RSA key.
pub fn sign_jwt_with(
    private_key_pem: &str,
    kid: &str,
    claims: &serde_json::Value,
) -> io::Result<String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(private_key_pem.as_bytes())
        .map_err(|e| invalid(format!("private key PEM: {e}")))?;
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| invalid(format!("private key: {e}")))?;
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        jwt.as_bytes(),
        &mut signature,
    )
    .map_err(|_| invalid("RSA signing failed"))?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}

/// Signs `claims` with the fixture key and its key id.
pub fn sign_jwt(claims: &serde_json::Value) -> io::Result<String> {
    sign_jwt_with(&private_key_pem()?, PRIVATE_KEY_ID, claims)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claims a Google client sends for the fixture account: `iss`, `scope` (cloud-platform),
/// `aud`, and a one-hour `iat`..`exp` starting now.
pub fn assertion_claims(audience: &str) -> serde_json::Value {
    let now = unix_now();
    serde_json::json!({
        "iss": CLIENT_EMAIL,
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": audience,
        "iat": now,
        "exp": now + 3600,
    })
}

/// A valid assertion for the fixture account, for the token endpoint at `audience`.
pub fn assertion(audience: &str) -> io::Result<String> {
    sign_jwt(&assertion_claims(audience))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_key_file() {
        let key = key_file().unwrap();
        assert_eq!(key["type"], "service_account");
        assert_eq!(key["client_email"], CLIENT_EMAIL);
        assert_eq!(key["private_key_id"], PRIVATE_KEY_ID);
        assert_eq!(key["project_id"], PROJECT_ID);
        assert!(key["client_id"].is_string());
        assert!(
            private_key_pem()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(PUBLIC_KEY_PEM.starts_with("-----BEGIN PUBLIC KEY-----"));
        let rewritten: serde_json::Value =
            serde_json::from_str(&service_account_json("http://127.0.0.1:9/token").unwrap())
                .unwrap();
        assert_eq!(rewritten["token_uri"], "http://127.0.0.1:9/token");
        assert_eq!(rewritten["private_key"], key["private_key"]);
    }

    #[test]
    fn signs_three_segment_jwts() {
        let jwt = assertion("http://127.0.0.1:9/token").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], PRIVATE_KEY_ID);
        // RSA 2048: a 256-byte signature.
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 256);
        assert!(sign_jwt_with("not a key", "k", &serde_json::json!({})).is_err());
    }
}
