//! Reads the prompt folder into memory: `<dir>/<id>/<version>.yaml` templates and
//! `<dir>/<id>/tests/<case>.yaml` fixtures, or the copies shipped inside the binary.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::PromptsConfig;

/// The example prompts shipped with the embedded default config (`config/prompts`).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "support-answer/1.yaml",
        include_str!("../../config/prompts/support-answer/1.yaml"),
    ),
    (
        "support-answer/2.yaml",
        include_str!("../../config/prompts/support-answer/2.yaml"),
    ),
    (
        "support-answer/tests/refund.yaml",
        include_str!("../../config/prompts/support-answer/tests/refund.yaml"),
    ),
];

/// Largest template or fixture file read.
const MAX_FILE: u64 = 1024 * 1024;
/// Most files read from one prompt folder.
const MAX_FILES: usize = 10_000;

/// The prompt folder's files, by (prompt id, name).
#[derive(Debug, Default)]
pub struct PromptFiles {
    /// (id, version) -> template text.
    pub templates: BTreeMap<(String, String), String>,
    /// (id, case) -> fixture text.
    pub fixtures: BTreeMap<(String, String), String>,
}

/// A name usable as a prompt id, version or label: it goes into headers, metric labels and
/// `id@version` references.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
}

impl PromptFiles {
    /// Reads what `config` points at. An error is (path, why).
    pub fn read(config: &PromptsConfig) -> Result<PromptFiles, (String, String)> {
        if config.embedded {
            let mut files = PromptFiles::default();
            for (path, text) in EMBEDDED {
                files.add(path, text.to_string())?;
            }
            return Ok(files);
        }
        let mut files = PromptFiles::default();
        let dir = &config.dir;
        let io = |path: &Path, err: std::io::Error| (path.display().to_string(), err.to_string());
        let mut count = 0;
        for prompt in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let prompt = prompt.map_err(|e| io(dir, e))?;
            let id = prompt.file_name().to_string_lossy().into_owned();
            // Hidden entries: editor files, and a Kubernetes volume's `..data` machinery.
            if id.starts_with('.') || !prompt.path().is_dir() {
                continue;
            }
            for (sub, prefix) in [
                (prompt.path(), String::new()),
                (prompt.path().join("tests"), "tests/".into()),
            ] {
                if !sub.is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(&sub).map_err(|e| io(&sub, e))? {
                    let path = file.map_err(|e| io(&sub, e))?.path();
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if name.starts_with('.')
                        || !(name.ends_with(".yaml") || name.ends_with(".yml"))
                        || !path.is_file()
                    {
                        continue;
                    }
                    count += 1;
                    if count > MAX_FILES {
                        return Err((
                            dir.display().to_string(),
                            format!("more than {MAX_FILES} prompt files"),
                        ));
                    }
                    let size = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
                    if size > MAX_FILE {
                        return Err((
                            path.display().to_string(),
                            format!("larger than {MAX_FILE} bytes"),
                        ));
                    }
                    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                    files.add(&format!("{id}/{prefix}{name}"), text)?;
                }
            }
        }
        Ok(files)
    }

    /// Files one relative path: `id/version.yaml` or `id/tests/case.yaml`.
    fn add(&mut self, path: &str, text: String) -> Result<(), (String, String)> {
        let fail = |why: &str| Err((path.to_owned(), why.to_owned()));
        let stem = |file: &str| {
            file.strip_suffix(".yaml")
                .or_else(|| file.strip_suffix(".yml"))
                .map(str::to_owned)
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (id, slot, name) = match parts[..] {
            [id, file] => (id, &mut self.templates, stem(file)),
            [id, "tests", file] => (id, &mut self.fixtures, stem(file)),
            _ => {
                return fail(
                    "not a prompt file (`<id>/<version>.yaml` or `<id>/tests/<case>.yaml`)",
                );
            }
        };
        let Some(name) = name else {
            return fail("prompt files end in .yaml");
        };
        if !valid_name(id) {
            return fail(
                "a prompt id is 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`",
            );
        }
        if !valid_name(&name) {
            return fail("a version (file name) is 1 to 64 letters, digits, `-`, `_` or `.`");
        }
        if slot.insert((id.to_owned(), name), text).is_some() {
            return fail("defined twice (as .yaml and .yml)");
        }
        Ok(())
    }

    /// The templates, for the config version hash: a changed prompt is a changed config.
    /// Fixtures are left out: they test prompts offline and change nothing that serves.
    pub fn digest_into(&self, hasher: &mut impl sha2::Digest) {
        for ((id, name), text) in &self.templates {
            for part in [id, name, text] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo_prompts() -> PromptsConfig {
        PromptsConfig {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/prompts"),
            labels: Default::default(),
            embedded: false,
        }
    }

    #[test]
    fn the_embedded_prompts_are_the_repository_folder() {
        let on_disk = PromptFiles::read(&repo_prompts()).unwrap();
        let embedded = PromptFiles::read(&PromptsConfig {
            embedded: true,
            ..repo_prompts()
        })
        .unwrap();
        assert_eq!(
            on_disk.templates, embedded.templates,
            "update files::EMBEDDED"
        );
        assert_eq!(
            on_disk.fixtures, embedded.fixtures,
            "update files::EMBEDDED"
        );
    }

    #[test]
    fn names_are_checked() {
        let mut files = PromptFiles::default();
        assert!(files.add("a/1.yaml", String::new()).is_ok());
        assert!(files.add("a/tests/case.yml", String::new()).is_ok());
        assert!(
            files
                .add("a/1.yml", String::new())
                .unwrap_err()
                .1
                .contains("twice")
        );
        assert!(files.add("a b/1.yaml", String::new()).is_err());
        assert!(files.add("a/v@2.yaml", String::new()).is_err());
        assert!(files.add("a/x/y/z.yaml", String::new()).is_err());
        assert!(valid_name("v2.1-rc_3"));
        assert!(!valid_name(".hidden") && !valid_name("") && !valid_name("a:b"));
    }

    #[test]
    fn hidden_entries_and_other_files_are_skipped() {
        let dir = std::env::temp_dir().join(format!("tollgate-prompts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("p/tests")).unwrap();
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        std::fs::write(dir.join("p/1.yaml"), "x").unwrap();
        std::fs::write(dir.join("p/README.md"), "notes").unwrap();
        std::fs::write(dir.join("p/.1.yaml.swp"), "junk").unwrap();
        std::fs::write(dir.join("p/tests/c.yaml"), "y").unwrap();
        let files = PromptFiles::read(&PromptsConfig {
            dir: dir.clone(),
            labels: Default::default(),
            embedded: false,
        })
        .unwrap();
        assert_eq!(files.templates.len(), 1);
        assert_eq!(files.fixtures.len(), 1);
        let missing = PromptFiles::read(&PromptsConfig {
            dir: dir.join("nope"),
            labels: Default::default(),
            embedded: false,
        });
        assert!(missing.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
