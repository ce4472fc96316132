//! `tollgate prompts render`, `tollgate prompts test` and `tollgate check` on prompt folders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::prompts::*;
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.yaml");

fn tollgate(args: &[&str]) -> (i32, String, String) {
    run_process(Path::new(BIN), args, "")
}

/// A config file in `dir` with the prompt folder `prompts` beside it.
fn cli_config(dir: &TempDir, labels: &str) -> PathBuf {
    dir.write(
        "tollgate.yaml",
        &format!(
            "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nauth:\n  enabled: false\n\
             providers:\n  demo:\n    type: demo\nroutes:\n  demo:\n    provider: demo\n\
             prompts:\n  dir: prompts\n  labels:\n{labels}"
        ),
    )
}

#[test]
fn the_cli_renders_and_tests_prompts() {
    // The repository's example prompt passes its fixtures.
    let (code, out, err) = tollgate(&["prompts", "test", "--config", REPO_CONFIG]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 cases, 0 failed"), "{out}");
    assert!(
        out.contains("ok    support-answer/tests/refund.yaml: version 1 with the default language"),
        "{out}"
    );

    let dir = TempDir::new("cli");
    let vars = dir.write(
        "vars.yaml",
        "product: Tollgate\nplan: Pro\nlanguage: French\nquestion: Remboursement ?\n",
    );
    let vars = vars.to_str().unwrap();
    let (code, out, err) = tollgate(&[
        "prompts",
        "render",
        "--config",
        REPO_CONFIG,
        "--id",
        "support-answer",
        "--version",
        "2",
        "--vars",
        vars,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let rendered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rendered,
        json!([
            message(
                "system",
                "You are the support assistant for Tollgate. Answer in French, in at most five sentences, and say so when you do not know. The customer is on the Pro plan."
            ),
            message("user", "Remboursement ?"),
        ])
    );
    assert!(err.contains("support-answer@2 (hash "), "{err}");
    // By label; a JSON vars file works too.
    let json_vars = dir.write(
        "vars.json",
        r#"{"product":"Tollgate","question":"Refund?"}"#,
    );
    let (code, out, err) = tollgate(&[
        "prompts",
        "render",
        "--config",
        REPO_CONFIG,
        "--id",
        "support-answer",
        "--label",
        "production",
        "--vars",
        json_vars.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let rendered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rendered[1], message("user", "Refund?"));
    assert!(
        rendered[0]["content"]
            .as_str()
            .unwrap()
            .contains("Answer in English"),
        "{out}"
    );
    assert!(err.contains("support-answer@1 (hash "), "{err}");
    // A variable missing: an error, exit 1.
    let (code, _, err) = tollgate(&[
        "prompts",
        "render",
        "--config",
        REPO_CONFIG,
        "--id",
        "support-answer",
        "--version",
        "1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is required"), "{err}");

    // A fixture that expects other text fails, and says how.
    let config = cli_config(&dir, "    hello: {production: 1}\n");
    let config = config.to_str().unwrap();
    dir.write(
        "prompts/hello/1.yaml",
        "variables:\n  name: {required: true, example: Ann}\nmessages:\n  - role: user\n    content: \"Hi {{ name }}\"\n",
    );
    let fixture = |second: &str| {
        format!(
            "cases:\n  - name: right greeting\n    version: 1\n    variables: {{name: Ann}}\n    messages: [{{role: user, content: Hi Ann}}]\n  - name: second greeting\n    label: production\n    variables: {{name: Bo}}\n    messages: [{{role: user, content: {second}}}]\n"
        )
    };
    dir.write("prompts/hello/tests/cases.yaml", &fixture("Hello Bo"));
    let (code, out, err) = tollgate(&["prompts", "test", "--config", config]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("ok    hello/tests/cases.yaml: right greeting"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  hello/tests/cases.yaml: second greeting"),
        "{out}"
    );
    assert!(
        out.contains(r#"expected: {"role":"user","content":"Hello Bo"}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"rendered: {"role":"user","content":"Hi Bo"}"#),
        "{out}"
    );
    assert!(out.contains("2 cases, 1 failed"), "{out}");
    // Fixed, it passes.
    dir.write("prompts/hello/tests/cases.yaml", &fixture("Hi Bo"));
    let (code, out, err) = tollgate(&["prompts", "test", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 cases, 0 failed"), "{out}");
}

#[test]
fn check_names_the_template_that_uses_an_undeclared_variable() {
    let (code, out, err) = tollgate(&["check", "--config", REPO_CONFIG]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("prompt versions rendered"), "{out}");

    let dir = TempDir::new("check");
    let config = cli_config(&dir, "    broken: {production: 1}\n");
    dir.write(
        "prompts/broken/1.yaml",
        "variables:\n  a: {example: x}\nmessages:\n  - role: user\n    content: \"{{ a }} and {{ b }}\"\n",
    );
    let (code, out, err) = tollgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("broken/1.yaml"), "names the file: {err}");
    assert!(err.contains("`b`"), "names the variable: {err}");
    // `prompts test` refuses the same folder.
    let (code, _, err) = tollgate(&["prompts", "test", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("broken/1.yaml"), "{err}");
}
