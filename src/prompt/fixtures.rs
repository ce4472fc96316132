//! Fixture cases stored beside the templates (`<id>/tests/<file>.yaml`): variables in,
//! expected messages (or an expected error) out. `tollgate prompts test` runs them, so a
//! prompt is reviewed and tested in CI like code.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Library, Message, Pick};
use crate::config::VersionName;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    version: Option<VersionName>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
    /// The messages the case expects.
    #[serde(default)]
    messages: Option<Vec<Message>>,
    /// Text the error the case expects contains.
    #[serde(default)]
    error: Option<String>,
}

/// One case's result.
#[derive(Debug)]
pub struct Outcome {
    /// `id/tests/file.yaml: case name`.
    pub case: String,
    /// `None` when it passed; else what differed.
    pub failure: Option<String>,
}

/// Runs every fixture in `files` against `library`. A fixture file that does not parse is
/// one failed outcome.
pub fn run(library: &Library, files: &super::PromptFiles) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for ((id, file), text) in &files.fixtures {
        let at = format!("{id}/tests/{file}.yaml");
        let parsed: FixtureFile = match serde_norway::from_str(text) {
            Ok(parsed) => parsed,
            Err(e) => {
                outcomes.push(Outcome {
                    case: at,
                    failure: Some(format!("does not parse: {e}")),
                });
                continue;
            }
        };
        for case in parsed.cases {
            outcomes.push(Outcome {
                case: format!("{at}: {}", case.name),
                failure: check(library, id, &case).err(),
            });
        }
    }
    outcomes
}

fn check(library: &Library, id: &str, case: &Case) -> Result<(), String> {
    let prompt = library.get(id).ok_or_else(|| format!("no prompt `{id}`"))?;
    let pick = match (&case.version, &case.label) {
        (Some(v), None) => Pick::Version(v.0.as_str().into()),
        (None, Some(l)) => Pick::Label(l.as_str().into()),
        _ => return Err("a case names a version or a label".into()),
    };
    let version = prompt
        .named(&pick)?
        .ok_or("a case names a version or a label")?;
    let rendered = version.render(case.variables.clone());
    match (&case.messages, &case.error, rendered) {
        (Some(expected), None, Ok(got)) if *expected == got => Ok(()),
        (Some(expected), None, Ok(got)) => Err(difference(expected, &got)),
        (None, Some(expected), Err(err)) => {
            let text = err.to_string();
            if text.contains(expected.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "expected an error containing {expected:?}, got {text:?}"
                ))
            }
        }
        (Some(_), None, Err(err)) => Err(format!("expected messages, got an error: {err}")),
        (None, Some(expected), Ok(_)) => Err(format!(
            "expected an error containing {expected:?}, but it rendered"
        )),
        _ => Err("a case expects `messages` or `error`, not both or neither".into()),
    }
}

/// The first message that differs, both ways, in full.
fn difference(expected: &[Message], got: &[Message]) -> String {
    if expected.len() != got.len() {
        return format!(
            "expected {} messages, rendered {}",
            expected.len(),
            got.len()
        );
    }
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e != g {
            return format!(
                "message {i} differs\n  expected: {}\n  rendered: {}",
                serde_json::to_string(e).unwrap_or_default(),
                serde_json::to_string(g).unwrap_or_default()
            );
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PromptsConfig;
    use crate::prompt::{PromptFiles, compile};
    use crate::telemetry::metrics::Metrics;

    fn run_with(fixture: &str) -> Vec<Outcome> {
        let mut files = PromptFiles::default();
        files.templates.insert(
            ("p".into(), "1".into()),
            "variables: {name: {required: true}}\nmessages: [{role: user, content: \"Hi {{ name }}\"}]\n".into(),
        );
        files
            .fixtures
            .insert(("p".into(), "cases".into()), fixture.into());
        let config = PromptsConfig {
            dir: "unused".into(),
            labels: Default::default(),
            embedded: false,
        };
        let library = compile(&config, &files, None, &Metrics::new()).unwrap();
        run(&library, &files)
    }

    #[test]
    fn passing_and_failing_cases_are_told_apart() {
        let outcomes = run_with(
            "cases:\n  - {name: ok, version: 1, variables: {name: A}, messages: [{role: user, content: Hi A}]}\n  - {name: wrong, version: 1, variables: {name: B}, messages: [{role: user, content: Hi A}]}\n  - {name: error, version: 1, error: \"`name` is required\"}\n  - {name: no error, version: 1, variables: {name: C}, error: required}\n  - {name: missing, version: 9, messages: []}\n",
        );
        let failed: Vec<(&str, bool)> = outcomes
            .iter()
            .map(|o| (o.case.rsplit(": ").next().unwrap(), o.failure.is_some()))
            .collect();
        assert_eq!(
            failed,
            [
                ("ok", false),
                ("wrong", true),
                ("error", false),
                ("no error", true),
                ("missing", true)
            ]
        );
        let wrong = outcomes[1].failure.as_deref().unwrap();
        assert!(
            wrong.contains("expected: {\"role\":\"user\",\"content\":\"Hi A\"}")
                && wrong.contains("Hi B"),
            "{wrong}"
        );
    }

    #[test]
    fn a_broken_fixture_file_is_a_failure() {
        let outcomes = run_with("cases: [{nme: x}]\n");
        assert_eq!(outcomes.len(), 1);
        assert!(
            outcomes[0]
                .failure
                .as_deref()
                .unwrap()
                .contains("does not parse")
        );
    }
}
