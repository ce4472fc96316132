//! Helpers of the prompt tests: a prompt folder with the `greet`, `whole`, `p` and `other`
//! prompts, a gateway in front of a mock with it, and readers of what the upstream got.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use http::HeaderMap;
use serde_json::{Value, json};
use tollgate::server::Gateway;
use tollgate_mock::{MockConfig, MockServer};

use super::*;

/// A fresh directory of this test process, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-prompts-{}-{n}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `relative` whole, by rename: a watcher never reads half a file. The temporary
    /// name starts with a dot, which the prompt folder reader skips.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.0.join(relative);
        let parent = path.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = parent.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `greet@1`: a system message from three variables, the question as the user message.
pub const GREET_1: &str = r#"# Greets someone, then answers.
description: Greets someone, then answers their question.
owner: test-team
model: m
params:
  temperature: 0.2
  max_tokens: 50
variables:
  name: {type: string, required: true, max_length: 10, example: Ann}
  tone: {type: string, default: warm, max_length: 20}
  age: {type: integer, example: 30}
  question: {type: string, required: true, max_length: 500, example: How are you?}
messages:
  - role: system
    content: "You greet {{ name }} in a {{ tone }} tone.{% if age is defined %} They are {{ age }}.{% endif %}"
  - role: user
    content: "{{ question }}"
"#;

/// `greet@2`: other text, another temperature.
pub const GREET_2: &str = r#"description: Version two.
model: m
params:
  temperature: 0.7
variables:
  name: {required: true, max_length: 10, example: Ann}
  question: {required: true, max_length: 500, example: Hi}
messages:
  - role: system
    content: "Version two greets {{ name }}."
  - role: user
    content: "{{ question }}"
"#;

/// A prompt that is the whole conversation.
pub const WHOLE_1: &str = r#"model: m
caller_messages: reject
variables:
  text: {required: true, example: x}
messages:
  - role: user
    content: "Summarise: {{ text }}"
"#;

pub const P_1: &str = "model: m\nmessages:\n  - role: system\n    content: p one\n";
pub const P_2: &str = "model: m\nmessages:\n  - role: system\n    content: p two\n";
pub const OTHER_1: &str = "model: m\nmessages:\n  - role: user\n    content: the other prompt\n";

/// Writes the test prompt folder into `dir/prompts` and returns the folder.
pub fn write_prompts(dir: &TempDir) -> PathBuf {
    for (file, text) in [
        ("greet/1.yaml", GREET_1),
        ("greet/2.yaml", GREET_2),
        ("whole/1.yaml", WHOLE_1),
        ("p/1.yaml", P_1),
        ("p/2.yaml", P_2),
        ("other/1.yaml", OTHER_1),
    ] {
        dir.write(&format!("prompts/{file}"), text);
    }
    dir.path().join("prompts")
}

/// The `prompts` section for [`write_prompts`]'s folder (an absolute path: these configs
/// are not read from a file).
pub fn prompts_section(folder: &Path) -> String {
    format!(
        "prompts:\n  dir: {}\n  labels:\n    greet: {{production: 1, candidate: 2}}\n    p: {{production: 1}}\n    whole: {{production: 1}}\n    other: {{production: 1}}\n",
        folder.display()
    )
}

/// Routes on the mock: `m` plain, `c` canarying prompt `p` per user, `n` canarying it
/// without stickiness; `d` on the demo provider.
pub const ROUTES: &str = concat!(
    "routes:\n  m:\n    provider: mock\n  d:\n    provider: demo\n",
    "  c:\n    provider: mock\n    sticky: user\n    prompt_versions:\n      p: {1: 90, 2: 10}\n",
    "  n:\n    provider: mock\n    prompt_versions:\n      p: {1: 90, 2: 10}\n",
);

/// A mock, and a gateway in front of it with the test prompts, [`ROUTES`] and `extra`.
pub async fn prompt_gateway(test: &str, extra: &str) -> (TempDir, MockServer, Gateway) {
    let dir = TempDir::new(test);
    let folder = write_prompts(&dir);
    let extra = format!("{ROUTES}{}{extra}", prompts_section(&folder));
    let (mock, gw) = mock_and_gateway_with(MockConfig::default(), &extra).await;
    (dir, mock, gw)
}

pub const OPEN: &str = "auth:\n  enabled: false\n";

pub fn message(role: &str, content: &str) -> Value {
    json!({"role": role, "content": content})
}

/// The body of the last request the mock received.
pub fn upstream_body(mock: &MockServer) -> Value {
    let sent = mock
        .stats()
        .last_request()
        .expect("the upstream got a request");
    json(std::str::from_utf8(&sent.body).unwrap())
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

/// POSTs `body` to the chat surface with `headers`; asserts 200; returns the headers.
pub async fn chat_ok(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> HeaderMap {
    let (status, answer_headers, text) =
        call(gw.api_addr, post("/v1/chat/completions", body, headers)).await;
    assert_eq!(status, StatusCode::OK, "{body}: {text}");
    assert!(text.contains("chat.completion"), "{text}");
    answer_headers
}

/// The prompts listing a caller gets, by id.
pub async fn listed(gw: &Gateway, headers: &[(&str, &str)]) -> Vec<Value> {
    let (status, _, body) = call(gw.api_addr, get("/v1/prompts", headers)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let value = json(&body);
    assert_eq!(value["object"], "list", "{body}");
    value["data"].as_array().unwrap().clone()
}

/// The hash `GET /v1/prompts` lists for `id@version`.
pub fn listed_hash(listing: &[Value], id: &str, version: &str) -> String {
    let prompt = listing
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed"));
    let entry = prompt["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("{id}@{version} not listed"));
    entry["hash"].as_str().unwrap().to_owned()
}

pub fn is_hash(text: &str) -> bool {
    text.len() == 12
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub const GREET_VARS: &str = r#"{"name":"Ann","question":"How are you?"}"#;

/// The Vertex-native generateContent path of alias `m`.
pub const NATIVE_M: &str = "/v1/publishers/google/models/m:generateContent";
