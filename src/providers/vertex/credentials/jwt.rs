//! The RS256-signed JWT a service account presents to Google's token endpoint (the RFC 7523
//! JWT-bearer grant), and the form body that carries it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Serialize;

use super::error::CredentialsError;

/// The scope asked for: Vertex AI takes `cloud-platform`.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Life of an assertion: Google accepts at most an hour.
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// The form body's fixed start (`grant_type`, form-encoded); the assertion follows. A JWT is
/// three base64url parts joined by dots, none of which needs escaping in a form.
pub const GRANT_FORM_PREFIX: &str =
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'static str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs assertions for one service account. Holds the parsed private key, which nothing
/// here can print.
pub struct AssertionSigner {
    key: RsaKeyPair,
    rng: SystemRandom,
    /// The base64url header: the same for every assertion of this key.
    encoded_header: String,
}

impl AssertionSigner {
    /// A signer for `key` (parsed from the key file's PKCS#8 PEM), whose id is `key_id`.
    pub fn new(key: RsaKeyPair, key_id: &str) -> Result<AssertionSigner, String> {
        let header = Header {
            alg: "RS256",
            typ: "JWT",
            kid: key_id,
        };
        let header = serde_json::to_vec(&header)
            .map_err(|err| format!("cannot encode the header: {err}"))?;
        Ok(AssertionSigner {
            key,
            rng: SystemRandom::new(),
            encoded_header: URL_SAFE_NO_PAD.encode(header),
        })
    }

    /// The signed JWT asking for [`CLOUD_PLATFORM_SCOPE`] on behalf of `issuer` (the client
    /// email), addressed to `audience` (the token URI), issued at `issued_at` (Unix seconds)
    /// and valid for [`ASSERTION_LIFETIME_SECS`].
    pub fn assertion(
        &self,
        issuer: &str,
        audience: &str,
        issued_at: u64,
    ) -> Result<String, CredentialsError> {
        let claims = Claims {
            iss: issuer,
            scope: CLOUD_PLATFORM_SCOPE,
            aud: audience,
            iat: issued_at,
            exp: issued_at + ASSERTION_LIFETIME_SECS,
        };
        let claims = serde_json::to_vec(&claims).map_err(|err| {
            CredentialsError::unavailable(format!("cannot encode the JWT claims: {err}"))
        })?;
        let mut jwt = String::with_capacity(
            self.encoded_header.len()
                + claims.len() * 4 / 3
                + self.key.public().modulus_len() * 4 / 3
                + 8,
        );
        jwt.push_str(&self.encoded_header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, jwt.as_bytes(), &mut signature)
            .map_err(|_| CredentialsError::unavailable("cannot sign the JWT assertion"))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("modulus_bits", &(self.key.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` body of the JWT-bearer grant carrying `assertion`.
pub fn grant_form(assertion: &str) -> String {
    let mut form = String::with_capacity(GRANT_FORM_PREFIX.len() + assertion.len());
    form.push_str(GRANT_FORM_PREFIX);
    form.push_str(assertion);
    form
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

    /// The test-only key file shared with the mock upstream's tests (see its README).
    pub const TEST_KEY_FILE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/loadtest/mock/fixtures/service_account.json"
    ));
    /// The public half of [`TEST_KEY_FILE`]'s key (SubjectPublicKeyInfo PEM).
    pub const TEST_PUBLIC_KEY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/loadtest/mock/fixtures/public_key.pem"
    ));

    /// The PKCS#1 `RSAPublicKey` inside a SubjectPublicKeyInfo, which is what ring verifies
    /// with: SEQUENCE { SEQUENCE algorithm, BIT STRING (unused-bits byte, key) }.
    pub fn rsa_public_key(pem: &str) -> Vec<u8> {
        fn element(der: &[u8]) -> (u8, &[u8], &[u8]) {
            let (tag, first) = (der[0], der[1]);
            let (len, head) = if first < 0x80 {
                (first as usize, 2)
            } else {
                let count = (first & 0x7f) as usize;
                let len = der[2..2 + count]
                    .iter()
                    .fold(0usize, |len, b| (len << 8) | *b as usize);
                (len, 2 + count)
            };
            (tag, &der[head..head + len], &der[head + len..])
        }
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (tag, body, _) = element(spki.as_ref());
        assert_eq!(tag, 0x30);
        let (_, _, rest) = element(body);
        let (tag, bits, _) = element(rest);
        assert_eq!(tag, 0x03);
        bits[1..].to_vec()
    }

    /// Checks `jwt`'s RS256 signature with `public_key` and returns its header and claims.
    pub fn verify(jwt: &str, public_key: &[u8]) -> (serde_json::Value, serde_json::Value) {
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let (header, claims) = signed.split_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
            .verify(signed.as_bytes(), &signature)
            .expect("the JWT signature verifies with the public key");
        let decode = |part: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        (decode(header), decode(claims))
    }

    fn test_signer() -> AssertionSigner {
        let file: serde_json::Value = serde_json::from_str(TEST_KEY_FILE).unwrap();
        let pem = file["private_key"].as_str().unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        AssertionSigner::new(key, "key-1").unwrap()
    }

    #[test]
    fn assertion_is_signed_rs256_with_the_claims_google_wants() {
        let jwt = test_signer()
            .assertion(
                "sa@p.iam.gserviceaccount.com",
                "http://127.0.0.1:9/token",
                1_700_000_000,
            )
            .unwrap();
        let (header, claims) = verify(&jwt, &rsa_public_key(TEST_PUBLIC_KEY));
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"})
        );
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "sa@p.iam.gserviceaccount.com",
                "scope": CLOUD_PLATFORM_SCOPE,
                "aud": "http://127.0.0.1:9/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        assert!(!jwt.contains(['=', '+', '/']), "base64url without padding");
    }

    #[test]
    fn form_needs_no_further_escaping() {
        let form = grant_form("aa.bb.c-_");
        assert_eq!(
            form,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=aa.bb.c-_"
        );
    }

    #[test]
    fn signer_debug_shows_no_key() {
        let shown = format!("{:?}", test_signer());
        assert_eq!(shown, "AssertionSigner { modulus_bits: 2048, .. }");
    }
}
