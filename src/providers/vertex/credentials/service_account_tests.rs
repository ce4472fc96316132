//! Key-file parsing, and the real HTTP path end to end: service-account and metadata-server
//! tokens from small servers on 127.0.0.1 that check what they are sent (the JWT's
//! signature against the test public key included).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;
use crate::config::VertexCredentials;
use crate::providers::vertex::credentials::jwt::tests::{
    TEST_KEY_FILE, TEST_PUBLIC_KEY, rsa_public_key, verify,
};
use crate::providers::vertex::credentials::tests::{TempFile, key_file_json, private_key_piece};
use crate::providers::vertex::credentials::{
    CLOUD_PLATFORM_SCOPE, Credentials, CredentialsErrorKind, METADATA_TOKEN_PATH,
};

const TOKEN_ANSWER: &str =
    r#"{"access_token":"ya29.test-only-token","expires_in":3599,"token_type":"Bearer"}"#;

fn test_key_field(name: &str) -> String {
    let file: serde_json::Value = serde_json::from_str(TEST_KEY_FILE).unwrap();
    file[name].as_str().unwrap().to_owned()
}

// --- key file parsing ---

fn parse_with(
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<ServiceAccountKey, String> {
    let mut file: serde_json::Value = serde_json::from_str(TEST_KEY_FILE).unwrap();
    edit(file.as_object_mut().unwrap());
    ServiceAccountKey::from_json(file.to_string().as_bytes())
}

#[test]
fn parses_google_key_files() {
    let key = parse_with(|_| {}).unwrap();
    assert_eq!(key.client_email(), test_key_field("client_email"));
    assert_eq!(key.private_key_id(), test_key_field("private_key_id"));
    assert_eq!(key.project_id(), Some("tollgate-mock-project"));
    let shown = format!("{key:?}");
    assert!(
        shown.starts_with("ServiceAccountKey { client_email: \"tollgate-test@"),
        "{shown}"
    );
    assert!(!shown.contains(&private_key_piece()), "{shown}");

    let key = parse_with(|file| {
        file.remove("token_uri");
    })
    .unwrap();
    assert_eq!(key.token_uri(), DEFAULT_TOKEN_URI);
}

#[test]
fn key_file_problems_name_the_field_and_never_show_the_key() {
    let piece = private_key_piece();
    let pem = test_key_field("private_key");
    type Edit = Box<dyn FnOnce(&mut serde_json::Map<String, serde_json::Value>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|f| {
                f.remove("private_key");
            }),
            "`private_key` is missing",
        ),
        (
            Box::new(|f| {
                f.remove("client_email");
            }),
            "`client_email` is missing",
        ),
        (
            Box::new(|f| {
                f.remove("private_key_id");
            }),
            "`private_key_id` is missing",
        ),
        (
            Box::new(|f| {
                f.remove("type");
            }),
            "`type` is missing",
        ),
        (
            Box::new(|f| {
                f.insert("type".into(), "authorized_user".into());
            }),
            "`type` is `authorized_user`; only `service_account` key files are supported",
        ),
        (
            Box::new(|f| {
                f.insert("client_email".into(), 5.into());
            }),
            "`client_email` is not a string",
        ),
        (
            Box::new(|f| {
                f.insert("client_email".into(), "".into());
            }),
            "`client_email` is empty",
        ),
        // The key where another field belongs: still never repeated.
        (
            Box::new(move |f| {
                f.insert("type".into(), pem.clone().into());
            }),
            "`type` is not `service_account`",
        ),
        (
            Box::new(|f| {
                let cut = f["private_key"]
                    .as_str()
                    .unwrap()
                    .replace("-----END PRIVATE KEY-----", "");
                f.insert("private_key".into(), cut.into());
            }),
            "`private_key` is not a PEM `PRIVATE KEY` (PKCS#8) block",
        ),
        (
            Box::new(|f| {
                let broken = f["private_key"].as_str().unwrap().replacen("MII", "MIJ", 1);
                f.insert("private_key".into(), broken.into());
            }),
            "`private_key` is not an RSA key",
        ),
        (
            Box::new(|f| {
                f.insert("token_uri".into(), "http://oauth.example/token".into());
            }),
            "`token_uri` must be https:// (plain http:// only to a loopback address), not to oauth.example",
        ),
        (
            Box::new(|f| {
                f.insert("token_uri".into(), "ftp://127.0.0.1/token".into());
            }),
            "`token_uri` must be an https:// URL",
        ),
        (
            Box::new(|f| {
                f.insert("token_uri".into(), "https://u:p@oauth.example/token".into());
            }),
            "`token_uri` must not hold credentials",
        ),
    ];
    for (edit, expected) in cases {
        let why = parse_with(edit).unwrap_err();
        assert!(
            why.starts_with(expected),
            "expected {expected:?}, got {why:?}"
        );
        assert!(!why.contains(&piece) && !why.contains("BEGIN"), "{why}");
    }
    let why = ServiceAccountKey::from_json(b"{\"private_key\": \"-----BEGIN").unwrap_err();
    assert_eq!(why, "not JSON (syntax error at line 1 column 27)");
    let why = ServiceAccountKey::from_json(b"[1]").unwrap_err();
    assert_eq!(why, "not a JSON object");
}

#[test]
fn plain_http_token_uris_only_to_loopback() {
    for uri in [
        "http://127.0.0.1:1/token",
        "http://localhost:1/token",
        "http://[::1]:1/token",
    ] {
        assert!(
            parse_with(|f| {
                f.insert("token_uri".into(), uri.into());
            })
            .is_ok(),
            "{uri}"
        );
    }
}

// --- a small HTTP server on 127.0.0.1 ---

type Handler = dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync;

/// Serves `handler` on 127.0.0.1 until dropped, counting requests.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TestServer {
    async fn start(
        handler: impl Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let counted = requests.clone();
        let accept = tokio::spawn(async move {
            // Connections end with the test's runtime.
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, counted) = (handler.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (handler, counted) = (handler.clone(), counted.clone());
                        async move {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let (head, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            Ok::<_, Infallible>(handler(Request::from_parts(head, body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            requests,
            accept,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// What Google's token endpoint checks, as far as a test can: the form, the JWT's header,
/// claims and signature. Why a request is refused goes back in the error description.
fn check_grant(request: &Request<Bytes>, token_uri: &str) -> Result<(), String> {
    if request.method() != http::Method::POST || request.uri().path() != "/token" {
        return Err(format!("{} {}", request.method(), request.uri()));
    }
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap());
    if content_type != Some("application/x-www-form-urlencoded") {
        return Err(format!("content-type {content_type:?}"));
    }
    let form: Vec<(String, String)> = std::str::from_utf8(request.body())
        .unwrap()
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (percent_decoded(name), percent_decoded(value))
        })
        .collect();
    let [(grant, grant_type), (assertion, jwt)] = &form[..] else {
        return Err(format!("form fields {form:?}"));
    };
    if grant != "grant_type"
        || grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer"
        || assertion != "assertion"
    {
        return Err(format!("form {form:?}"));
    }
    let (header, claims) = verify(jwt, &rsa_public_key(TEST_PUBLIC_KEY));
    let expected_header = serde_json::json!({
        "alg": "RS256", "typ": "JWT", "kid": test_key_field("private_key_id"),
    });
    if header != expected_header {
        return Err(format!("header {header}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    let fits = claims["iss"] == test_key_field("client_email").as_str()
        && claims["scope"] == CLOUD_PLATFORM_SCOPE
        && claims["aud"] == token_uri
        && claims["exp"].as_u64() == Some(iat + 3600)
        && iat.abs_diff(now) < 60;
    if !fits {
        return Err(format!("claims {claims}"));
    }
    Ok(())
}

async fn token_server() -> (TestServer, String) {
    // The URI is known once the port is: the handler learns it through this cell.
    let uri = Arc::new(std::sync::OnceLock::<String>::new());
    let expected = uri.clone();
    let server =
        TestServer::start(
            move |request| match check_grant(&request, expected.get().unwrap()) {
                Ok(()) => answer(StatusCode::OK, TOKEN_ANSWER),
                Err(why) => answer(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "invalid_request", "error_description": why})
                        .to_string(),
                ),
            },
        )
        .await;
    let token_uri = format!("http://{}/token", server.addr);
    uri.set(token_uri.clone()).unwrap();
    (server, token_uri)
}

#[tokio::test]
async fn service_account_token_from_a_local_token_server() {
    let (server, token_uri) = token_server().await;
    let file = TempFile::new("e2e-sa.json", key_file_json(&token_uri).as_bytes());
    let credentials = Credentials::from_config(&VertexCredentials::ServiceAccount {
        key_file: file.path().to_path_buf(),
    })
    .unwrap();
    for _ in 0..3 {
        let (name, value) = credentials.header().await.unwrap();
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Bearer ya29.test-only-token");
        assert!(value.is_sensitive());
    }
    assert_eq!(server.requests(), 1, "one fetch, then the cache");
    assert!(!format!("{credentials:?}").contains("test-only-token"));
}

#[tokio::test]
async fn a_refusal_reaches_callers_as_rejected_without_secrets() {
    let server = TestServer::start(|_| {
        answer(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
    })
    .await;
    let token_uri = format!("http://{}/token", server.addr);
    let file = TempFile::new("e2e-refused.json", key_file_json(&token_uri).as_bytes());
    let credentials = Credentials::from_config(&VertexCredentials::ServiceAccount {
        key_file: file.path().to_path_buf(),
    })
    .unwrap();
    let err = credentials.header().await.unwrap_err();
    assert_eq!(err.kind(), CredentialsErrorKind::Rejected);
    assert_eq!(
        err.to_string(),
        format!(
            "Vertex AI credentials: no valid access token; the last attempt failed: the token endpoint {token_uri} answered 400 Bad Request: invalid_grant (Invalid JWT Signature.)"
        )
    );
    assert!(!format!("{err:?}").contains(&private_key_piece()));
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_uri = format!("http://127.0.0.1:{port}/token");
    let file = TempFile::new("e2e-unreachable.json", key_file_json(&token_uri).as_bytes());
    let credentials = Credentials::from_config(&VertexCredentials::ServiceAccount {
        key_file: file.path().to_path_buf(),
    })
    .unwrap();
    let err = credentials.header().await.unwrap_err();
    assert_eq!(err.kind(), CredentialsErrorKind::Unavailable);
    assert!(
        err.message().contains("cannot reach the token endpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn metadata_server_token_with_the_flavor_header() {
    let server = TestServer::start(|request| {
        let flavored = request
            .headers()
            .get("metadata-flavor")
            .is_some_and(|v| v == "Google");
        if request.method() != http::Method::GET || request.uri().path() != METADATA_TOKEN_PATH {
            answer(StatusCode::NOT_FOUND, "{}")
        } else if !flavored {
            answer(StatusCode::FORBIDDEN, "{}")
        } else {
            answer(StatusCode::OK, TOKEN_ANSWER)
        }
    })
    .await;
    let credentials = Credentials::from_config(&VertexCredentials::MetadataServer {
        host: server.addr.to_string(),
    })
    .unwrap();
    let (name, value) = credentials.header().await.unwrap();
    assert_eq!(name, http::header::AUTHORIZATION);
    assert_eq!(value, "Bearer ya29.test-only-token");
    credentials.header().await.unwrap();
    assert_eq!(server.requests(), 1);
}
