//! Verification of the RS256 JWT assertions of the JWT bearer grant (RFC 7523), with the checks
//! and the refusals Google's token endpoint makes.

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::fixtures::CLOUD_PLATFORM_SCOPE;
use crate::vertex_config::TokenEndpoint;

/// Clock difference tolerated between the assertion's signer and the mock, in seconds.
const CLOCK_SKEW: u64 = 60;

/// One DER element: (tag, contents, rest). Only the length forms a 2048..8192-bit key needs.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => (usize::from(*rest.first()?), &rest[1..]),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `RSAPublicKey` inside a SubjectPublicKeyInfo PEM, checked to be an rsaEncryption key.
fn rsa_public_key(pem: &str) -> io::Result<Vec<u8>> {
    const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("token key: {why}"));
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(&format!("not a BEGIN PUBLIC KEY PEM ({e})")))?;
    let (_, spki, _) = der_element(&spki).ok_or_else(|| bad("bad DER"))?;
    let (_, algorithm, rest) = der_element(spki).ok_or_else(|| bad("bad DER"))?;
    let (_, oid, _) = der_element(algorithm).ok_or_else(|| bad("bad DER"))?;
    if oid != RSA_ENCRYPTION_OID {
        return Err(bad("not an RSA key"));
    }
    match der_element(rest) {
        // BIT STRING whose first byte counts unused bits: always 0 for a key.
        Some((0x03, [0, key @ ..], _)) => Ok(key.to_vec()),
        _ => Err(bad("bad DER")),
    }
}

/// A refused grant: `{"error": code, "error_description": description}` with 400.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) description: String,
}

fn grant_refused(description: impl Into<String>) -> Refusal {
    Refusal {
        code: "invalid_grant",
        description: description.into(),
    }
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct JwtClaims {
    iss: Option<String>,
    aud: Option<String>,
    scope: Option<String>,
    iat: Option<f64>,
    exp: Option<f64>,
}

fn segment<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| grant_refused(format!("Invalid JWT: {what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| grant_refused(format!("Invalid JWT: {what} is not a JSON object")))
}

/// What a valid assertion must satisfy.
#[derive(Debug)]
pub(crate) struct AssertionVerifier {
    /// DER `RSAPublicKey` the signature must verify against.
    rsa_public_key: Vec<u8>,
    client_email: String,
    key_id: Option<String>,
    audience: String,
}

impl AssertionVerifier {
    /// Parses the key of `settings`; `audience` is the `aud` to require.
    pub(crate) fn new(settings: &TokenEndpoint, audience: String) -> io::Result<Self> {
        Ok(Self {
            rsa_public_key: rsa_public_key(&settings.public_key_pem)?,
            client_email: settings.client_email.clone(),
            key_id: settings.key_id.clone(),
            audience,
        })
    }

    pub(crate) fn audience(&self) -> &str {
        &self.audience
    }

    /// Checks `assertion` at Unix time `now`.
    pub(crate) fn verify(&self, assertion: &str, now: u64) -> Result<(), Refusal> {
        let mut parts = assertion.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(grant_refused(
                "Invalid JWT: not three dot-separated segments",
            ));
        };
        let head: JwtHeader = segment(header, "header")?;
        if head.alg.as_deref() != Some("RS256") {
            return Err(grant_refused("Invalid JWT: alg must be RS256"));
        }
        let Some(kid) = head.kid else {
            return Err(grant_refused("Invalid JWT: the header has no kid"));
        };
        let bad_signature = || grant_refused("Invalid JWT Signature.");
        if self.key_id.as_ref().is_some_and(|k| *k != kid) {
            return Err(bad_signature());
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| bad_signature())?;
        let signed = &assertion[..header.len() + 1 + claims.len()];
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.rsa_public_key)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| bad_signature())?;
        let claims: JwtClaims = segment(claims, "claim set")?;
        if claims.iss.as_deref() != Some(self.client_email.as_str()) {
            return Err(grant_refused("Invalid grant: account not found"));
        }
        if claims.aud.as_deref() != Some(self.audience.as_str()) {
            return Err(grant_refused(format!(
                "Invalid JWT: Failed audience check. The right audience is {}",
                self.audience
            )));
        }
        if !claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|s| s == CLOUD_PLATFORM_SCOPE))
        {
            return Err(Refusal {
                code: "invalid_scope",
                description: "Invalid OAuth scope or ID token audience provided.".to_owned(),
            });
        }
        let short_lived = match (claims.iat, claims.exp) {
            (Some(iat), Some(exp)) => {
                let now = now as f64;
                let skew = CLOCK_SKEW as f64;
                exp > iat && exp <= iat + 3600.0 && iat <= now + skew && exp >= now - skew
            }
            _ => false,
        };
        if !short_lived {
            return Err(grant_refused(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
                 timeframe. Check your iat and exp values in the JWT claim.",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, unix_now};

    fn verifier() -> AssertionVerifier {
        AssertionVerifier::new(&TokenEndpoint::default(), "http://127.0.0.1:9/token".into())
            .unwrap()
    }

    #[test]
    fn verifies_fixture_assertions() {
        let state = verifier();
        let now = unix_now();
        let good = fixtures::assertion_claims(state.audience());
        assert!(
            state
                .verify(&fixtures::sign_jwt(&good).unwrap(), now)
                .is_ok()
        );

        let refused = |claims: serde_json::Value| {
            let jwt = fixtures::sign_jwt(&claims).unwrap();
            state.verify(&jwt, now).err().unwrap()
        };
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = "http://127.0.0.1:1/token".into();
        assert!(refused(wrong_aud).description.contains("audience"));
        let mut wrong_scope = good.clone();
        wrong_scope["scope"] = "https://www.googleapis.com/auth/devstorage.read_only".into();
        assert_eq!(refused(wrong_scope).code, "invalid_scope");
        let mut too_long = good.clone();
        too_long["exp"] = (now + 3601).into();
        assert!(refused(too_long).description.contains("short-lived"));
        let mut expired = good.clone();
        expired["iat"] = (now - 7200).into();
        expired["exp"] = (now - 3600).into();
        assert_eq!(refused(expired).code, "invalid_grant");
        let mut stranger = good.clone();
        stranger["iss"] = "someone@example.com".into();
        assert!(refused(stranger).description.contains("account not found"));

        // A valid signature over other claims does not transfer.
        let jwt = fixtures::sign_jwt(&good).unwrap();
        let (head, rest) = jwt.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut forged = good.clone();
        forged["iss"] = "x".into();
        let forged = format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(forged.to_string())
        );
        assert_eq!(
            state.verify(&forged, now).err().unwrap().description,
            "Invalid JWT Signature."
        );
        let other_kid =
            fixtures::sign_jwt_with(&fixtures::private_key_pem().unwrap(), "other", &good).unwrap();
        assert!(state.verify(&other_kid, now).is_err());
        assert!(state.verify("a.b", now).is_err());
    }

    #[test]
    fn parses_rsa_public_keys() {
        assert_eq!(rsa_public_key(fixtures::PUBLIC_KEY_PEM).unwrap()[0], 0x30);
        assert!(
            rsa_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err()
        );
        assert!(rsa_public_key("garbage").is_err());
    }
}
