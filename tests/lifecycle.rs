//! Process lifecycle: graceful shutdown, the command line, and the access log of a real run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::StatusCode;
use tollgate_mock::MockConfig;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish_and_refuses_new_connections() {
    let paced = MockConfig {
        tokens: 20,
        inter_token: Duration::from_millis(10),
        ..MockConfig::default()
    };
    let (_mock, gw) = mock_and_gateway(paced).await;
    let api = gw.api_addr;
    let mut body = open_stream(api, r#"{"model":"m","stream":true}"#).await;
    let first = next_chunk(&mut body).await.unwrap();
    assert!(first.starts_with(b"data: "));

    let shutdown = tokio::spawn(gw.shutdown());
    // The stream started before shutdown runs to its natural end.
    let rest = all_chunks(&mut body).await;
    let text: String = rest
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown completes")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(api).await.is_err(),
        "listener is closed"
    );
}

#[tokio::test]
async fn shutdown_cuts_streams_that_outlive_the_grace_period() {
    let stalled = MockConfig {
        tokens: 5,
        fault: Some(tollgate_mock::Fault::StallAfter(1)),
        ..MockConfig::default()
    };
    let mock = tollgate_mock::MockServer::start(stalled).await.unwrap();
    let yaml = config(&mock.base_url(), OPEN_ROUTES).replace(
        "  header_read_timeout: 1s\n",
        "  header_read_timeout: 1s\n  shutdown_grace: 200ms\n",
    );
    let gw = gateway(&yaml).await;
    let mut body = open_stream(gw.api_addr, r#"{"model":"m","stream":true}"#).await;
    next_chunk(&mut body).await.unwrap();
    tokio::time::timeout(WAIT, gw.shutdown())
        .await
        .expect("grace period bounds shutdown");
    tokio::time::timeout(WAIT, mock.stats().wait_streams_cancelled(1))
        .await
        .expect("upstream released");
}

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    run_process(std::path::Path::new(BIN), args, stdin)
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn hash_key_prints_the_sha256_of_stdin_without_its_newline() {
    let (code, out, _) = run(&["hash-key"], "abc\n");
    assert_eq!(code, 0);
    assert_eq!(out.trim(), tollgate::auth::hash_key("abc"));
    let (code, _, err) = run(&["hash-key"], "");
    assert_ne!(code, 0);
    assert!(err.contains("no key"), "{err}");
}

#[test]
fn check_accepts_the_default_config_and_names_the_bad_key() {
    let (code, out, err) = run(&["check", "--config", "config/tollgate.yaml"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (config version"), "{out}");

    let bad = temp_file(
        "bad.yaml",
        "providers:\n  d:\n    type: demo\nroutes:\n  x:\n    provider: missing\n",
    );
    let (code, _, err) = run(&["check", "--config", bad.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("routes.x.provider"), "{err}");

    let typo = temp_file("typo.yaml", "server:\n  listn: 127.0.0.1:1\n");
    let (code, _, err) = run(&["check", "--config", typo.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("server") && err.contains("listn"), "{err}");

    let open = temp_file(
        "open.yaml",
        "server:\n  listen: 0.0.0.0:8080\nauth:\n  enabled: false\n",
    );
    let (code, _, err) = run(&["check", "--config", open.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("auth.enabled"), "{err}");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["hash-key", "--help"],
    ] {
        let (code, out, _) = run(args, "");
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage: tollgate"), "{args:?}: {out}");
    }
}

#[test]
fn the_default_config_serves_demo_on_loopback_without_auth() {
    let text = std::fs::read_to_string("config/tollgate.yaml").unwrap();
    assert_eq!(
        text,
        tollgate::cli::EMBEDDED_CONFIG,
        "the embedded default is the shipped file"
    );
    let (config, _) =
        tollgate::config::Config::from_file(std::path::Path::new("config/tollgate.yaml")).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    assert!(!config.auth.enabled);
    let metrics = std::sync::Arc::new(tollgate::telemetry::metrics::Metrics::new());
    let snapshot = tollgate::snapshot::compile(&config, &text, &metrics).unwrap();
    assert!(snapshot.routes.contains_key("demo"));
    // The embedded copy reads the prompts embedded beside it, and compiles the same.
    let mut embedded = tollgate::config::Config::from_yaml(&text).unwrap();
    embedded.prompts.as_mut().unwrap().embedded = true;
    let from_binary = tollgate::snapshot::compile(&embedded, &text, &metrics).unwrap();
    assert_eq!(from_binary.version, snapshot.version);
    assert!(from_binary.prompts.get("support-answer").is_some());
}

/// A real process: serves, writes one JSON access-log line per request with the stream's
/// facts, and exits 0 on SIGTERM.
#[tokio::test]
async fn binary_reads_tollgate_config_logs_json_per_request_and_exits_cleanly_on_sigterm() {
    let mock = tollgate_mock::MockServer::start(MockConfig {
        tokens: 4,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let api_port = free_port();
    let admin_port = free_port();
    let yaml = config(&mock.base_url(), OPEN_ROUTES)
        .replace(
            "listen: 127.0.0.1:0\n  header",
            &format!("listen: 127.0.0.1:{api_port}\n  header"),
        )
        .replace(
            "admin:\n  listen: 127.0.0.1:0",
            &format!("admin:\n  listen: 127.0.0.1:{admin_port}"),
        );
    // The upstream key comes from the environment, never from the file.
    let yaml = yaml.replace(
        &format!("    base_url: {}\n", mock.base_url()),
        &format!(
            "    base_url: {}\n    api_key_env: TOLLGATE_TEST_UPSTREAM_KEY\n",
            mock.base_url()
        ),
    );
    let path = temp_file("serve.yaml", &yaml);
    let mut child = Command::new(BIN)
        .args(["serve", "--log-format", "json"])
        .env("TOLLGATE_CONFIG", &path)
        .env("TOLLGATE_TEST_UPSTREAM_KEY", "sk-upstream-from-env")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Readiness: the process logs its listening line once both listeners are bound.
    let ready = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("tollgate listening"));
    assert!(ready.is_some(), "gateway never became ready");

    let api: std::net::SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let (status, _, _) = call(
        api,
        post(
            "/v1/chat/completions",
            r#"{"model":"m","stream":true}"#,
            &[("authorization", "Bearer sk-never-logged")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(api, post("/v1/chat/completions", "{", &[])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let pid = child.id().to_string();
    // SIGHUP reloads the config file; unchanged here, so the reload says so.
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = call(admin, get("/metrics", &[])).await.2;
        if sample(&text, "tollgate_config_reloads_total{result=\"unchanged\"}") == 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(
        mock.stats().recorded()[0].headers["authorization"],
        "Bearer sk-upstream-from-env"
    );
    for secret in ["sk-never-logged", "sk-upstream-from-env"] {
        assert!(
            !rest.iter().any(|l| l.contains(secret)),
            "no secret in logs"
        );
    }
    let access: Vec<serde_json::Value> = rest
        .iter()
        .filter(|l| l.contains("\"tollgate::access\""))
        .map(|l| json(l))
        .collect();
    assert_eq!(access.len(), 2, "{rest:#?}");
    let stream = &access[0];
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["route"], "m");
    assert_eq!(stream["route_version"], "default");
    assert_eq!(stream["stream"], true);
    assert_eq!(stream["upstream_status"], 200);
    assert_eq!(stream["events"], 4);
    assert_eq!(stream["output_tokens"], 4);
    assert_eq!(stream["finish_reason"], "stop");
    assert!(stream["ttft_ms"].as_f64().unwrap() >= 0.0);
    assert!(stream["input_tokens"].as_u64().unwrap() > 0);
    let bad = &access[1];
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["error"], "malformed_json");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_second_gateway_on_the_same_port_is_refused() {
    let first = gateway(&config("http://127.0.0.1:1/v1", OPEN_ROUTES)).await;
    let yaml = config("http://127.0.0.1:1/v1", OPEN_ROUTES).replacen(
        "listen: 127.0.0.1:0",
        &format!("listen: {}", first.api_addr),
        1,
    );
    let err = start_error(&yaml).await;
    assert!(
        err.contains("cannot listen on") && err.contains(&first.api_addr.to_string()),
        "{err}"
    );
}
