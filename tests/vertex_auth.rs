//! Vertex AI credentials end to end, against the mock's real token and metadata endpoints:
//! a service-account key signs JWTs that the mock verifies; tokens are fetched once for many
//! requests; token failures reach the caller as clear OpenAI errors; no secret leaks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer, TokenFailure, fixtures};

const CHAT: &str = r#"{"model":"g","messages":[{"role":"user","content":"Hello"}]}"#;

/// A mock Vertex that accepts only the tokens it issued, and a gateway whose `credentials`
/// section is `credentials` (YAML flow mapping).
async fn gateway_with(mock: &MockServer, credentials: &str) -> Gateway {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  gemini:\n    type: vertex\n    project: {project}\n    location: europe-west4\n    base_url: {base}\n    credentials: {credentials}\n\
         routes:\n  g:\n    provider: gemini\n    upstream_model: gemini-2.5-pro\n    retry: {{max_attempts: 1}}\n",
        project = fixtures::PROJECT_ID,
        base = mock.vertex_base_url(),
    );
    gateway(&yaml).await
}

async fn strict_mock() -> MockServer {
    MockServer::start(MockConfig::default().with_vertex_auth_required())
        .await
        .unwrap()
}

async fn service_account_gateway(mock: &MockServer) -> Gateway {
    let key = temp_file(
        "sa.json",
        &fixtures::service_account_json(&mock.token_url()).unwrap(),
    );
    gateway_with(
        mock,
        &format!("{{type: service_account, key_file: {}}}", key.display()),
    )
    .await
}

#[tokio::test]
async fn one_token_serves_a_hundred_concurrent_requests() {
    let mock = strict_mock().await;
    let gw = service_account_gateway(&mock).await;
    // Every request arrives while the one token request is held: they all wait for it.
    let hold = mock.hold_token_responses();
    let requests: Vec<_> = (0..100)
        .map(|_| tokio::spawn(call(gw.api_addr, post("/v1/chat/completions", CHAT, &[]))))
        .collect();
    tokio::time::timeout(WAIT, mock.stats().wait_token_requests(1))
        .await
        .expect("the token request arrives");
    // Every request is inside the gateway, waiting, before the token comes.
    tokio::time::timeout(WAIT, async {
        while sample(&metrics(&gw).await, "tollgate_requests_in_flight") < 100.0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("all 100 requests in flight");
    drop(hold);
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(mock.stats().token_requests(), 1);
    let issued = mock.issued_tokens();
    assert_eq!(issued.len(), 1);
    let sent = mock.stats().last_request().unwrap();
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {}", issued[0]).as_str()
    );
    assert!(sent.path_and_query.starts_with(
        "/v1/projects/tollgate-mock-project/locations/europe-west4/publishers/google/models/gemini-2.5-pro:"
    ));

    // Warm: later requests use the cached token.
    let (status, _, _) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mock.stats().token_requests(), 1);
}

#[tokio::test]
async fn a_refused_key_is_a_502_and_an_unreachable_token_server_a_503() {
    let mock = strict_mock().await;
    let gw = service_account_gateway(&mock).await;
    mock.fail_next_token_requests(1, TokenFailure::InvalidGrant);
    let (status, headers, body) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(headers["x-tollgate-error-source"], "upstream");
    assert_openai_error(&body, "upstream_credentials_rejected");
    // Neither the signed assertion (a JWT) nor the key reaches the caller.
    assert!(!body.contains("eyJ"), "{body}");
    assert!(!body.contains(key_material()), "{body}");
    let vertex_calls = mock
        .stats()
        .recorded()
        .iter()
        .filter(|r| r.path_and_query.contains("/publishers/"))
        .count();
    assert_eq!(vertex_calls, 0, "nothing reached Vertex");

    let other = strict_mock().await;
    let gw = service_account_gateway(&other).await;
    other.fail_next_token_requests(1, TokenFailure::ServerError);
    let (status, _, body) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_openai_error(&body, "upstream_credentials_unavailable");
    let metrics = metrics(&gw).await;
    assert!(
        sum_where(
            &metrics,
            "tollgate_requests_total",
            &[("error_type", "upstream_credentials_unavailable")]
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn metadata_server_tokens() {
    let mock = strict_mock().await;
    let gw = gateway_with(
        &mock,
        &format!(
            "{{type: metadata_server, host: \"{}\"}}",
            mock.metadata_host()
        ),
    )
    .await;
    for _ in 0..3 {
        let (status, _, body) = chat(&gw, CHAT).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(mock.stats().metadata_requests(), 1);
    assert_eq!(mock.stats().token_requests(), 0);
}

/// A run of the fixture's private key, as it appears in the key file.
fn key_material() -> &'static str {
    let pem = fixtures::SERVICE_ACCOUNT_JSON;
    let start = pem.find("MII").expect("a PKCS#8 key");
    &pem[start..start + 40]
}

#[tokio::test]
async fn a_broken_key_file_is_refused_without_showing_the_key() {
    let mock = strict_mock().await;
    let mut key: serde_json::Value =
        serde_json::from_str(&fixtures::service_account_json(&mock.token_url()).unwrap()).unwrap();
    let private = key["private_key"].as_str().unwrap().replace("MII", "MIX");
    key["private_key"] = private.into();
    let file = temp_file("broken-sa.json", &key.to_string());
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  gemini:\n    type: vertex\n    project: p\n    base_url: {}\n    credentials: {{type: service_account, key_file: {}}}\n",
        mock.vertex_base_url(),
        file.display()
    );
    let err = start_error(&yaml).await;
    assert!(err.contains("providers.gemini.credentials"), "{err}");
    assert!(!err.contains(&key_material()[3..]), "{err}");
}

#[tokio::test]
async fn secrets_stay_out_of_admin_output_and_metrics() {
    let mock = strict_mock().await;
    let gw = service_account_gateway(&mock).await;
    let (status, _, _) = chat(&gw, CHAT).await;
    assert_eq!(status, StatusCode::OK);
    let token = mock.issued_tokens().pop().unwrap();
    let (_, _, config) = call(gw.admin_addr, get("/admin/config", &[])).await;
    let metrics = metrics(&gw).await;
    for text in [&config, &metrics] {
        assert!(!text.contains(&token));
        assert!(!text.contains("PRIVATE KEY"));
    }
}
