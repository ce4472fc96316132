//! Prompts per tenant (`GET /v1/prompts`, permissions) and the series of each prompt version.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::prompts::*;
use common::*;
use http::StatusCode;
use serde_json::json;
use tollgate::auth::hash_key;

#[tokio::test]
async fn tenants_see_and_use_only_their_prompts() {
    let tenants = format!(
        "tenants:\n  - name: limited\n    key_hashes: [\"{}\"]\n    models: [\"*\"]\n    prompts: [greet]\n  - name: everyone\n    key_hashes: [\"{}\"]\n    models: [\"*\"]\n  - name: narrow\n    key_hashes: [\"{}\"]\n    models: [d]\n",
        hash_key("sk-limited"),
        hash_key("sk-everyone"),
        hash_key("sk-narrow")
    );
    let (_dir, mock, gw) = prompt_gateway("tenants", &tenants).await;
    let limited = [("authorization", "Bearer sk-limited")];

    let listing = listed(&gw, &limited).await;
    assert_eq!(listing.len(), 1, "{listing:?}");
    let greet = &listing[0];
    assert_eq!(greet["id"], "greet");
    assert_eq!(greet["object"], "prompt");
    assert_eq!(
        greet["labels"],
        json!({"candidate": "2", "production": "1"})
    );
    let versions = greet["versions"].as_array().unwrap();
    let names: Vec<&str> = versions
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1", "2"]);
    for version in versions {
        assert!(is_hash(version["hash"].as_str().unwrap()), "{version}");
        assert_eq!(version["model"], "m");
    }
    assert_ne!(versions[0]["hash"], versions[1]["hash"]);
    assert_eq!(versions[0]["owner"], "test-team");
    let variables = &versions[0]["variables"];
    assert_eq!(variables["name"]["type"], "string");
    assert_eq!(variables["name"]["required"], true);
    assert_eq!(variables["name"]["max_length"], 10);
    assert_eq!(variables["tone"]["default"], "warm");
    assert_eq!(variables["age"]["type"], "integer");

    // The hash listed is the one a request gets.
    let body = format!(r#"{{"prompt":{{"id":"greet","variables":{GREET_VARS}}}}}"#);
    let headers = chat_ok(&gw, &body, &limited).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    assert_eq!(
        header(&headers, "x-tollgate-prompt-hash"),
        versions[0]["hash"]
    );

    // The other prompts are refused, in either form, before anything goes upstream.
    let before = mock.stats().requests();
    let (status, _, text) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"prompt":{"id":"other"}}"#,
            &limited,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let error = assert_openai_error(&text, "prompt_not_allowed");
    assert_eq!(error["error"]["type"], "permission_error");
    assert_eq!(error["error"]["param"], "prompt");
    let (status, _, text) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"model":"m","messages":[]}"#,
            &[limited[0], ("x-tollgate-prompt", "other@1")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_openai_error(&text, "prompt_not_allowed");
    assert_eq!(mock.stats().requests(), before);

    // A tenant without a `prompts` list sees them all, and may use them.
    let everyone = [("x-api-key", "sk-everyone")];
    let ids: Vec<String> = listed(&gw, &everyone)
        .await
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["greet", "other", "p", "whole"]);
    let headers = chat_ok(&gw, r#"{"prompt":{"id":"other"}}"#, &everyone).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "other@1");

    // A prompt runs only on models the tenant may use.
    let (status, _, text) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            r#"{"prompt":{"id":"other"}}"#,
            &[("authorization", "Bearer sk-narrow")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_openai_error(&text, "model_not_allowed");
    let headers = chat_ok(
        &gw,
        r#"{"model":"d","prompt":{"id":"other"}}"#,
        &[("authorization", "Bearer sk-narrow")],
    )
    .await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "other@1");

    // No key, no listing.
    let (status, _, _) = call(gw.api_addr, get("/v1/prompts", &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn prompt_versions_have_their_own_series() {
    let (_dir, _mock, gw) = prompt_gateway("metrics", OPEN).await;
    let one = format!(r#"{{"prompt":{{"id":"greet","variables":{GREET_VARS}}}}}"#);
    let two = format!(r#"{{"prompt":{{"id":"greet","version":"2","variables":{GREET_VARS}}}}}"#);
    for body in [&one, &one, &two] {
        chat_ok(&gw, body, &[]).await;
    }
    let (status, _, _) = chat(
        &gw,
        r#"{"prompt":{"id":"greet","variables":{"name":"Ann"}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = chat(&gw, r#"{"prompt":{"id":"nope"}}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let text = metrics(&gw).await;
    let requests = |version: &str, status_class: &str| {
        sum_where(
            &text,
            "tollgate_prompt_requests_total",
            &[
                ("prompt", "greet"),
                ("prompt_version", version),
                ("status_class", status_class),
            ],
        )
    };
    assert_eq!(requests("1", "2xx"), 2.0, "{text}");
    assert_eq!(requests("2", "2xx"), 1.0, "{text}");
    assert_eq!(requests("1", "4xx"), 1.0, "{text}");
    assert_eq!(
        sum_where(
            &text,
            "tollgate_prompt_requests_total",
            &[
                ("prompt", "greet"),
                ("prompt_version", "1"),
                ("error_type", "invalid_prompt_variable")
            ],
        ),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains("prompt=\"nope\""),
        "an unknown prompt gets no series"
    );
    for version in ["1", "2"] {
        for kind in ["input", "output"] {
            let tokens = sum_where(
                &text,
                "tollgate_prompt_tokens_total",
                &[
                    ("prompt", "greet"),
                    ("prompt_version", version),
                    ("type", kind),
                ],
            );
            assert!(tokens > 0.0, "greet@{version} {kind} tokens: {text}");
        }
    }
    // Versions no request used still have their (zero) series.
    assert!(
        text.contains(
            "tollgate_prompt_tokens_total{prompt=\"other\",prompt_version=\"1\",type=\"input\"} 0"
        ),
        "{text}"
    );
}
