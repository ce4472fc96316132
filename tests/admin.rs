//! The admin listener: liveness, readiness, and metrics that promtool accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::StatusCode;
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

#[tokio::test]
async fn health_and_readiness() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let (status, _, body) = call(gw.admin_addr, get("/healthz", &[])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, body) = call(gw.admin_addr, get("/readyz", &[])).await;
    assert_eq!(status, StatusCode::OK);
    let version = gw.shared.live.load().version.clone();
    assert_eq!(body, format!("ready config_version={version}\n"));
    let (status, _, body) = call(gw.admin_addr, get("/nope", &[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&body, "unknown_url");
    // The admin surface is not on the API listener.
    let (status, _, _) = call(gw.api_addr, get("/metrics", &[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    for _ in 0..3 {
        let (status, _, _) = chat(&gw, r#"{"model":"m"}"#).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = chat(&gw, r#"{"model":"zzz"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, text) = call(gw.admin_addr, get("/metrics", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_requests_total{route=\"m\",version=\"default\",tenant=\"anonymous\",status_class=\"2xx\",error_type=\"\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_requests_total{route=\"\",version=\"\",tenant=\"anonymous\",status_class=\"4xx\",error_type=\"model_not_found\"}"
        ),
        1.0
    );
    let labels = [("route", "m"), ("version", "default")];
    assert_eq!(
        sum_where(&text, "gen_ai_server_request_duration_count", &labels),
        3.0
    );
    assert!(text.contains(
        "gen_ai_server_request_duration_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"self_hosted\",gen_ai_request_model=\"m\",route=\"m\",version=\"default\"} 3\n"
    ), "{text}");
    // The overhead of every request, routed or not, and none left in flight.
    assert_eq!(
        sum_where(&text, "tollgate_gateway_overhead_seconds_count", &labels),
        3.0
    );
    assert_eq!(
        sum_where(
            &text,
            "tollgate_gateway_overhead_seconds_count",
            &[("route", "")]
        ),
        1.0
    );
    assert_eq!(sample(&text, "tollgate_requests_in_flight"), 0.0);
    assert_eq!(
        sum_where(&text, "tollgate_upstream_attempts_total", &labels),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_request_errors_total{code=\"model_not_found\",fault=\"client\"}"
        ),
        1.0
    );
    let version = gw.shared.live.load().version.clone();
    assert_eq!(
        sample(
            &text,
            &format!("tollgate_config_info{{version=\"{version}\"}}")
        ),
        1.0
    );
}

/// A gateway that has seen requests of every kind, so every family has series: whole
/// answers, streams, embeddings, a client error, and a failed attempt retried at a fallback.
async fn after_varied_traffic() -> (Vec<MockServer>, Gateway) {
    let healthy = MockServer::start(MockConfig::default()).await.unwrap();
    let broken = mock_failing_with(503).await;
    let extra = format!(
        "  broken:\n    type: openai\n    base_url: {}\nauth:\n  enabled: false\nroutes:\n  m:\n    provider: mock\n  demo:\n    provider: demo\n  f:\n    versions:\n      main: {{provider: broken, weight: 1}}\n      backup: {{provider: mock, weight: 0}}\n    fallbacks: [backup]\n    retry: {{backoff: 1ms, max_backoff: 1ms}}\n\
         prompts:\n  dir: {}/config/prompts\n  labels:\n    support-answer: {{production: 1}}\n",
        broken.base_url(),
        env!("CARGO_MANIFEST_DIR"),
    );
    let gw = gateway(&config(&healthy.base_url(), &extra)).await;
    chat(&gw, r#"{"model":"m"}"#).await;
    chat(&gw, r#"{"model":"m","stream":true}"#).await;
    chat(&gw, r#"{"model":"nope"}"#).await;
    // A prompt request, and one with a variable missing: the prompt series get samples.
    for variables in [r#"{"product":"P","question":"q"}"#, "{}"] {
        let body = format!(
            r#"{{"model":"m","prompt":{{"id":"support-answer","variables":{variables}}}}}"#
        );
        chat(&gw, &body).await;
    }
    let (status, _, _) = chat(&gw, r#"{"model":"f"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        gw.api_addr,
        post("/v1/embeddings", r#"{"model":"m","input":"x"}"#, &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    (vec![healthy, broken], gw)
}

/// The test command (`scripts/test`) installs promtool; set TOLLGATE_REQUIRE_TOOLS=1 to make
/// its absence a failure rather than a skip.
fn promtool() -> Option<std::path::PathBuf> {
    let found = which("promtool").ok();
    if found.is_none() {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_TOOLS").is_none()
                && std::env::var_os("CI").is_none(),
            "promtool is required here; install Debian's `prometheus` package"
        );
        eprintln!("skipping: promtool not installed");
    }
    found
}

/// `promtool check metrics` must accept the exposition with no lint findings.
#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = promtool() else {
        return;
    };
    let (_mocks, gw) = after_varied_traffic().await;
    let text = metrics(&gw).await;
    for family in [
        "gen_ai_client_token_usage_bucket",
        "gen_ai_server_request_duration_bucket",
        "gen_ai_server_time_to_first_token_bucket",
        "gen_ai_server_time_per_output_token_bucket",
        "gen_ai_client_operation_duration_bucket",
        "tollgate_gateway_overhead_seconds_bucket",
        "tollgate_upstream_fallbacks_total",
        "tollgate_upstream_retries_total",
        "tollgate_finish_reasons_total",
    ] {
        assert!(
            text.contains(&format!("\n{family}{{")),
            "no {family} series:\n{text}"
        );
    }
    let (code, out, err) = run_process(&promtool, &["check", "metrics"], &text);
    assert_eq!(code, 0, "promtool: {out}{err}\n{text}");
}

/// The Grafana dashboard parses (every query through promtool) and every metric it
/// queries is one the gateway exposes.
#[tokio::test]
async fn the_grafana_dashboard_queries_metrics_that_exist() {
    if promtool().is_none() {
        return;
    }
    let (_mocks, gw) = after_varied_traffic().await;
    let text = metrics(&gw).await;
    let file = std::env::temp_dir().join(format!("tollgate-metrics-{}.txt", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/check_dashboard.py"))
        .arg(format!("{root}/config/grafana/tollgate.json"))
        .arg("--metrics")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or(())
}

/// The number of sample lines in a metrics text.
fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

#[tokio::test]
async fn request_strings_never_become_labels() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    // Warm every series an unknown model, a bad pin and a bad path can touch once.
    for body in [
        r#"{"model":"warm"}"#,
        r#"{"model":"m@warm"}"#,
        r#"{"model":"m","prompt":{"id":"warm"}}"#,
    ] {
        chat(&gw, body).await;
    }
    call(gw.api_addr, post("/v1/warm", "{}", &[])).await;
    let before = series_count(&metrics(&gw).await);
    let mut rng = fastrand::Rng::with_seed(17);
    for _ in 0..50 {
        let word: String = (0..12).map(|_| rng.alphanumeric()).collect();
        let (status, _, _) = chat(&gw, &format!(r#"{{"model":"{word}","user":"{word}"}}"#)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        chat(&gw, &format!(r#"{{"model":"m@{word}"}}"#)).await;
        let (status, _, _) = chat(
            &gw,
            &format!(r#"{{"model":"m","prompt":{{"id":"{word}"}}}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        call(
            gw.api_addr,
            post(&format!("/v1/{word}"), "{}", &[("x-user-id", &word)]),
        )
        .await;
    }
    let text = metrics(&gw).await;
    assert_eq!(
        series_count(&text),
        before,
        "50 random models, versions, prompts and paths added no series"
    );
}
