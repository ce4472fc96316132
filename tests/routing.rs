//! Route versions against several mock upstreams: weighted canary split, sticky users,
//! pinning by header or `alias@version`, per-version model rewrite, headers and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate::auth::hash_key;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

/// Two mocks: `stable` (weight 90, upstream model `llama-3`) and `canary` (weight 10,
/// upstream model `llama-3.1`) behind alias `m`, plus whatever `extra` adds to the route.
async fn canary_gateway(route_extra: &str, top_extra: &str) -> (MockServer, MockServer, Gateway) {
    let stable = MockServer::start(MockConfig::default()).await.unwrap();
    let canary = MockServer::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n\
         providers:\n  a:\n    type: openai\n    base_url: {}\n  b:\n    type: openai\n    base_url: {}\n\
         routes:\n  m:\n    versions:\n      stable: {{provider: a, upstream_model: llama-3, weight: 90}}\n      canary: {{provider: b, upstream_model: llama-3.1, weight: 10}}\n{route_extra}\
         {top_extra}",
        stable.base_url(),
        canary.base_url()
    );
    let gw = gateway(&yaml).await;
    (stable, canary, gw)
}

const OPEN: &str = "auth:\n  enabled: false\n";
const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

async fn version_of(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> String {
    let (status, headers, text) =
        call(gw.api_addr, post("/v1/chat/completions", body, headers)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    headers["x-tollgate-route-version"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn unpinned_traffic_splits_by_weight() {
    let (stable, canary, gw) = canary_gateway("", OPEN).await;
    let total = 600;
    let mut to_canary = 0;
    for _ in 0..total {
        if version_of(&gw, CHAT, &[]).await == "canary" {
            to_canary += 1;
        }
    }
    // Expected 60; the standard deviation is about 7.3, so +-30 is four of them.
    assert!(
        (30..=90).contains(&to_canary),
        "canary got {to_canary} of {total}"
    );
    assert_eq!(canary.stats().requests(), to_canary);
    assert_eq!(stable.stats().requests(), total - to_canary);
    let text = metrics(&gw).await;
    assert_eq!(
        sample(
            &text,
            "tollgate_requests_total{route=\"m\",version=\"canary\",tenant=\"anonymous\",status_class=\"2xx\",error_type=\"\"}"
        ),
        to_canary as f64
    );
}

#[tokio::test]
async fn each_version_gets_its_own_upstream_model() {
    let (stable, canary, gw) = canary_gateway("", OPEN).await;
    assert_eq!(
        version_of(&gw, r#"{"model":"m@canary","messages":[]}"#, &[]).await,
        "canary"
    );
    let sent = canary.stats().last_request().unwrap();
    assert_eq!(
        json(std::str::from_utf8(&sent.body).unwrap())["model"],
        "llama-3.1"
    );
    assert_eq!(
        version_of(&gw, CHAT, &[("x-tollgate-version", "stable")]).await,
        "stable"
    );
    let sent = stable.stats().last_request().unwrap();
    assert_eq!(
        json(std::str::from_utf8(&sent.body).unwrap())["model"],
        "llama-3"
    );
}

#[tokio::test]
async fn sticky_users_stay_on_one_version() {
    let (_stable, _canary, gw) = canary_gateway("    sticky: header:x-user-id\n", OPEN).await;
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..60 {
        let id = format!("user-{user}");
        let first = version_of(&gw, CHAT, &[("x-user-id", &id)]).await;
        for _ in 0..4 {
            assert_eq!(version_of(&gw, CHAT, &[("x-user-id", &id)]).await, first);
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "60 users land on both versions");
}

#[tokio::test]
async fn sticky_by_the_user_field() {
    let (_stable, _canary, gw) = canary_gateway("    sticky: user\n", OPEN).await;
    for user in 0..20 {
        let body = format!(r#"{{"model":"m","user":"u{user}","messages":[]}}"#);
        let first = version_of(&gw, &body, &[]).await;
        for _ in 0..3 {
            assert_eq!(version_of(&gw, &body, &[]).await, first);
        }
    }
}

#[tokio::test]
async fn bad_pins_get_clear_errors() {
    let (_stable, _canary, gw) = canary_gateway("", OPEN).await;
    let (status, _, body) = chat(&gw, r#"{"model":"m@v9","messages":[]}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&body, "version_not_found");
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"m@canary","messages":[]}"#,
            &[("x-tollgate-version", "stable")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&body, "invalid_field");
}

#[tokio::test]
async fn only_tenants_allowed_to_pin_may_pin() {
    let tenants = format!(
        "tenants:\n  - name: app\n    key_hashes: [\"{}\"]\n    models: [m]\n  - name: release\n    key_hashes: [\"{}\"]\n    models: [m]\n    pin_versions: true\n",
        hash_key("sk-app"),
        hash_key("sk-release")
    );
    let (_stable, canary, gw) = canary_gateway("", &tenants).await;
    let pinned = r#"{"model":"m@canary","messages":[]}"#;
    let (status, _, body) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            pinned,
            &[("authorization", "Bearer sk-app")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_openai_error(&body, "version_pin_not_allowed");
    assert_eq!(canary.stats().requests(), 0);
    assert_eq!(
        version_of(&gw, pinned, &[("authorization", "Bearer sk-release")]).await,
        "canary"
    );
}

#[tokio::test]
async fn short_form_routes_are_version_default() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let (status, headers, _) = chat(&gw, r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-tollgate-route"], "m");
    assert_eq!(headers["x-tollgate-route-version"], "default");
}

#[tokio::test]
async fn a_version_adds_its_headers_and_generation_defaults() {
    let stable = MockServer::start(MockConfig::default()).await.unwrap();
    let tuned = MockServer::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  a:\n    type: openai\n    base_url: {}\n  b:\n    type: openai\n    base_url: {}\n\
         routes:\n  m:\n    versions:\n      stable: {{provider: a}}\n      tuned:\n        provider: b\n        weight: 0\n        headers: {{x-experiment: tuned-7}}\n        defaults: {{temperature: 0.1, max_tokens: 32, stop: [\"END\"]}}\n",
        stable.base_url(),
        tuned.base_url()
    );
    let gw = gateway(&yaml).await;
    let body = r#"{"model":"m@tuned","max_tokens":5,"messages":[]}"#;
    assert_eq!(version_of(&gw, body, &[]).await, "tuned");
    let sent = tuned.stats().last_request().unwrap();
    assert_eq!(sent.headers["x-experiment"], "tuned-7");
    let upstream = json(std::str::from_utf8(&sent.body).unwrap());
    assert_eq!(upstream["temperature"], 0.1);
    assert_eq!(upstream["max_tokens"], 5, "the caller's own value wins");
    assert_eq!(upstream["stop"], serde_json::json!(["END"]));
    // The other version is untouched by them.
    assert_eq!(version_of(&gw, CHAT, &[]).await, "stable");
    let sent = stable.stats().last_request().unwrap();
    assert!(!sent.headers.contains_key("x-experiment"));
    assert!(
        json(std::str::from_utf8(&sent.body).unwrap())
            .get("temperature")
            .is_none()
    );
}
