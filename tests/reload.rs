//! Live reload: a config file rewritten under load (weights moved, versions added and removed,
//! invalid configs in between, ConfigMap-style symlink swaps), and the admin reload endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use http::StatusCode;
use tollgate::config::Config;
use tollgate::providers::Provider;
use tollgate::server::Gateway;
use tollgate::telemetry::metrics::Metrics;
use tollgate_mock::{MockConfig, MockServer};

/// A fresh directory for one test's config files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-reload-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config with providers `a` and `b` (two mocks) and route `m` with `versions`.
fn config_text(a: &MockServer, b: &MockServer, versions: &str, admin_extra: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  header_read_timeout: 1s\nadmin:\n  listen: 127.0.0.1:0\n{admin_extra}auth:\n  enabled: false\n\
         providers:\n  a:\n    type: openai\n    base_url: {}\n  b:\n    type: openai\n    base_url: {}\n\
         routes:\n  m:\n    versions:\n{versions}",
        a.base_url(),
        b.base_url()
    )
}

/// The version (content hash) a config text compiles to.
fn version_of(text: &str) -> String {
    let config = Config::from_yaml(text).unwrap();
    tollgate::snapshot::compile(&config, text, &Arc::new(Metrics::new()))
        .unwrap()
        .version
        .to_string()
}

/// Waits until the gateway serves `version` (the file watcher is asynchronous).
async fn serving(gw: &Gateway, version: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while &*gw.shared.live.load().version != version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reloaded to {version}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn failed_reloads(gw: &Gateway) -> f64 {
    sample(
        &metrics(gw).await,
        "tollgate_config_reloads_total{result=\"failed\"}",
    )
}

/// A Kubernetes ConfigMap volume: `config.yaml -> ..data/config.yaml`, `..data -> ..N`.
/// Each update writes a new `..N` and swaps `..data` atomically by rename.
struct ConfigMapDir {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapDir {
    fn new(dir: PathBuf, text: &str) -> Self {
        let mut map = Self { dir, generation: 0 };
        map.publish(text);
        std::os::unix::fs::symlink("..data/config.yaml", map.path()).unwrap();
        map
    }

    fn path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    fn publish(&mut self, text: &str) {
        self.generation += 1;
        let generation = format!("..{}", self.generation);
        std::fs::create_dir(self.dir.join(&generation)).unwrap();
        std::fs::write(self.dir.join(&generation).join("config.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

async fn start(path: &Path) -> Gateway {
    let (config, text) = Config::from_file(path).unwrap();
    Gateway::start_from_file(&config, &text, path)
        .await
        .unwrap()
}

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_rewritten_under_load_never_fails_a_request() {
    let a = MockServer::start(MockConfig::default()).await.unwrap();
    let b = MockServer::start(MockConfig::default()).await.unwrap();
    let only_a = "      v1: {provider: a, weight: 1}\n";
    let only_b = "      v1: {provider: a, weight: 0}\n      v2: {provider: b, weight: 1}\n";
    let split = "      v1: {provider: a, weight: 50}\n      v2: {provider: b, weight: 50}\n";
    let mut map = ConfigMapDir::new(temp_dir("load"), &config_text(&a, &b, only_a, ""));
    let gw = start(&map.path()).await;
    let addr = gw.api_addr;

    // A steady client: whole answers and streams, back to back, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = if n.is_multiple_of(2) { CHAT } else { STREAM };
                let (status, _, text) = call(addr, post("/v1/chat/completions", body, &[])).await;
                let complete = if body == STREAM {
                    text.ends_with("data: [DONE]\n\n")
                } else {
                    text.contains("chat.completion")
                };
                if status != StatusCode::OK || !complete {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed: {status} {text}");
                }
                sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };

    let mut invalid = 0.0;
    for round in 0..4 {
        for versions in [only_b, split, only_a] {
            // A broken config first: refused, counted, and the running one keeps serving.
            let before = gw.shared.live.load().version.clone();
            map.publish(&config_text(&a, &b, "      v1: {provider: nope}\n", ""));
            invalid += 1.0;
            let deadline = tokio::time::Instant::now() + WAIT;
            while failed_reloads(&gw).await < invalid {
                if tokio::time::Instant::now() >= deadline {
                    let status = call(gw.admin_addr, get("/admin/config", &[])).await.2;
                    panic!("invalid config not refused: {status}");
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(gw.shared.live.load().version, before);

            let text = config_text(&a, &b, versions, &format!("  # round {round}\n"));
            map.publish(&text);
            serving(&gw, &version_of(&text)).await;
            // The split follows the new weights from the next request on.
            if versions == only_b {
                let (_, headers, _) = chat(&gw, CHAT).await;
                assert_eq!(headers["x-tollgate-route-version"], "v2");
            }
            if versions == only_a {
                let (_, headers, _) = chat(&gw, CHAT).await;
                assert_eq!(headers["x-tollgate-route-version"], "v1");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 20, "the client kept going");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across reloads"
    );
    assert_eq!(failed_reloads(&gw).await, invalid);
    assert!(b.stats().requests() > 0 && a.stats().requests() > 0);
}

#[tokio::test]
async fn admin_reload_needs_the_token_and_reports_what_happened() {
    let a = MockServer::start(MockConfig::default()).await.unwrap();
    let b = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = temp_dir("admin");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-admin-token-0123\n").unwrap();
    let admin = format!("  token_file: {}\n", token_file.display());
    let path = dir.join("tollgate.yaml");
    let first = config_text(&a, &b, "      v1: {provider: a}\n", &admin);
    std::fs::write(&path, &first).unwrap();
    let gw = start(&path).await;
    let reload = |token: Option<&'static str>| {
        let headers: Vec<(&str, String)> = token
            .map(|t| ("authorization", format!("Bearer {t}")))
            .into_iter()
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        call(gw.admin_addr, post("/admin/reload", "", &headers))
    };

    let (status, _, body) = reload(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = reload(Some("wrong-token-wrong-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = reload(Some("s3cret-admin-token-0123")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["result"], "unchanged");

    // A provider whose definition did not change is carried over, pools and all.
    let provider_a = |gw: &Gateway| match &gw.shared.live.load().providers["a"] {
        Provider::Openai(p) => p.clone(),
        Provider::Vertex(_) | Provider::Demo(_) => panic!("a is openai"),
    };
    let before = provider_a(&gw);
    let second = config_text(
        &a,
        &b,
        "      v1: {provider: a}\n      v2: {provider: b, weight: 0}\n",
        &admin,
    );
    std::fs::write(&path, &second).unwrap();
    let (status, _, body) = reload(Some("s3cret-admin-token-0123")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serving(&gw, &version_of(&second)).await;
    assert!(Arc::ptr_eq(&before, &provider_a(&gw)));

    // A listener change cannot apply live: refused, with the reason, old config serving.
    std::fs::write(
        &path,
        second.replacen("header_read_timeout: 1s", "header_read_timeout: 2s", 1),
    )
    .unwrap();
    let (status, _, body) = reload(Some("s3cret-admin-token-0123")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("restart"),
        "{body}"
    );
    assert_eq!(&*gw.shared.live.load().version, version_of(&second));

    // Nor can turning span export on: the exporter starts with the process.
    std::fs::write(
        &path,
        format!("{second}tracing:\n  otlp:\n    endpoint: http://127.0.0.1:4317\n"),
    )
    .unwrap();
    let (status, _, body) = reload(Some("s3cret-admin-token-0123")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("tracing section"),
        "{body}"
    );
    assert_eq!(&*gw.shared.live.load().version, version_of(&second));
    let (_, _, status_body) = call(gw.admin_addr, get("/admin/config", &[])).await;
    let status_json = json(&status_body);
    assert_eq!(status_json["version"], version_of(&second));
    assert_eq!(status_json["last_reload"]["ok"], false);
    assert!(!status_body.contains("s3cret"), "the token never shows");
}

#[tokio::test]
async fn without_a_token_http_reload_is_off() {
    let (_mock, gw) = mock_and_gateway(MockConfig::default()).await;
    let (status, _, body) = call(gw.admin_addr, post("/admin/reload", "", &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("token_env"), "{body}");
}
