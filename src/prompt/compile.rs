//! Compiles the prompt folder and the `prompts` config section into a [`Library`]: every
//! template parsed, checked against its variables and rendered with its examples, every
//! version hashed, and a changed version refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderValue;

use super::files::{PromptFiles, valid_name};
use super::render::{self, MessageTemplates};
use super::schema::Schema;
use super::template::TemplateFile;
use super::{Prompt, PromptVersion};
use crate::api::decode::ParamDefault;
use crate::config::PromptsConfig;
use crate::snapshot::{CompileError, problem};
use crate::telemetry::metrics::Metrics;

/// Every prompt of a snapshot.
#[derive(Debug, Default)]
pub struct Library {
    prompts: HashMap<Box<str>, Arc<Prompt>>,
    /// Ids in order: the index of a prompt is its place here.
    ids: Box<[Box<str>]>,
    /// The hash of every version this process has served, kept from reload to reload so a
    /// version removed and later brought back with other content is still caught.
    ledger: BTreeMap<(Box<str>, Box<str>), Box<str>>,
}

impl Library {
    /// No prompts, keeping what `previous` knew of past versions (a config that drops its
    /// prompts section and later restores it is still held to the old hashes).
    pub fn carrying(previous: Option<&Library>) -> Library {
        Library {
            ledger: previous.map(|p| p.ledger.clone()).unwrap_or_default(),
            ..Library::default()
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Prompt>> {
        self.prompts.get(id)
    }

    /// Prompts in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Prompt>> {
        self.ids.iter().filter_map(|id| self.prompts.get(id))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Where a version's problems are reported: its file.
fn at(id: &str, version: &str) -> String {
    format!("prompt {id}@{version} ({id}/{version}.yaml)")
}

/// Compiles `files` with the labels of `config`. `previous` is the library serving now: a
/// version it knows must come back with the same content hash.
pub fn compile(
    config: &PromptsConfig,
    files: &PromptFiles,
    previous: Option<&Library>,
    metrics: &Metrics,
) -> Result<Library, CompileError> {
    let mut env = render::environment();
    let mut ledger = previous.map(|p| p.ledger.clone()).unwrap_or_default();
    // Parsed versions, waiting for the finished environment.
    let mut parsed = Vec::with_capacity(files.templates.len());
    for ((id, version), text) in &files.templates {
        let path = at(id, version);
        let deserializer = serde_norway::Deserializer::from_str(text);
        let file: TemplateFile = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| problem(&path, format!("{}: {}", e.path(), e.inner())))?;
        if file.messages.is_empty() {
            return Err(problem(&path, "a prompt has at least one message"));
        }
        let schema = Schema::compile(&file.variables)
            .map_err(|(name, why)| problem(&path, format!("variables.{name}: {why}")))?;
        let params = ParamDefault::compile_all(&file.params)
            .map_err(|(name, why)| problem(&path, format!("params.{name}: {why}")))?;
        let hash = file.content_hash();
        if let Some(known) = ledger.get(&(id.as_str().into(), version.as_str().into()))
            && **known != hash
        {
            return Err(problem(
                &path,
                format!(
                    "this version's content changed (hash {known} -> {hash}); a version is immutable: save the change as a new version and move a label to it"
                ),
            ));
        }
        let mut names = Vec::with_capacity(file.messages.len());
        for (i, message) in file.messages.iter().enumerate() {
            let name = format!("{id}@{version}/{i}");
            env.add_template_owned(name.clone(), message.content.clone())
                .map_err(|e| problem(&path, format!("messages[{i}].content: {e}")))?;
            let used = env
                .get_template(&name)
                .map(|t| t.undeclared_variables(false))
                .unwrap_or_default();
            let globals: Vec<String> = env.globals().map(|(g, _)| g.to_owned()).collect();
            if let Some(unknown) = used
                .iter()
                .filter(|v| !globals.contains(v))
                .find(|v| !schema.variables().iter().any(|d| &*d.name == v.as_str()))
            {
                return Err(problem(
                    &path,
                    format!(
                        "messages[{i}].content uses `{unknown}`, which is not among its variables"
                    ),
                ));
            }
            names.push((message.role, name.into_boxed_str()));
        }
        parsed.push((id, version, file, schema, params, hash, names));
    }

    let env = Arc::new(env);
    let mut versions: BTreeMap<&str, BTreeMap<Box<str>, Arc<PromptVersion>>> = BTreeMap::new();
    for (id, version, file, schema, params, hash, names) in parsed {
        let path = at(id, version);
        let reference = HeaderValue::try_from(format!("{id}@{version}"))
            .map_err(|_| problem(&path, "the id and version must be printable ASCII"))?;
        let compiled = PromptVersion {
            id: id.as_str().into(),
            version: version.as_str().into(),
            hash_header: HeaderValue::try_from(hash.as_str())
                .map_err(|_| problem(&path, "hash is not a header value"))?,
            reference,
            description: file.description.map(Into::into),
            owner: file.owner.map(Into::into),
            model: file.model.map(Into::into),
            params,
            caller_messages: file.caller_messages,
            schema,
            messages: MessageTemplates::new(env.clone(), names.into()),
            metrics: metrics.prompt(id, version),
            span_attributes: crate::telemetry::trace::spans::prompt_attributes(id, version, &hash),
            hash: hash.as_str().into(),
        };
        // A template `tollgate check` can render: with every example, and with the optional
        // variables left out as a request may leave them.
        for with_optional in [true, false] {
            let examples = compiled.schema.examples(with_optional);
            compiled.render(Some(examples)).map_err(|why| {
                let which = if with_optional {
                    "every variable"
                } else {
                    "only required variables and defaults"
                };
                problem(
                    &path,
                    format!("does not render with its example values ({which}): {why}"),
                )
            })?;
        }
        ledger.insert((id.as_str().into(), version.as_str().into()), hash.into());
        versions
            .entry(id.as_str())
            .or_default()
            .insert(version.as_str().into(), Arc::new(compiled));
    }

    for (id, labels) in &config.labels {
        let path = format!("prompts.labels.{id}");
        let Some(known) = versions.get(id.as_str()) else {
            return Err(problem(
                path,
                format!("no prompt `{id}` in the prompt folder"),
            ));
        };
        for (label, version) in labels {
            if !valid_name(label) {
                return Err(problem(
                    format!("{path}.{label}"),
                    "a label is 1 to 64 letters, digits, `-`, `_` or `.`",
                ));
            }
            if !known.contains_key(version.0.as_str()) {
                return Err(problem(
                    format!("{path}.{label}"),
                    format!("prompt `{id}` has no version `{}`", version.0),
                ));
            }
        }
    }

    let mut prompts = HashMap::with_capacity(versions.len());
    let mut ids = Vec::with_capacity(versions.len());
    for (index, (id, versions)) in versions.into_iter().enumerate() {
        let labels = config
            .labels
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|(label, v)| {
                Some((label.as_str().into(), versions.get(v.0.as_str())?.clone()))
            })
            .collect();
        ids.push(Box::<str>::from(id));
        prompts.insert(
            id.into(),
            Arc::new(Prompt {
                id: id.into(),
                index,
                versions,
                labels,
            }),
        );
    }
    Ok(Library {
        prompts,
        ids: ids.into(),
        ledger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VersionName;
    use crate::prompt::PRODUCTION;

    const V1: &str = "model: m\nvariables:\n  name: {required: true, max_length: 20, example: Ann}\n  tone: {default: warm}\nmessages:\n  - role: system\n    content: \"Be {{ tone }}.\"\n  - role: user\n    content: \"Hello, I am {{ name }}.\"\n";

    fn files(entries: &[(&str, &str, &str)]) -> PromptFiles {
        let mut files = PromptFiles::default();
        for (id, version, text) in entries {
            files
                .templates
                .insert((id.to_string(), version.to_string()), text.to_string());
        }
        files
    }

    fn labels(entries: &[(&str, &str, &str)]) -> PromptsConfig {
        let mut labels: BTreeMap<String, BTreeMap<String, VersionName>> = BTreeMap::new();
        for (id, label, version) in entries {
            labels
                .entry(id.to_string())
                .or_default()
                .insert(label.to_string(), VersionName(version.to_string()));
        }
        PromptsConfig {
            dir: "unused".into(),
            labels,
            embedded: false,
        }
    }

    fn build(
        entries: &[(&str, &str, &str)],
        label_entries: &[(&str, &str, &str)],
    ) -> Result<Library, CompileError> {
        compile(
            &labels(label_entries),
            &files(entries),
            None,
            &Metrics::new(),
        )
    }

    #[test]
    fn compiles_versions_labels_and_renders() {
        let lib = build(&[("greet", "1", V1)], &[("greet", "production", "1")]).unwrap();
        let prompt = lib.get("greet").unwrap();
        let v1 = prompt.label(PRODUCTION).unwrap();
        assert_eq!(v1.reference_str(), "greet@1");
        assert_eq!(v1.hash.len(), 12);
        assert_eq!(v1.model.as_deref(), Some("m"));
        let messages = v1
            .render(serde_json::from_str(r#"{"name":"Bo"}"#).unwrap())
            .unwrap();
        assert_eq!(messages[0].content, "Be warm.");
        assert_eq!(messages[1].content, "Hello, I am Bo.");
    }

    #[test]
    fn template_mistakes_are_caught_at_compile_time() {
        let why = |text: &str| build(&[("p", "1", text)], &[]).unwrap_err().to_string();
        let e = why("messages:\n  - role: user\n    content: \"{{ name }\"\n");
        assert!(
            e.starts_with("prompt p@1 (p/1.yaml): messages[0].content"),
            "{e}"
        );
        let e = why(
            "variables: {a: {}}\nmessages:\n  - role: user\n    content: \"{{ a }} {{ b }}\"\n",
        );
        assert!(
            e.contains("uses `b`, which is not among its variables"),
            "{e}"
        );
        let e = why(
            "variables: {n: {type: integer}}\nmessages:\n  - role: user\n    content: \"{{ n + 'x' }}\"\n",
        );
        assert!(e.contains("does not render with its example values"), "{e}");
        // An optional variable used without a guard fails when a request leaves it out.
        let e = why(
            "variables: {opt: {example: x}}\nmessages:\n  - role: user\n    content: \"{{ opt }}\"\n",
        );
        assert!(e.contains("only required variables"), "{e}");
        let e = why("messages:\n  - role: robot\n    content: hi\n");
        assert!(e.contains("messages[0].role"), "{e}");
        let e = why("messages: []\n");
        assert!(e.contains("at least one message"), "{e}");
        let e = why("params: {messages: []}\nmessages: [{role: user, content: hi}]\n");
        assert!(e.contains("params.messages"), "{e}");
    }

    #[test]
    fn labels_must_name_existing_prompts_and_versions() {
        let e = build(&[("p", "1", V1)], &[("p", "production", "2")]).unwrap_err();
        assert_eq!(e.path, "prompts.labels.p.production");
        let e = build(&[("p", "1", V1)], &[("q", "production", "1")]).unwrap_err();
        assert_eq!(e.path, "prompts.labels.q");
    }

    #[test]
    fn a_changed_version_is_refused_and_a_new_one_taken() {
        let metrics = Metrics::new();
        let none = labels(&[]);
        let first = compile(&none, &files(&[("p", "1", V1)]), None, &metrics).unwrap();
        let edited = V1.replace("Be {{ tone }}.", "Be very {{ tone }}.");
        let err = compile(
            &none,
            &files(&[("p", "1", &edited)]),
            Some(&first),
            &metrics,
        )
        .unwrap_err();
        assert!(err.to_string().contains("content changed"), "{err}");
        assert!(err.to_string().contains("immutable"), "{err}");
        // The same change as a new version is fine; so is a comment or a note in the old one.
        let noted = format!("# reviewed\ndescription: greets\n{V1}");
        let second = compile(
            &none,
            &files(&[("p", "1", &noted), ("p", "2", &edited)]),
            Some(&first),
            &metrics,
        )
        .unwrap();
        // Removed, then brought back changed: still refused.
        let removed = compile(
            &none,
            &files(&[("p", "2", &edited)]),
            Some(&second),
            &metrics,
        )
        .unwrap();
        assert!(
            compile(
                &none,
                &files(&[("p", "1", &edited)]),
                Some(&removed),
                &metrics
            )
            .is_err()
        );
    }
}
