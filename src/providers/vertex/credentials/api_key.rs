//! An express-mode Vertex AI API key, read once from an environment variable or a file and
//! sent as `x-goog-api-key`.

use std::ffi::OsString;
use std::path::Path;

use http::HeaderValue;
use http::header::HeaderName;

use super::CredentialsProblem;

/// The header an express-mode key travels in.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");

/// An API key, held only as a sensitive header value: `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ApiKey {
    header: HeaderValue,
}

impl ApiKey {
    /// Reads the key from the environment variable `env` or the file `file` (exactly one
    /// of them), trimming surrounding whitespace such as a trailing newline. `lookup` reads
    /// the environment (`std::env::var_os` outside tests). The problem names the config key
    /// (`env` or `file`) and never repeats the key.
    pub fn read(
        env: Option<&str>,
        file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<ApiKey, CredentialsProblem> {
        let problem = |key: &str, why: String| (key.to_owned(), why);
        let (key, text) = match (env, file) {
            (Some(_), Some(_)) => {
                return Err(problem("env", "set env or file, not both".into()));
            }
            (None, None) => {
                return Err(problem(
                    "env",
                    "set env (an environment variable holding the key) or file".into(),
                ));
            }
            (Some(var), None) => {
                let value = lookup(var).ok_or_else(|| {
                    problem("env", format!("environment variable {var} is not set"))
                })?;
                let value = value.into_string().map_err(|_| {
                    problem("env", format!("environment variable {var} is not UTF-8"))
                })?;
                ("env", value)
            }
            (None, Some(path)) => {
                let bytes = super::read_bounded(path, super::MAX_SECRET_FILE_BYTES)
                    .map_err(|why| problem("file", why))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| problem("file", format!("{} is not UTF-8", path.display())))?;
                ("file", text)
            }
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            let source = match (env, file) {
                (Some(var), _) => format!("environment variable {var}"),
                (_, Some(path)) => path.display().to_string(),
                (None, None) => String::new(),
            };
            return Err(problem(key, format!("{source} is empty")));
        }
        let header = super::sensitive_header(trimmed.to_owned()).ok_or_else(|| {
            problem(
                key,
                "the key holds characters not allowed in a header".to_owned(),
            )
        })?;
        Ok(ApiKey { header })
    }

    /// The `x-goog-api-key` value, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::vertex::credentials::tests::TempFile;

    const KEY: &str = "AIzaSy-test-only-key-0123456789";

    fn env_with_key(name: &str) -> Option<OsString> {
        match name {
            "VERTEX_KEY" => Some(OsString::from(format!("{KEY}\n"))),
            "BLANK" => Some(OsString::from(" \n")),
            _ => None,
        }
    }

    fn assert_hidden(shown: &str) {
        assert!(!shown.contains(KEY), "the key leaked: {shown}");
    }

    #[test]
    fn reads_the_key_from_the_environment() {
        let key = ApiKey::read(Some("VERTEX_KEY"), None, env_with_key).unwrap();
        assert_eq!(key.header_value(), KEY);
        assert!(key.header_value().is_sensitive());
        assert_hidden(&format!("{key:?} {:?}", key.header_value()));
    }

    #[test]
    fn reads_the_key_from_a_file_without_its_newline() {
        let file = TempFile::new("api-key", format!("{KEY}\r\n").as_bytes());
        let key = ApiKey::read(None, Some(file.path()), env_with_key).unwrap();
        assert_eq!(key.header_value(), KEY);
    }

    #[test]
    fn problems_name_the_config_key_and_never_the_key() {
        let empty = TempFile::new("api-key-empty", b"\n");
        let bad = TempFile::new("api-key-bad", format!("{KEY}\u{1}x").as_bytes());
        let missing = empty.path().with_extension("missing");
        let cases: [(Option<&str>, Option<&Path>, &str, &str); 7] = [
            (None, None, "env", "set env"),
            (Some("VERTEX_KEY"), Some(empty.path()), "env", "not both"),
            (
                Some("UNSET"),
                None,
                "env",
                "environment variable UNSET is not set",
            ),
            (
                Some("BLANK"),
                None,
                "env",
                "environment variable BLANK is empty",
            ),
            (None, Some(empty.path()), "file", "is empty"),
            (None, Some(&missing), "file", "cannot read"),
            (None, Some(bad.path()), "file", "characters not allowed"),
        ];
        for (env, file, key, why) in cases {
            let (got_key, got_why) = ApiKey::read(env, file, env_with_key).unwrap_err();
            assert_eq!(got_key, key, "{got_why}");
            assert!(got_why.contains(why), "{got_why}");
            assert_hidden(&got_why);
        }
    }
}
