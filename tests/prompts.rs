//! Prompt requests end to end, each form: the body's `prompt` object (by version, label or
//! the `production` default), headers, the Vertex-native surface, a Vertex route; what the
//! upstream gets and the headers the caller gets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::prompts::*;
use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use tollgate_mock::{MockConfig, MockServer};

#[tokio::test]
async fn the_body_form_renders_before_the_callers_messages() {
    let (_dir, mock, gw) = prompt_gateway("body", OPEN).await;
    let body = format!(
        r#"{{"prompt":{{"id":"greet","variables":{GREET_VARS}}},"messages":[{{"role":"user","content":"caller turn"}},{{"role":"assistant","content":"caller answer"}}]}}"#
    );
    let headers = chat_ok(&gw, &body, &[]).await;
    // No version and no label: the `production` label's version.
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    let hash = header(&headers, "x-tollgate-prompt-hash").to_owned();
    assert!(is_hash(&hash), "{hash}");
    assert_eq!(header(&headers, "x-tollgate-route"), "m");

    let sent = upstream_body(&mock);
    assert_eq!(
        sent["messages"],
        json!([
            message("system", "You greet Ann in a warm tone."),
            message("user", "How are you?"),
            message("user", "caller turn"),
            message("assistant", "caller answer"),
        ]),
        "rendered first, the caller's after: {sent}"
    );
    assert!(
        sent.get("prompt").is_none(),
        "`prompt` never goes upstream: {sent}"
    );
    assert_eq!(sent["model"], "m", "the template's model: {sent}");
    assert_eq!(sent["temperature"], 0.2, "{sent}");
    assert_eq!(sent["max_tokens"], 50, "{sent}");

    // The listing names the same hash for greet@1, another for greet@2.
    let listing = listed(&gw, &[]).await;
    assert_eq!(listed_hash(&listing, "greet", "1"), hash);
    assert_ne!(listed_hash(&listing, "greet", "2"), hash);

    // The caller's own model and parameters win; the template fills only what is missing.
    // (`messages` before `prompt` this time: member order does not matter.)
    let body = r#"{"messages":[{"role":"user","content":"caller"}],"model":"m","temperature":1,"prompt":{"id":"greet","variables":{"name":"Bo","tone":"dry","age":41,"question":"Q"}}}"#;
    let headers = chat_ok(&gw, body, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    assert_eq!(header(&headers, "x-tollgate-prompt-hash"), hash);
    let sent = upstream_body(&mock);
    assert_eq!(
        sent["messages"],
        json!([
            message("system", "You greet Bo in a dry tone. They are 41."),
            message("user", "Q"),
            message("user", "caller"),
        ]),
        "{sent}"
    );
    assert_eq!(sent["temperature"], 1, "{sent}");
    assert_eq!(sent["max_tokens"], 50, "{sent}");
    assert_eq!(sent["model"], "m");

    // A stream carries the same headers.
    let body = format!(r#"{{"stream":true,"prompt":{{"id":"greet","variables":{GREET_VARS}}}}}"#);
    let (status, headers, text) = call(gw.api_addr, post("/v1/chat/completions", &body, &[])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    assert_eq!(header(&headers, "x-tollgate-prompt-hash"), hash);
    assert_eq!(upstream_body(&mock)["stream"], true);
}

#[tokio::test]
async fn a_version_or_a_label_picks_the_version() {
    let (_dir, mock, gw) = prompt_gateway("pick", OPEN).await;
    let listing = listed(&gw, &[]).await;
    let (hash_1, hash_2) = (
        listed_hash(&listing, "greet", "1"),
        listed_hash(&listing, "greet", "2"),
    );
    for (pick, expected) in [
        (r#""version":"2""#, "greet@2"),
        (r#""version":2"#, "greet@2"),
        (r#""version":"1""#, "greet@1"),
        (r#""label":"candidate""#, "greet@2"),
        (r#""label":"production""#, "greet@1"),
    ] {
        let body = format!(r#"{{"prompt":{{"id":"greet",{pick},"variables":{GREET_VARS}}}}}"#);
        let headers = chat_ok(&gw, &body, &[]).await;
        assert_eq!(
            header(&headers, "x-tollgate-prompt-version"),
            expected,
            "{pick}"
        );
        let sent = upstream_body(&mock);
        if expected == "greet@2" {
            assert_eq!(header(&headers, "x-tollgate-prompt-hash"), hash_2);
            assert_eq!(
                sent["messages"],
                json!([
                    message("system", "Version two greets Ann."),
                    message("user", "How are you?")
                ]),
                "{pick}: {sent}"
            );
            assert_eq!(sent["temperature"], 0.7, "{sent}");
            assert!(sent.get("max_tokens").is_none(), "{sent}");
        } else {
            assert_eq!(header(&headers, "x-tollgate-prompt-hash"), hash_1);
            assert_eq!(
                sent["messages"][0],
                message("system", "You greet Ann in a warm tone.")
            );
        }
    }
}

#[tokio::test]
async fn the_header_form_renders_the_same() {
    let (_dir, mock, gw) = prompt_gateway("headers", OPEN).await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"caller turn"}]}"#;
    for (reference, expected, system) in [
        ("greet", "greet@1", "You greet Ann in a warm tone."),
        ("greet@2", "greet@2", "Version two greets Ann."),
        ("greet@1", "greet@1", "You greet Ann in a warm tone."),
        ("greet:candidate", "greet@2", "Version two greets Ann."),
        (
            "greet:production",
            "greet@1",
            "You greet Ann in a warm tone.",
        ),
    ] {
        let headers = chat_ok(
            &gw,
            body,
            &[
                ("x-tollgate-prompt", reference),
                ("x-tollgate-prompt-variables", GREET_VARS),
            ],
        )
        .await;
        assert_eq!(header(&headers, "x-tollgate-prompt-version"), expected);
        assert!(is_hash(header(&headers, "x-tollgate-prompt-hash")));
        let sent = upstream_body(&mock);
        assert_eq!(
            sent["messages"],
            json!([
                message("system", system),
                message("user", "How are you?"),
                message("user", "caller turn"),
            ]),
            "{reference}: {sent}"
        );
        assert!(sent.get("prompt").is_none());
    }
    // Non-ASCII values travel as JSON escapes in the header.
    let headers = chat_ok(
        &gw,
        body,
        &[
            ("x-tollgate-prompt", "greet"),
            (
                "x-tollgate-prompt-variables",
                r#"{"name":"Zo\u00eb","question":"\u00c7a va ?"}"#,
            ),
        ],
    )
    .await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    let sent = upstream_body(&mock);
    assert_eq!(
        sent["messages"][0]["content"],
        "You greet Zoë in a warm tone."
    );
    assert_eq!(sent["messages"][1]["content"], "Ça va ?");
}

/// The template names the model for requests that name none, in the header form too.
#[tokio::test]
async fn the_header_form_takes_the_model_from_the_template() {
    let (_dir, mock, gw) = prompt_gateway("header-model", OPEN).await;
    let headers = chat_ok(
        &gw,
        r#"{"messages":[]}"#,
        &[
            ("x-tollgate-prompt", "greet"),
            ("x-tollgate-prompt-variables", GREET_VARS),
        ],
    )
    .await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    assert_eq!(upstream_body(&mock)["model"], "m");
}

#[tokio::test]
async fn the_native_surface_renders_a_prompt_too() {
    let (_dir, mock, gw) = prompt_gateway("native", OPEN).await;
    let body = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"caller turn"}}]}}],"prompt":{{"id":"greet","variables":{GREET_VARS}}}}}"#
    );
    let (status, headers, text) = call(gw.api_addr, post(NATIVE_M, &body, &[])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer = json(&text);
    assert_eq!(
        answer["candidates"][0]["content"]["role"], "model",
        "a Gemini answer: {text}"
    );
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    assert!(is_hash(header(&headers, "x-tollgate-prompt-hash")));
    let sent = upstream_body(&mock);
    assert_eq!(
        sent["messages"],
        json!([
            message("system", "You greet Ann in a warm tone."),
            message("user", "How are you?"),
            message("user", "caller turn"),
        ]),
        "{sent}"
    );
    assert!(sent.get("prompt").is_none(), "{sent}");
    assert_eq!(sent["temperature"], 0.2, "the template's params: {sent}");

    // A label, with no contents at all; and a stream.
    let body =
        format!(r#"{{"prompt":{{"id":"greet","label":"candidate","variables":{GREET_VARS}}}}}"#);
    let (status, headers, text) = call(gw.api_addr, post(NATIVE_M, &body, &[])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@2");
    assert_eq!(
        upstream_body(&mock)["messages"],
        json!([
            message("system", "Version two greets Ann."),
            message("user", "How are you?")
        ])
    );
    // The header form on the native surface.
    let (status, headers, text) = call(
        gw.api_addr,
        post(
            NATIVE_M,
            r#"{"contents":[{"role":"user","parts":[{"text":"caller turn"}]}]}"#,
            &[
                ("x-tollgate-prompt", "greet@2"),
                ("x-tollgate-prompt-variables", GREET_VARS),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@2");
    assert_eq!(
        upstream_body(&mock)["messages"],
        json!([
            message("system", "Version two greets Ann."),
            message("user", "How are you?"),
            message("user", "caller turn"),
        ])
    );
    let stream = "/v1beta1/publishers/google/models/m:streamGenerateContent?alt=sse";
    let (status, headers, text) = call(gw.api_addr, post(stream, &body, &[])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&headers, "content-type"), "text/event-stream");
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@2");
}

const VERTEX_KEY: &str = "prompt-test-express-key";

#[tokio::test]
async fn a_prompt_reaches_a_vertex_route_as_gemini() {
    let dir = TempDir::new("vertex");
    let folder = write_prompts(&dir);
    let mock = MockServer::start(MockConfig::default().with_vertex_api_key(VERTEX_KEY))
        .await
        .unwrap();
    let key = dir.write("express-key", VERTEX_KEY);
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
         providers:\n  vertex:\n    type: vertex\n    base_url: {}\n    credentials: {{type: api_key, file: {}}}\n\
         routes:\n  m:\n    provider: vertex\n    upstream_model: gemini-2.5-flash\n{}",
        mock.vertex_base_url(),
        key.display(),
        prompts_section(&folder)
    );
    let gw = gateway(&yaml).await;
    let check_gemini = |sent: &Value| {
        assert!(sent.get("prompt").is_none(), "{sent}");
        assert_eq!(
            sent["systemInstruction"]["parts"][0]["text"], "You greet Ann in a warm tone.",
            "{sent}"
        );
        assert_eq!(sent["generationConfig"]["temperature"], 0.2, "{sent}");
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 50, "{sent}");
        // Billing labels name the prompt version.
        assert_eq!(sent["labels"]["tollgate_prompt"], "greet", "{sent}");
        assert_eq!(sent["labels"]["tollgate_prompt_version"], "1", "{sent}");
    };

    // OpenAI's surface.
    let body = format!(
        r#"{{"prompt":{{"id":"greet","variables":{GREET_VARS}}},"messages":[{{"role":"user","content":"caller turn"}}]}}"#
    );
    let headers = chat_ok(&gw, &body, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    let sent = upstream_body(&mock);
    check_gemini(&sent);
    // Two user turns in a row may be merged into one; the text is what matters.
    let texts: Vec<&str> = sent["contents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["parts"].as_array().unwrap())
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert_eq!(texts, ["How are you?", "caller turn"], "{sent}");

    // The native surface.
    let native = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"caller turn"}}]}}],"prompt":{{"id":"greet","variables":{GREET_VARS}}}}}"#
    );
    let (status, headers, text) = call(gw.api_addr, post(NATIVE_M, &native, &[])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    let sent = upstream_body(&mock);
    check_gemini(&sent);

    // countTokens with a prompt: the count covers the rendered request, or the gateway says
    // it cannot render there; never Tollgate's `prompt` field passed to Vertex AI as is.
    let before = mock.stats().requests();
    let count_path = "/v1/publishers/google/models/m:countTokens";
    let (status, _, text) = call(gw.api_addr, post(count_path, &native, &[])).await;
    if status == StatusCode::OK {
        let sent = upstream_body(&mock);
        assert!(
            sent.get("prompt").is_none(),
            "`prompt` sent to Vertex AI: {sent}"
        );
        assert!(
            sent.to_string().contains("You greet Ann"),
            "the rendered prompt is counted: {sent}"
        );
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_google_error(&text, 400, "INVALID_ARGUMENT");
        assert!(text.contains("prompt"), "{text}");
        assert_eq!(
            mock.stats().requests(),
            before,
            "refused by the gateway, not by Vertex AI: {text}"
        );
    }
}
