//! Request limits end to end: requests per second and minute on each place a limit attaches
//! (tenant, key, route, tenant on a route, version) and combined, the 429 in both dialects and
//! the `x-ratelimit-*` headers, buckets across a reload, metrics, and upstream 429s kept apart
//! from client limits. Windows are a minute or more, so nothing refills during a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::limits::*;
use common::*;
use http::StatusCode;
use tollgate::auth::hash_key;
use tollgate::config::Config;
use tollgate::server::Gateway;
use tollgate_mock::{Fault, MockConfig, MockServer};

const OPEN: &str = "auth:\n  enabled: false\n";
const HELLO: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Say hello"}]}]}"#;

/// A gateway with auth off in front of a default mock, with `routes` (YAML under `routes:`).
async fn open_gateway(routes: &str) -> (MockServer, Gateway) {
    mock_and_gateway_with(MockConfig::default(), &format!("{OPEN}routes:\n{routes}")).await
}

/// Tenants (`name: [key, ...] extra-yaml`), all allowed every model, then `routes`.
fn keyed_config(tenants: &[(&str, &[&str], &str)], routes: &str) -> String {
    let mut yaml = String::from("tenants:\n");
    for (name, keys, extra) in tenants {
        let hashes: Vec<String> = keys
            .iter()
            .map(|k| format!("\"{}\"", hash_key(k)))
            .collect();
        yaml.push_str(&format!(
            "  - name: {name}\n    key_hashes: [{}]\n    models: [\"*\"]\n{extra}",
            hashes.join(", ")
        ));
    }
    format!("{yaml}routes:\n{routes}")
}

/// Sends a chat `body` presenting `key`.
async fn keyed_call(gw: &Gateway, key: &str, body: &str) -> (StatusCode, http::HeaderMap, String) {
    call(gw.api_addr, keyed(key, body)).await
}

/// Asserts a 429 from Tollgate's own limit `limit`, rule `rule`, in OpenAI's format.
fn assert_refused(
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &str,
    limit: &str,
    rule: &str,
) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error = assert_openai_error(body, "rate_limit_exceeded");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{rule} of {limit}")),
        "{message} names {rule} of {limit}"
    );
    assert_eq!(headers["x-tollgate-error-source"], "policy");
}

#[tokio::test]
async fn requests_per_minute_count_down_then_refuse_in_both_dialects() {
    let routes = "  m:\n    provider: mock\n    limits: {requests_per_minute: 3}\n  \
                  g:\n    provider: mock\n    limits: {requests_per_minute: 1}\n";
    let (mock, gw) = open_gateway(routes).await;
    for (taken, left) in [(1, 2), (2, 1), (3, 0)] {
        let (status, headers, body) = chat(&gw, &chat_body("m", "")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(standing(&headers, "requests"), (3, left));
        // Each request holds a third of the window (20 s) until it drains.
        let reset = reset(&headers, "requests");
        assert!(
            reset <= Duration::from_secs(20 * taken) && reset > Duration::from_secs(20 * taken - 5),
            "{reset:?}"
        );
        assert!(
            !headers.contains_key("x-ratelimit-limit-tokens"),
            "no token rule applies"
        );
    }
    let (status, headers, body) = chat(&gw, &chat_body("m", "")).await;
    assert_refused(status, &headers, &body, "route:m", "requests_per_minute");
    assert_eq!(json(&body)["error"]["param"], serde_json::Value::Null);
    assert!((1..=20).contains(&retry_after(&headers)), "{headers:?}");
    assert_eq!(standing(&headers, "requests"), (3, 0));
    assert!(reset(&headers, "requests") > Duration::from_secs(55));
    assert_eq!(
        mock.stats().requests(),
        3,
        "a refusal never reaches the upstream"
    );

    // The Vertex-native surface: the same limits, refused in Google's dialect.
    let path = "/v1/publishers/google/models/g:generateContent";
    let (status, headers, body) = call(gw.api_addr, post(path, HELLO, &[])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(standing(&headers, "requests"), (1, 0));
    let (status, headers, body) = call(gw.api_addr, post(path, HELLO, &[])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error = assert_google_error(&body, 429, "RESOURCE_EXHAUSTED");
    assert_eq!(headers["x-tollgate-error-source"], "policy");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_minute of route:g"),
        "{body}"
    );
    assert!((1..=60).contains(&retry_after(&headers)));
    assert_eq!(standing(&headers, "requests"), (1, 0));
    assert_eq!(mock.stats().requests(), 4);
}

#[tokio::test]
async fn requests_per_second_tell_the_caller_to_come_back_within_the_second() {
    let (_mock, gw) =
        open_gateway("  d:\n    provider: demo\n    limits: {requests_per_second: 1}\n").await;
    let (status, headers, _) = chat(&gw, &chat_body("d", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(standing(&headers, "requests"), (1, 0));
    assert!(reset(&headers, "requests") <= Duration::from_secs(1));
    let (status, headers, body) = chat(&gw, &chat_body("d", "")).await;
    assert_refused(status, &headers, &body, "route:d", "requests_per_second");
    assert_eq!(retry_after(&headers), 1, "under a second, rounded up");
    assert!(reset(&headers, "requests") <= Duration::from_secs(1));
    // That waiting the retry-after is enough (it is rounded up) is shown with controlled
    // time by the unit tests of `ratelimit::gcra`: no sleeping here.
}

#[tokio::test]
async fn a_tenant_limit_is_shared_by_all_its_keys() {
    let tenants: &[(&str, &[&str], &str)] = &[(
        "team",
        &["sk-team-1", "sk-team-2"],
        "    limits: {requests_per_minute: 3}\n",
    )];
    let yaml = keyed_config(tenants, "  d:\n    provider: demo\n");
    let (_mock, gw) = mock_and_gateway_with(MockConfig::default(), &yaml).await;
    let body = chat_body("d", "");
    for (key, left) in [("sk-team-1", 2), ("sk-team-2", 1), ("sk-team-1", 0)] {
        let (status, headers, text) = keyed_call(&gw, key, &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(standing(&headers, "requests"), (3, left), "{key}");
    }
    for key in ["sk-team-2", "sk-team-1"] {
        let (status, headers, text) = keyed_call(&gw, key, &body).await;
        assert_refused(
            status,
            &headers,
            &text,
            "tenant:team",
            "requests_per_minute",
        );
    }
}

#[tokio::test]
async fn key_limits_give_each_key_its_own_buckets() {
    let tenants: &[(&str, &[&str], &str)] = &[(
        "solo",
        &["sk-solo-1", "sk-solo-2"],
        "    key_limits: {requests_per_minute: 2}\n",
    )];
    let yaml = keyed_config(tenants, "  d:\n    provider: demo\n");
    let (_mock, gw) = mock_and_gateway_with(MockConfig::default(), &yaml).await;
    let body = chat_body("d", "");
    for key in ["sk-solo-1", "sk-solo-2"] {
        for left in [1, 0] {
            let (status, headers, text) = keyed_call(&gw, key, &body).await;
            assert_eq!(status, StatusCode::OK, "{key}: {text}");
            assert_eq!(standing(&headers, "requests"), (2, left), "{key}");
        }
        let (status, headers, text) = keyed_call(&gw, key, &body).await;
        assert_refused(
            status,
            &headers,
            &text,
            // A key's limit is named by the first 8 hex digits of its hash.
            &format!("key:solo#{}", &tollgate::auth::hash_key(key)[..8]),
            "requests_per_minute",
        );
    }
}

#[tokio::test]
async fn tenant_limits_on_a_route_give_each_tenant_its_own_buckets() {
    let tenants: &[(&str, &[&str], &str)] = &[("one", &["sk-one"], ""), ("two", &["sk-two"], "")];
    let routes = "  a:\n    provider: demo\n    tenant_limits: {requests_per_minute: 2}\n  b:\n    provider: demo\n";
    let (_mock, gw) =
        mock_and_gateway_with(MockConfig::default(), &keyed_config(tenants, routes)).await;
    for left in [1, 0] {
        let (status, headers, text) = keyed_call(&gw, "sk-one", &chat_body("a", "")).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(standing(&headers, "requests"), (2, left));
    }
    let (status, headers, text) = keyed_call(&gw, "sk-one", &chat_body("a", "")).await;
    assert_refused(
        status,
        &headers,
        &text,
        "tenant_route:one/a",
        "requests_per_minute",
    );
    // The other tenant has its own buckets on the route.
    let (status, headers, text) = keyed_call(&gw, "sk-two", &chat_body("a", "")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(standing(&headers, "requests"), (2, 1));
    // Another route is not limited at all.
    for _ in 0..3 {
        let (status, headers, text) = keyed_call(&gw, "sk-one", &chat_body("b", "")).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_no_ratelimit_headers(&headers);
    }
}

#[tokio::test]
async fn version_limits_apply_to_the_chosen_or_pinned_version_only() {
    let routes = "  v:\n    versions:\n      \
                  v1: {provider: demo, weight: 1, limits: {requests_per_minute: 1}}\n      \
                  v2: {provider: demo, weight: 0}\n";
    let (_mock, gw) = open_gateway(routes).await;
    let (status, headers, _) = chat(&gw, &chat_body("v", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-tollgate-route-version"], "v1");
    assert_eq!(standing(&headers, "requests"), (1, 0));
    for model in ["v", "v@v1"] {
        let (status, headers, body) = chat(&gw, &chat_body(model, "")).await;
        assert_refused(
            status,
            &headers,
            &body,
            "version:v/v1",
            "requests_per_minute",
        );
        assert_eq!(headers["x-tollgate-route-version"], "v1", "{model}");
    }
    let (status, headers, body) = chat(&gw, &chat_body("v@v2", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_ratelimit_headers(&headers);
}

#[tokio::test]
async fn a_version_limit_also_holds_for_requests_that_fall_back_to_it() {
    let bad = mock_failing_with(503).await;
    let good = MockServer::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n{OPEN}\
         providers:\n  bad:\n    type: openai\n    base_url: {}\n  good:\n    type: openai\n    base_url: {}\n\
         routes:\n  f:\n    versions:\n      primary: {{provider: bad, weight: 1}}\n      \
         backup: {{provider: good, weight: 0, limits: {{requests_per_minute: 1}}}}\n    \
         fallbacks: [backup]\n    retry: {{backoff: 1ms, max_backoff: 50ms}}\n",
        bad.base_url(),
        good.base_url()
    );
    let gw = gateway(&yaml).await;
    let mut served_by_backup = 0;
    for _ in 0..3 {
        let (status, headers, _) = chat(&gw, &chat_body("f", "")).await;
        if status == StatusCode::OK && headers["x-tollgate-route-version"] == "backup" {
            served_by_backup += 1;
        }
    }
    assert_eq!(
        (served_by_backup, good.stats().requests()),
        (1, 1),
        "backup allows 1 request a minute, however requests reach it"
    );
}

/// A fallback attempt that failed frees its place in its version's limit when the route
/// tries that version again: only the last attempt's answer is the request's.
#[tokio::test]
async fn a_failed_fallback_attempt_gives_back_its_place_in_flight() {
    let bad = mock_failing_with(503).await;
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n{OPEN}\
         providers:\n  bad:\n    type: openai\n    base_url: {}\n\
         routes:\n  f:\n    versions:\n      primary: {{provider: bad, weight: 1}}\n      \
         backup: {{provider: bad, weight: 0, limits: {{concurrent: 1}}}}\n    \
         fallbacks: [backup]\n    retry: {{max_attempts: 3, backoff: 1ms, max_backoff: 50ms}}\n",
        bad.base_url()
    );
    let gw = gateway(&yaml).await;
    let (status, _, text) = chat(&gw, &chat_body("f", "")).await;
    // Three attempts went upstream (primary, backup, backup again): the upstream's 503 is the
    // answer, not a refusal by backup's limit of one in flight.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(bad.stats().requests(), 3);
}

/// The chosen version's limit goes with its attempt: when that attempt fails and a fallback
/// answers, the version is refunded at once and never charged for the fallback's tokens.
#[tokio::test]
async fn a_failed_first_version_is_not_charged_for_its_fallbacks_answer() {
    let bad = mock_failing_with(503).await;
    let good = MockServer::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n{OPEN}\
         providers:\n  bad:\n    type: openai\n    base_url: {}\n  good:\n    type: openai\n    base_url: {}\n\
         routes:\n  f:\n    versions:\n      \
         primary: {{provider: bad, weight: 1, limits: {{tokens_per_day: 100000}}}}\n      \
         backup: {{provider: good, weight: 0}}\n    \
         fallbacks: [backup]\n    retry: {{backoff: 1ms, max_backoff: 50ms}}\n",
        bad.base_url(),
        good.base_url()
    );
    let gw = gateway(&yaml).await;
    let body = chat_body("f", r#","max_tokens":100"#);
    let mut seen = Vec::new();
    for n in 1..=3 {
        let (status, headers, text) = chat(&gw, &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(headers["x-tollgate-route-version"], "backup");
        recorded(&gw, &[("route", "f")], f64::from(n)).await;
        seen.push(standing(&headers, "tokens"));
    }
    // Each request sees the primary's budget less its own estimate only: nothing stayed
    // charged from the requests before it.
    assert_eq!(seen[0], (100_000, 100_000 - INPUT_ESTIMATE - 100));
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
}

#[tokio::test]
async fn combined_limits_report_the_tightest_and_a_refusal_takes_nothing() {
    let tenants: &[(&str, &[&str], &str)] = &[(
        "team",
        &["sk-team"],
        "    limits: {requests_per_minute: 10}\n",
    )];
    let routes = "  r1:\n    provider: demo\n    limits: {requests_per_minute: 2}\n  r2:\n    provider: demo\n";
    let (_mock, gw) =
        mock_and_gateway_with(MockConfig::default(), &keyed_config(tenants, routes)).await;
    // The route's 2 leave less room than the tenant's 10: the route's rule is reported.
    for left in [1, 0] {
        let (status, headers, text) = keyed_call(&gw, "sk-team", &chat_body("r1", "")).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(standing(&headers, "requests"), (2, left));
    }
    for _ in 0..3 {
        let (status, headers, text) = keyed_call(&gw, "sk-team", &chat_body("r1", "")).await;
        assert_refused(status, &headers, &text, "route:r1", "requests_per_minute");
        assert_eq!(standing(&headers, "requests"), (2, 0));
    }
    // All or nothing: the three refusals took nothing from the tenant's 10.
    let (status, headers, text) = keyed_call(&gw, "sk-team", &chat_body("r2", "")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(standing(&headers, "requests"), (10, 7));
}

/// A directory removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("tollgate-ratelimit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RELOAD_TOKEN: &str = "ratelimit-reload-admin-token-0123";

/// A config file in `dir` (with the admin token beside it): `rest` after the listeners and
/// the `mock` and `demo` providers. Returns its path and text.
fn write_config(dir: &TempDir, mock: &MockServer, rest: &str) -> (PathBuf, String) {
    let token = dir.0.join("token");
    std::fs::write(&token, format!("{RELOAD_TOKEN}\n")).unwrap();
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\n  header_read_timeout: 1s\nadmin:\n  listen: 127.0.0.1:0\n  token_file: {}\n\
         providers:\n  mock:\n    type: openai\n    base_url: {}\n  demo:\n    type: demo\n{rest}",
        token.display(),
        mock.base_url()
    );
    let path = dir.0.join("tollgate.yaml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

async fn start_from(path: &Path) -> Gateway {
    let (config, text) = Config::from_file(path).unwrap();
    Gateway::start_from_file(&config, &text, path)
        .await
        .unwrap()
}

/// Reloads through the admin API and waits (bounded) until `text` is live (the file watcher
/// may get there first, when the API answers `unchanged`).
async fn reload_to(gw: &Gateway, text: &str) {
    let bearer = format!("Bearer {RELOAD_TOKEN}");
    let (status, _, body) = call(
        gw.admin_addr,
        post("/admin/reload", "", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = json(&body)["result"].as_str().unwrap().to_owned();
    assert!(result == "swapped" || result == "unchanged", "{body}");
    let config = Config::from_yaml(text).unwrap();
    let metrics = std::sync::Arc::new(tollgate::telemetry::metrics::Metrics::new());
    let version = tollgate::snapshot::compile(&config, text, &metrics)
        .unwrap()
        .version;
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.shared.live.load().version != version {
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_reload_keeps_unchanged_buckets_and_rebuilds_changed_ones() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = TempDir::new("reload");
    let routes = |b_limit: u32| {
        format!(
            "{OPEN}routes:\n  a:\n    provider: mock\n    limits: {{requests_per_minute: 5}}\n  \
             b:\n    provider: mock\n    limits: {{requests_per_minute: {b_limit}}}\n"
        )
    };
    let (path, _) = write_config(&dir, &mock, &routes(5));
    let gw = start_from(&path).await;
    for alias in ["a", "b"] {
        for left in [4, 3] {
            let (status, headers, _) = chat(&gw, &chat_body(alias, "")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(standing(&headers, "requests"), (5, left), "{alias}");
        }
    }

    // `a` is unchanged: its bucket carries on. `b` changed: a fresh one.
    let (_, second) = write_config(&dir, &mock, &routes(6));
    reload_to(&gw, &second).await;
    let (_, headers, _) = chat(&gw, &chat_body("a", "")).await;
    assert_eq!(standing(&headers, "requests"), (5, 2));
    let (_, headers, _) = chat(&gw, &chat_body("b", "")).await;
    assert_eq!(standing(&headers, "requests"), (6, 5));

    // A reload that changes nothing keeps every bucket.
    reload_to(&gw, &second).await;
    let (_, headers, _) = chat(&gw, &chat_body("a", "")).await;
    assert_eq!(standing(&headers, "requests"), (5, 1));
    let (_, headers, _) = chat(&gw, &chat_body("b", "")).await;
    assert_eq!(standing(&headers, "requests"), (6, 4));
}

#[tokio::test]
async fn key_buckets_follow_their_key_across_a_reload() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = TempDir::new("keys");
    let tenant = |keys: &'static [&'static str]| {
        keyed_config(
            &[("team", keys, "    key_limits: {requests_per_minute: 5}\n")],
            "  d:\n    provider: demo\n",
        )
    };
    let (path, _) = write_config(&dir, &mock, &tenant(&["sk-old"]));
    let gw = start_from(&path).await;
    for left in [4, 3] {
        let (_, headers, _) = keyed_call(&gw, "sk-old", &chat_body("d", "")).await;
        assert_eq!(standing(&headers, "requests"), (5, left));
    }
    // A new key listed first: the old key keeps its bucket, the new one gets a fresh one.
    let (_, second) = write_config(&dir, &mock, &tenant(&["sk-new", "sk-old"]));
    reload_to(&gw, &second).await;
    let (_, headers, _) = keyed_call(&gw, "sk-old", &chat_body("d", "")).await;
    assert_eq!(standing(&headers, "requests"), (5, 2), "sk-old carries on");
    let (_, headers, _) = keyed_call(&gw, "sk-new", &chat_body("d", "")).await;
    assert_eq!(
        standing(&headers, "requests"),
        (5, 4),
        "sk-new starts afresh"
    );
}

#[tokio::test]
async fn refusals_are_counted_by_limit_and_rule_and_under_the_route() {
    let tenants: &[(&str, &[&str], &str)] = &[("team", &["sk-team"], "")];
    let routes = "  m:\n    provider: demo\n    limits: {requests_per_minute: 1, tokens_per_day: 100000}\n  \
                  v:\n    versions:\n      v1: {provider: demo, limits: {requests_per_minute: 1}}\n";
    let (_mock, gw) =
        mock_and_gateway_with(MockConfig::default(), &keyed_config(tenants, routes)).await;
    for (alias, tries) in [("m", 3), ("v", 2)] {
        for _ in 0..tries {
            keyed_call(&gw, "sk-team", &chat_body(alias, "")).await;
        }
    }
    let text = metrics(&gw).await;
    let rejections = |limit: &str, rule: &str| {
        format!("tollgate_ratelimit_rejections_total{{limit=\"{limit}\",rule=\"{rule}\"}}")
    };
    assert_eq!(
        sample(&text, &rejections("route:m", "requests_per_minute")),
        2.0
    );
    assert_eq!(
        sample(&text, &rejections("version:v/v1", "requests_per_minute")),
        1.0
    );
    assert!(
        text.contains(&format!("{} 0\n", rejections("route:m", "tokens_per_day"))),
        "a rule that refused nothing is still listed:\n{text}"
    );
    for (route, version, refused) in [("m", "default", 2.0), ("v", "v1", 1.0)] {
        let labels = [
            ("route", route),
            ("version", version),
            ("tenant", "team"),
            ("status_class", "4xx"),
            ("error_type", "rate_limit_exceeded"),
        ];
        assert_eq!(
            sum_where(&text, "tollgate_requests_total", &labels),
            refused,
            "{route}"
        );
        let ok = [
            ("route", route),
            ("tenant", "team"),
            ("status_class", "2xx"),
        ];
        assert_eq!(
            sum_where(&text, "tollgate_requests_total", &ok),
            1.0,
            "{route}"
        );
    }
}

#[tokio::test]
async fn upstream_429s_are_not_client_limits() {
    let bad = MockServer::start(MockConfig {
        fault: Some(Fault::Status {
            code: 429,
            retry_after: Some(1),
            body: None,
        }),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let good = MockServer::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n{OPEN}\
         providers:\n  bad:\n    type: openai\n    base_url: {}\n  good:\n    type: openai\n    base_url: {}\n\
         routes:\n  n:\n    provider: bad\n    limits: {{requests_per_minute: 10}}\n    \
         retry: {{max_attempts: 2, backoff: 1ms, max_backoff: 2s}}\n  \
         f:\n    limits: {{requests_per_minute: 10}}\n    versions:\n      \
         primary: {{provider: bad, weight: 1}}\n      backup: {{provider: good, weight: 0}}\n    \
         fallbacks: [backup]\n    retry: {{backoff: 1ms, max_backoff: 50ms}}\n",
        bad.base_url(),
        good.base_url()
    );
    let gw = gateway(&yaml).await;
    // Retried once after the upstream's `retry-after`, then its 429 passes through as its own.
    let (status, headers, body) = chat(&gw, &chat_body("n", "")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // The upstream's own JSON error passes through as it is (an OpenAI-style upstream says
    // `rate_limit_exceeded` too); the source header and the metrics tell the two apart.
    let error = assert_openai_error(&body, "rate_limit_exceeded");
    assert_eq!(error["error"]["message"], "mock fault: status 429");
    assert_eq!(headers["x-tollgate-error-source"], "upstream");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(bad.stats().requests(), 2);
    assert_eq!(
        standing(&headers, "requests"),
        (10, 9),
        "one admission, whatever the attempts"
    );
    // With a fallback, the other version answers.
    let (status, headers, body) = chat(&gw, &chat_body("f", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-tollgate-route-version"], "backup");
    assert_eq!((bad.stats().requests(), good.stats().requests()), (3, 1));
    assert_eq!(standing(&headers, "requests"), (10, 9));

    let text = metrics(&gw).await;
    for limit in ["route:n", "route:f"] {
        let series = format!(
            "tollgate_ratelimit_rejections_total{{limit=\"{limit}\",rule=\"requests_per_minute\"}}"
        );
        assert!(text.contains(&format!("{series} 0\n")), "{text}");
    }
    let policy = [("error_type", "rate_limit_exceeded")];
    assert_eq!(sum_where(&text, "tollgate_requests_total", &policy), 0.0);
    // An upstream's 429 is reported apart from other upstream error statuses, whatever its
    // body: both attempts' 429s end as one request with `upstream_rate_limited`.
    let upstream = [("route", "n"), ("error_type", "upstream_rate_limited")];
    assert_eq!(
        sum_where(&text, "tollgate_requests_total", &upstream),
        1.0,
        "an upstream 429 with an OpenAI error body is counted as upstream_rate_limited"
    );
}

#[tokio::test]
async fn without_limits_no_ratelimit_headers_are_sent() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    for body in [
        chat_body("m", ""),
        chat_body("d", ""),
        chat_body("d", r#","stream":true"#),
    ] {
        let (status, headers, text) = chat(&gw, &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_no_ratelimit_headers(&headers);
    }
    let path = "/v1/publishers/google/models/m:generateContent";
    let (status, headers, text) = call(gw.api_addr, post(path, HELLO, &[])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_no_ratelimit_headers(&headers);
    let (status, headers, _) = chat(&gw, &chat_body("nope", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_no_ratelimit_headers(&headers);
}
