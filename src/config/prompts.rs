//! The `prompts` section: where the versioned prompt templates live, and which version each
//! label of a prompt names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// Prompt templates as code: one file per immutable version, labels in config.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    /// Folder of templates, laid out `<dir>/<prompt id>/<version>.yaml`; relative to the
    /// config file's folder. Watched for changes like the config file.
    pub dir: PathBuf,
    /// Per prompt id: label -> version. `production` is the version a request that names
    /// neither a version nor a label gets (unless its route splits that prompt).
    #[serde(default, deserialize_with = "super::unique_keys")]
    pub labels: BTreeMap<String, BTreeMap<String, VersionName>>,
    /// Read the templates shipped inside the binary instead of `dir` (the embedded default
    /// config, which has no folder beside it). Not a config key.
    #[serde(skip)]
    pub embedded: bool,
}

/// A prompt version's name. YAML reads `2` as a number; a version name is text either way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionName(pub String);

impl<'de> Deserialize<'de> for VersionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Name {
            Text(String),
            Number(u64),
        }
        Ok(VersionName(match Name::deserialize(deserializer)? {
            Name::Text(text) => text,
            Name::Number(n) => n.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn labels_read_numbers_and_text_as_version_names() {
        let config = Config::from_yaml(
            "prompts:\n  dir: prompts\n  labels:\n    answer: {production: 1, canary: v2-rc}\n",
        )
        .unwrap();
        let prompts = config.prompts.unwrap();
        let labels = &prompts.labels["answer"];
        assert_eq!(labels["production"].0, "1");
        assert_eq!(labels["canary"].0, "v2-rc");
        assert!(!prompts.embedded);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_yaml("prompts:\n  dir: p\n  folder: q\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("prompts"), "{err}");
    }
}
