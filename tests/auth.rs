//! Client keys: hashed in config, Bearer or x-api-key, 401/403 in OpenAI format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate::auth::hash_key;
use tollgate_mock::MockConfig;

fn keyed_routes() -> String {
    format!(
        "routes:\n  m:\n    provider: mock\n  d:\n    provider: demo\n\
         tenants:\n  - name: search\n    key_hashes: [\"{}\"]\n    models: [d]\n  - name: platform\n    key_hashes: [\"{}\"]\n    models: [\"*\"]\n",
        hash_key("sk-search"),
        hash_key("sk-platform")
    )
}

const CHAT_M: &str = r#"{"model":"m","messages":[]}"#;

#[tokio::test]
async fn missing_and_unknown_keys_are_401() {
    let (mock, gw) = mock_and_gateway_with(MockConfig::default(), &keyed_routes()).await;
    let (status, _, body) = chat(&gw, CHAT_M).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        assert_openai_error(&body, "missing_api_key")["error"]["type"],
        "authentication_error"
    );
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            CHAT_M,
            &[("authorization", "Bearer sk-wrong")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_openai_error(&body, "invalid_api_key");
    assert!(
        !body.contains("sk-wrong"),
        "the presented key is never echoed"
    );
    let (status, _, _) = call(gw.api_addr, get("/v1/models", &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(mock.stats().requests(), 0);
}

#[tokio::test]
async fn alias_outside_the_tenants_list_is_403() {
    let (mock, gw) = mock_and_gateway_with(MockConfig::default(), &keyed_routes()).await;
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            CHAT_M,
            &[("authorization", "Bearer sk-search")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        assert_openai_error(&body, "model_not_allowed")["error"]["type"],
        "permission_error"
    );
    assert_eq!(mock.stats().requests(), 0);
}

#[tokio::test]
async fn bearer_and_x_api_key_both_authenticate() {
    let (_mock, gw) = mock_and_gateway_with(MockConfig::default(), &keyed_routes()).await;
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            CHAT_M,
            &[("authorization", "Bearer sk-platform")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            CHAT_M,
            &[("x-api-key", "sk-platform")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn models_lists_only_what_the_key_may_use() {
    let (_mock, gw) = mock_and_gateway_with(MockConfig::default(), &keyed_routes()).await;
    let ids = |body: &str| -> Vec<String> {
        json(body)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, body) = call(
        gw.api_addr,
        get("/v1/models", &[("authorization", "Bearer sk-search")]),
    )
    .await;
    assert_eq!(ids(&body), ["d"]);
    let (_, _, body) = call(
        gw.api_addr,
        get("/v1/models", &[("x-api-key", "sk-platform")]),
    )
    .await;
    assert_eq!(ids(&body), ["d", "m"]);
}
