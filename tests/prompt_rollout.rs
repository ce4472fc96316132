//! Rolling out a prompt version: route canaries by prompt version (sticky and not), live
//! reload adding a version and moving a label under load, and immutable served versions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::prompts::*;
use common::*;
use http::StatusCode;
use serde_json::Value;
use tollgate::config::Config;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

/// The prompt version a request got, asserting 200.
async fn prompt_version_of(gw: &Gateway, body: &str) -> String {
    header(&chat_ok(gw, body, &[]).await, "x-tollgate-prompt-version").to_owned()
}

#[tokio::test]
async fn a_route_canaries_prompt_versions() {
    let (_dir, mock, gw) = prompt_gateway("canary", OPEN).await;
    let users = 400;
    let mut first = Vec::with_capacity(users);
    for user in 0..users {
        let body = format!(r#"{{"model":"c","user":"user-{user}","prompt":{{"id":"p"}}}}"#);
        let version = prompt_version_of(&gw, &body).await;
        let system = &upstream_body(&mock)["messages"][0]["content"];
        match version.as_str() {
            "p@1" => assert_eq!(system, "p one"),
            "p@2" => assert_eq!(system, "p two"),
            other => panic!("{other}"),
        }
        first.push(version);
    }
    let on_2 = first.iter().filter(|v| *v == "p@2").count();
    // Expected 40 (10%); sticky picks are a fixed hash of the user, so this is no draw, and
    // the bounds are loose anyway.
    assert!((12..=80).contains(&on_2), "{on_2} of {users} users on p@2");
    // A user stays on their version.
    for (user, version) in first.iter().enumerate().take(60) {
        let body = format!(r#"{{"model":"c","user":"user-{user}","prompt":{{"id":"p"}}}}"#);
        for _ in 0..2 {
            assert_eq!(&prompt_version_of(&gw, &body).await, version, "user-{user}");
        }
    }

    // A version or a label named outright wins over the canary.
    let on_1_user = first.iter().position(|v| v == "p@1").unwrap();
    let on_2_user = first.iter().position(|v| v == "p@2").unwrap();
    for (user, pick, expected) in [
        (on_1_user, r#","version":"2""#, "p@2"),
        (on_2_user, r#","version":"1""#, "p@1"),
        (on_2_user, r#","label":"production""#, "p@1"),
    ] {
        let body = format!(r#"{{"model":"c","user":"user-{user}","prompt":{{"id":"p"{pick}}}}}"#);
        assert_eq!(prompt_version_of(&gw, &body).await, expected, "{body}");
    }
    // The header form follows the canary too.
    let (status, headers, text) = call(
        gw.api_addr,
        post(
            "/v1/chat/completions",
            &format!(r#"{{"model":"c","user":"user-{on_2_user}","messages":[]}}"#),
            &[("x-tollgate-prompt", "p")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "p@2");

    // A route that is not sticky splits by draw.
    let draws = 400;
    let mut on_2 = 0;
    for _ in 0..draws {
        if prompt_version_of(&gw, r#"{"model":"n","prompt":{"id":"p"}}"#).await == "p@2" {
            on_2 += 1;
        }
    }
    // Expected 40; the standard deviation is 6, so 12..=80 is more than four of them.
    assert!((12..=80).contains(&on_2), "{on_2} of {draws} draws on p@2");

    // A route without a canary for the prompt serves `production`.
    for _ in 0..20 {
        assert_eq!(
            prompt_version_of(&gw, r#"{"model":"m","prompt":{"id":"p"}}"#).await,
            "p@1"
        );
    }
}

const RELOAD_TOKEN: &str = "prompt-reload-admin-token-0123";

/// A config for [`live_reload_swaps_versions_under_load`]: the prompt folder beside it.
fn reload_config(mock: &MockServer, token: &Path, production: u32) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  header_read_timeout: 1s\nadmin:\n  listen: 127.0.0.1:0\n  token_file: {}\n\
         auth:\n  enabled: false\nproviders:\n  mock:\n    type: openai\n    base_url: {}\n\
         routes:\n  m:\n    provider: mock\n\
         prompts:\n  dir: prompts\n  labels:\n    greet: {{production: {production}}}\n",
        token.display(),
        mock.base_url()
    )
}

async fn admin_reload(gw: &Gateway) -> (StatusCode, Value) {
    let bearer = format!("Bearer {RELOAD_TOKEN}");
    let (status, _, body) = call(
        gw.admin_addr,
        post("/admin/reload", "", &[("authorization", &bearer)]),
    )
    .await;
    (status, json(&body))
}

async fn failed_reloads(gw: &Gateway) -> f64 {
    sample(
        &metrics(gw).await,
        "tollgate_config_reloads_total{result=\"failed\"}",
    )
}

/// Waits (bounded) until the mock has received `more` requests beyond what it has now.
async fn more_requests(mock: &MockServer, more: u64) {
    let target = mock.stats().requests() + more;
    tokio::time::timeout(WAIT, mock.stats().wait_requests(target))
        .await
        .expect("the load kept going");
}

/// The body of the request the mock recorded whose body contains `marker`.
fn recorded_with(mock: &MockServer, marker: &str) -> Value {
    let sent = mock
        .stats()
        .recorded()
        .into_iter()
        .rev()
        .find(|r| std::str::from_utf8(&r.body).unwrap().contains(marker))
        .unwrap_or_else(|| panic!("no recorded request with {marker}"));
    json(std::str::from_utf8(&sent.body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reload_swaps_versions_under_load() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = TempDir::new("reload");
    let token = dir.write("token", &format!("{RELOAD_TOKEN}\n"));
    dir.write("prompts/greet/1.yaml", GREET_1);
    let path = dir.write("tollgate.yaml", &reload_config(&mock, &token, 1));
    let (config, text) = Config::from_file(&path).unwrap();
    let gw = Gateway::start_from_file(&config, &text, &path)
        .await
        .unwrap();
    let addr = gw.api_addr;

    // Steady clients: whole answers and streams naming only the prompt, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let swapped = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let (sent, failed, stale, on_1, on_2) = (0, 1, 2, 3, 4);
    let clients: Vec<_> = (0..3)
        .map(|client| {
            let (stop, swapped, counts) = (stop.clone(), swapped.clone(), counts.clone());
            tokio::spawn(async move {
                for n in 0..20_000u32 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let stream = (n + client) % 2 == 1;
                    let body = format!(
                        r#"{{"stream":{stream},"prompt":{{"id":"greet","variables":{{"name":"c{client}","question":"q{n}"}}}}}}"#
                    );
                    let after_swap = swapped.load(Ordering::SeqCst);
                    let (status, headers, text) =
                        call(addr, post("/v1/chat/completions", &body, &[])).await;
                    let complete = if stream {
                        text.ends_with("data: [DONE]\n\n")
                    } else {
                        text.contains("chat.completion")
                    };
                    let version = headers
                        .get("x-tollgate-prompt-version")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    match version.as_str() {
                        "greet@1" => counts[on_1].fetch_add(1, Ordering::SeqCst),
                        "greet@2" => counts[on_2].fetch_add(1, Ordering::SeqCst),
                        _ => counts[failed].fetch_add(1, Ordering::SeqCst),
                    };
                    if status != StatusCode::OK || !complete {
                        counts[failed].fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed: {status} {text}");
                    }
                    if after_swap && version != "greet@2" {
                        counts[stale].fetch_add(1, Ordering::SeqCst);
                        eprintln!("stale after the swap: {version}");
                    }
                    counts[sent].fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    more_requests(&mock, 20).await;

    // A new version file: served as soon as the reload is done; `production` stays put.
    dir.write("prompts/greet/2.yaml", GREET_2);
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The watcher may have applied the change already.
    assert!(
        answer["result"] == "swapped" || answer["result"] == "unchanged",
        "{answer}"
    );
    let pinned = format!(r#"{{"prompt":{{"id":"greet","version":"2","variables":{GREET_VARS}}}}}"#);
    let headers = chat_ok(&gw, &pinned, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@2");
    let default = format!(r#"{{"prompt":{{"id":"greet","variables":{GREET_VARS}}}}}"#);
    let headers = chat_ok(&gw, &default, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    more_requests(&mock, 20).await;

    // `production` moves to 2 in the config: every request from then on gets greet@2.
    dir.write("tollgate.yaml", &reload_config(&mock, &token, 2));
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    swapped.store(true, Ordering::SeqCst);
    let serving = gw.shared.live.load().version.clone();
    for _ in 0..10 {
        let headers = chat_ok(&gw, &default, &[]).await;
        assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@2");
    }
    more_requests(&mock, 20).await;

    // Version 1 edited in place: refused, and the running snapshot keeps serving, old
    // greet@1 content included.
    let failed_before = failed_reloads(&gw).await;
    dir.write(
        "prompts/greet/1.yaml",
        &GREET_1.replace("You greet", "You warmly greet"),
    );
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["result"], "failed", "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("greet/1.yaml") && error.contains("content changed"),
        "{error}"
    );
    assert!(failed_reloads(&gw).await > failed_before);
    assert_eq!(gw.shared.live.load().version, serving);
    let pinned_1 = r#"{"prompt":{"id":"greet","version":"1","variables":{"name":"Pin","question":"pinned-after-refusal"}}}"#;
    let headers = chat_ok(&gw, pinned_1, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-version"), "greet@1");
    assert_eq!(
        recorded_with(&mock, "pinned-after-refusal")["messages"][0]["content"],
        "You greet Pin in a warm tone."
    );
    more_requests(&mock, 20).await;

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let count = |i: usize| counts[i].load(Ordering::SeqCst);
    assert!(count(sent) >= 60, "the clients kept going: {}", count(sent));
    assert_eq!(count(failed), 0, "no request failed across reloads");
    assert_eq!(count(stale), 0, "after the swap, only greet@2");
    assert!(count(on_1) > 0 && count(on_2) > 0);
    assert_eq!(count(on_1) + count(on_2), count(sent));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_served_version_stays_immutable_across_reloads() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = TempDir::new("ledger");
    let token = dir.write("token", &format!("{RELOAD_TOKEN}\n"));
    dir.write("prompts/greet/1.yaml", GREET_1);
    dir.write("prompts/greet/2.yaml", GREET_2);
    let path = dir.write("tollgate.yaml", &reload_config(&mock, &token, 1));
    let (config, text) = Config::from_file(&path).unwrap();
    let gw = Gateway::start_from_file(&config, &text, &path)
        .await
        .unwrap();
    let pinned_1 =
        format!(r#"{{"prompt":{{"id":"greet","version":"1","variables":{GREET_VARS}}}}}"#);
    let hash_1 = header(
        &chat_ok(&gw, &pinned_1, &[]).await,
        "x-tollgate-prompt-hash",
    )
    .to_owned();
    let serving = || gw.shared.live.load().version.clone();

    // Notes are not content: a new description or comment in version 1 applies.
    let noted = GREET_1.replace(
        "description: Greets someone, then answers their question.",
        "description: Greets someone (reviewed).\n# a comment",
    );
    let before = serving();
    dir.write("prompts/greet/1.yaml", &noted);
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_ne!(serving(), before, "a changed file is a new config version");
    let headers = chat_ok(&gw, &pinned_1, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-hash"), hash_1);
    let listing = listed(&gw, &[]).await;
    assert_eq!(
        listing[0]["versions"][0]["description"],
        "Greets someone (reviewed)."
    );

    // Version 1 retired: production on 2, the file gone.
    dir.write("tollgate.yaml", &reload_config(&mock, &token, 2));
    std::fs::remove_file(dir.path().join("prompts/greet/1.yaml")).unwrap();
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, text) = chat(&gw, &pinned_1).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert_openai_error(&text, "prompt_version_not_found");

    // Brought back with other content: still refused.
    let retired = serving();
    dir.write(
        "prompts/greet/1.yaml",
        &GREET_1.replace("You greet", "You warmly greet"),
    );
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("content changed"),
        "{answer}"
    );
    assert_eq!(serving(), retired);

    // A template that does not compile is refused too, naming its file.
    // (3.yaml first: every state a watcher may read on the way is refused.)
    dir.write(
        "prompts/greet/3.yaml",
        "variables:\n  a: {example: x}\nmessages:\n  - role: user\n    content: \"{{ a }} {{ b }}\"\n",
    );
    dir.write("prompts/greet/1.yaml", GREET_1);
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("greet/3.yaml") && error.contains("`b`"),
        "{error}"
    );
    assert_eq!(serving(), retired);

    // Back with its served content, version 1 is welcome.
    std::fs::remove_file(dir.path().join("prompts/greet/3.yaml")).unwrap();
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let headers = chat_ok(&gw, &pinned_1, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-prompt-hash"), hash_1);
    gw.shutdown().await;
}

/// A version a route's canary picks serves on that route, whatever model the version names
/// (or none): the canary is the route's, so its errors and traffic stay there.
#[tokio::test]
async fn a_canary_version_serves_on_the_canarying_route() {
    let dir = TempDir::new("canary-route");
    let message = "messages:\n  - role: user\n    content: hi\n";
    dir.write("prompts/q/1.yaml", &format!("model: a\n{message}"));
    dir.write("prompts/q/2.yaml", message);
    dir.write("prompts/q/3.yaml", &format!("model: b\n{message}"));
    let extra = format!(
        "auth:\n  enabled: false\nroutes:\n  a:\n    provider: mock\n    prompt_versions:\n      q: {{1: 0, 2: 50, 3: 50}}\n  b:\n    provider: mock\n\
         prompts:\n  dir: {}\n  labels:\n    q: {{production: 1}}\n",
        dir.path().join("prompts").display()
    );
    let (_mock, gw) = mock_and_gateway_with(MockConfig::default(), &extra).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let headers = chat_ok(&gw, r#"{"prompt":{"id":"q"}}"#, &[]).await;
        assert_eq!(header(&headers, "x-tollgate-route"), "a");
        seen.insert(header(&headers, "x-tollgate-prompt-version").to_owned());
    }
    assert!(seen.iter().all(|v| v == "q@2" || v == "q@3"), "{seen:?}");
    // Named outright, a version's own model still decides.
    let headers = chat_ok(&gw, r#"{"prompt":{"id":"q","version":"3"}}"#, &[]).await;
    assert_eq!(header(&headers, "x-tollgate-route"), "b");
}
