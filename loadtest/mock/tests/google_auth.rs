//! Auth on the Vertex paths, the OAuth token endpoint (JWT bearer grant) and the metadata
//! server, with their counters and failure knobs.

// Test helpers outside #[test] fns are not covered by clippy.toml's test allowances;
// failing loudly is exactly what they should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{json, post, send, text};
use http::Request;
use http_body_util::Full;
use tollgate_mock::fixtures::{self, CLOUD_PLATFORM_SCOPE};
use tollgate_mock::{MockConfig, MockServer, TokenFailure};

const GENERATE: &str = "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";
const EXPRESS: &str = "/v1/publishers/google/models/gemini-2.5-flash:generateContent";
const PROMPT: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}"#;
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

async fn status_and_json(
    server: &MockServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let response = send(server.addr(), post(path, PROMPT, headers))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, json(&text(response).await))
}

/// POSTs a form body to the token endpoint.
async fn token_request(server: &MockServer, form: &str) -> (u16, serde_json::Value) {
    let request = Request::post("/token")
        .header("host", "mock")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_owned())))
        .unwrap();
    let response = send(server.addr(), request).await.unwrap();
    let status = response.status().as_u16();
    (status, json(&text(response).await))
}

async fn exchange(server: &MockServer, assertion: &str) -> (u16, serde_json::Value) {
    token_request(server, &format!("grant_type={GRANT}&assertion={assertion}")).await
}

async fn metadata(
    server: &MockServer,
    flavor: Option<&str>,
) -> http::Response<hyper::body::Incoming> {
    let mut request = Request::get("/computeMetadata/v1/instance/service-accounts/default/token")
        .header("host", "metadata.google.internal");
    if let Some(flavor) = flavor {
        request = request.header("Metadata-Flavor", flavor);
    }
    send(
        server.addr(),
        request.body(Full::new(Bytes::new())).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn no_auth_configured_accepts_anything() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    assert_eq!(status_and_json(&server, GENERATE, &[]).await.0, 200);
    let (status, _) =
        status_and_json(&server, EXPRESS, &[("authorization", "Bearer whatever")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn api_keys_and_static_bearer_tokens() {
    let config = MockConfig::default()
        .with_vertex_api_key("express-key")
        .with_vertex_bearer_token("static-token");
    let server = MockServer::start(config).await.unwrap();
    assert_eq!(
        status_and_json(&server, EXPRESS, &[("x-goog-api-key", "express-key")])
            .await
            .0,
        200
    );
    let (status, _) = status_and_json(
        &server,
        GENERATE,
        &[("authorization", "Bearer static-token")],
    )
    .await;
    assert_eq!(status, 200);

    for (headers, reason) in [
        (vec![], "CREDENTIALS_MISSING"),
        (vec![("x-goog-api-key", "wrong")], "API_KEY_INVALID"),
        (
            vec![("authorization", "Bearer wrong")],
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        ),
        (
            vec![("authorization", "Basic c3RhdGljLXRva2Vu")],
            "CREDENTIALS_MISSING",
        ),
    ] {
        let (status, v) = status_and_json(&server, GENERATE, &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(v["error"]["details"][0]["reason"], reason, "{headers:?}");
    }
    // Errors on the JSON-array stream endpoint come wrapped.
    let stream = GENERATE.replace(":generateContent", ":streamGenerateContent");
    let (status, v) = status_and_json(&server, &stream, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(v[0]["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn other_projects_are_denied() {
    let config = MockConfig::default()
        .with_vertex_bearer_token("t")
        .with_vertex_project("p-1");
    let server = MockServer::start(config).await.unwrap();
    let bearer = [("authorization", "Bearer t")];
    assert_eq!(status_and_json(&server, GENERATE, &bearer).await.0, 200);
    let other = GENERATE.replace("p-1", "p-2");
    let (status, v) = status_and_json(&server, &other, &bearer).await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("projects/p-2")
    );
}

#[tokio::test]
async fn token_endpoint_issues_tokens_the_vertex_paths_accept() {
    let server = MockServer::start(MockConfig::default().with_vertex_auth_required())
        .await
        .unwrap();
    assert_eq!(
        server.token_url(),
        format!("http://{}/token", server.addr())
    );
    assert_eq!(server.token_audience(), server.token_url());
    let assertion = fixtures::assertion(&server.token_url()).unwrap();
    let (status, v) = exchange(&server, &assertion).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    let token = v["access_token"].as_str().unwrap().to_owned();
    let (_, again) = exchange(&server, &assertion).await;
    assert_ne!(again["access_token"], v["access_token"]);
    assert_eq!(server.stats().token_requests(), 2);
    assert_eq!(server.stats().tokens_issued(), 2);
    assert_eq!(server.issued_tokens().len(), 2);

    let bearer = format!("Bearer {token}");
    let (status, _) = status_and_json(&server, GENERATE, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    // The exchange was recorded like any request.
    let recorded = server.stats().recorded();
    let exchange_request = recorded
        .iter()
        .find(|r| r.path_and_query == "/token")
        .unwrap();
    assert!(
        std::str::from_utf8(&exchange_request.body)
            .unwrap()
            .contains("assertion=")
    );

    server.revoke_issued_tokens();
    let (status, v) = status_and_json(&server, GENERATE, &[("authorization", &bearer)]).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let config = MockConfig::default()
        .with_vertex_auth_required()
        .with_token_expires_in(0);
    let server = MockServer::start(config).await.unwrap();
    let (_, v) = exchange(&server, &fixtures::assertion(&server.token_url()).unwrap()).await;
    assert_eq!(v["expires_in"], 0);
    let bearer = format!("Bearer {}", v["access_token"].as_str().unwrap());
    let (status, v) = status_and_json(&server, GENERATE, &[("authorization", &bearer)]).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["details"][0]["reason"], "ACCESS_TOKEN_EXPIRED");
}

#[tokio::test]
async fn token_endpoint_refuses_bad_assertions() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let good = fixtures::assertion_claims(&server.token_url());
    let now = fixtures::unix_now();
    let signed = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = good.clone();
        edit(&mut claims);
        fixtures::sign_jwt(&claims).unwrap()
    };
    let tampered = {
        let jwt = fixtures::assertion(&server.token_url()).unwrap();
        let (signed_part, signature) = jwt.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{signed_part}.{flipped}{}", &signature[1..])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad signature", tampered, "invalid_grant"),
        (
            "wrong aud",
            signed(&|c| c["aud"] = "https://oauth2.example/token".into()),
            "invalid_grant",
        ),
        (
            "wrong scope",
            signed(&|c| c["scope"] = "https://www.googleapis.com/auth/userinfo.email".into()),
            "invalid_scope",
        ),
        (
            "expired",
            signed(&|c| {
                c["iat"] = (now - 7200).into();
                c["exp"] = (now - 3600).into();
            }),
            "invalid_grant",
        ),
        (
            "exp too far",
            signed(&|c| c["exp"] = (now + 7200).into()),
            "invalid_grant",
        ),
        (
            "wrong issuer",
            signed(&|c| c["iss"] = "x@y.iam".into()),
            "invalid_grant",
        ),
        (
            "no iat",
            signed(&|c| c["iat"] = serde_json::Value::Null),
            "invalid_grant",
        ),
        ("garbage", "not-a-jwt".to_owned(), "invalid_grant"),
    ];
    for (what, assertion, code) in &cases {
        let (status, v) = exchange(&server, assertion).await;
        assert_eq!(status, 400, "{what}");
        assert_eq!(v["error"], *code, "{what}: {v}");
        assert!(v["error_description"].is_string(), "{what}");
    }
    let (status, v) = token_request(&server, "grant_type=client_credentials").await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "unsupported_grant_type");
    let (status, v) = token_request(&server, &format!("grant_type={GRANT}")).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "invalid_request");
    assert_eq!(server.stats().token_requests(), cases.len() as u64 + 2);
    assert_eq!(server.stats().tokens_issued(), 0);
    // The scope may list several, space separated.
    let mut multi = good.clone();
    multi["scope"] = format!("openid {CLOUD_PLATFORM_SCOPE}").into();
    assert_eq!(
        exchange(&server, &fixtures::sign_jwt(&multi).unwrap())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn token_failure_knob() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let assertion = fixtures::assertion(&server.token_url()).unwrap();
    server.fail_next_token_requests(2, TokenFailure::ServerError);
    for _ in 0..2 {
        let (status, v) = exchange(&server, &assertion).await;
        assert_eq!(status, 500);
        assert_eq!(v["error"], "internal_failure");
    }
    assert_eq!(exchange(&server, &assertion).await.0, 200);
    server.fail_next_token_requests(1, TokenFailure::InvalidGrant);
    let (status, v) = exchange(&server, &assertion).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"], "invalid_grant");
    // The knob covers the metadata server too.
    server.fail_next_token_requests(1, TokenFailure::ServerError);
    assert_eq!(metadata(&server, Some("Google")).await.status(), 500);
    assert_eq!(server.stats().token_requests(), 4);
    assert_eq!(server.stats().tokens_issued(), 1);
}

#[tokio::test]
async fn held_token_answers_wait_for_release() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let hold = server.hold_token_responses();
    let assertion = fixtures::assertion(&server.token_url()).unwrap();
    let addr = server.addr();
    let pending = tokio::spawn(async move {
        let request = Request::post("/token")
            .header("host", "mock")
            .body(Full::new(Bytes::from(format!(
                "grant_type={GRANT}&assertion={assertion}"
            ))))
            .unwrap();
        send(addr, request).await.unwrap().status()
    });
    server.stats().wait_token_requests(1).await;
    assert_eq!(server.stats().tokens_issued(), 0);
    assert!(!pending.is_finished());
    drop(hold);
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(server.stats().tokens_issued(), 1);
}

#[tokio::test]
async fn metadata_server_requires_its_header() {
    let server = MockServer::start(MockConfig::default().with_vertex_auth_required())
        .await
        .unwrap();
    let refused = metadata(&server, None).await;
    assert_eq!(refused.status(), 403);
    let wrong = metadata(&server, Some("google-ish")).await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(server.stats().tokens_issued(), 0);

    let ok = metadata(&server, Some("Google")).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["metadata-flavor"], "Google");
    let v = json(&text(ok).await);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(server.stats().metadata_requests(), 3);
    assert_eq!(server.stats().token_requests(), 0);
    assert_eq!(server.stats().tokens_issued(), 1);
    assert_eq!(server.metadata_host(), server.addr().to_string());
    let bearer = format!("Bearer {}", v["access_token"].as_str().unwrap());
    assert_eq!(
        status_and_json(&server, GENERATE, &[("authorization", &bearer)])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn fixture_key_file_points_at_the_mock() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let key: serde_json::Value =
        serde_json::from_str(&fixtures::service_account_json(&server.token_url()).unwrap())
            .unwrap();
    assert_eq!(key["token_uri"], server.token_url());
    assert_eq!(key["client_email"], fixtures::CLIENT_EMAIL);
    let bad_key = MockConfig::default().with_token_signer("not a pem", "x", None);
    let error = MockServer::start(bad_key).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
