//! Tests of the credentials entry point: config problems, fingerprints, and that nothing
//! printable holds a secret. Also the helpers the other test files share.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::providers::vertex::credentials::jwt::tests::TEST_KEY_FILE;

/// A file in the temp directory, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, content: &[u8]) -> TempFile {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tollgate-vertex-credentials-{}-{unique}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, content).unwrap();
        TempFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The test key file with `token_uri` replaced.
pub fn key_file_json(token_uri: &str) -> String {
    let mut file: serde_json::Value = serde_json::from_str(TEST_KEY_FILE).unwrap();
    file["token_uri"] = token_uri.into();
    file.to_string()
}

/// The base64 body of the test private key, a piece of which must never be printed.
pub fn private_key_piece() -> String {
    let file: serde_json::Value = serde_json::from_str(TEST_KEY_FILE).unwrap();
    let pem = file["private_key"].as_str().unwrap();
    let line = pem.lines().nth(5).unwrap();
    assert!(line.len() >= 32, "a base64 line of the key");
    line[..32].to_owned()
}

fn service_account(path: &Path) -> VertexCredentials {
    VertexCredentials::ServiceAccount {
        key_file: path.to_path_buf(),
    }
}

#[test]
fn service_account_from_config_starts_nothing_and_hides_the_key() {
    let file = TempFile::new(
        "sa.json",
        key_file_json("http://127.0.0.1:9/token").as_bytes(),
    );
    // No runtime here: compiling a config (as `tollgate check` does) must not need one.
    let credentials = Credentials::from_config(&service_account(file.path())).unwrap();
    let source = credentials.token_source().unwrap();
    assert!(!credentials.is_api_key());
    let shown = format!("{credentials:?} {source:?}");
    assert!(shown.contains("tollgate-test@"), "{shown}");
    assert!(!shown.contains(&private_key_piece()), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[test]
fn key_file_problems_name_the_key_file() {
    let missing = std::env::temp_dir().join("tollgate-vertex-credentials-no-such-file.json");
    let (key, why) = Credentials::from_config(&service_account(&missing)).unwrap_err();
    assert_eq!(key, "key_file");
    assert!(why.starts_with("cannot read"), "{why}");

    let mut no_email: serde_json::Value = serde_json::from_str(TEST_KEY_FILE).unwrap();
    no_email.as_object_mut().unwrap().remove("client_email");
    let file = TempFile::new("no-email.json", no_email.to_string().as_bytes());
    let (key, why) = Credentials::from_config(&service_account(file.path())).unwrap_err();
    assert_eq!(key, "key_file");
    assert!(why.ends_with("`client_email` is missing"), "{why}");
    assert!(why.contains(&*file.path().to_string_lossy()), "{why}");

    let huge = TempFile::new("huge.json", &vec![b' '; 70 * 1024]);
    let (_, why) = Credentials::from_config(&service_account(huge.path())).unwrap_err();
    assert!(why.contains("larger than 64 KiB"), "{why}");
}

#[test]
fn metadata_server_from_config() {
    let credentials = Credentials::from_config(&VertexCredentials::MetadataServer {
        host: "127.0.0.1:8089".into(),
    })
    .unwrap();
    let shown = format!("{credentials:?}");
    assert!(
        shown.contains("the metadata server 127.0.0.1:8089"),
        "{shown}"
    );
    let (key, why) = Credentials::from_config(&VertexCredentials::MetadataServer {
        host: "http://x/".into(),
    })
    .unwrap_err();
    assert_eq!(key, "host");
    assert!(why.contains("host[:port]"), "{why}");
}

#[test]
fn api_key_from_config_names_the_config_key() {
    let key = "AIzaSy-test-only-from-config";
    let file = TempFile::new("key.txt", format!("{key}\n").as_bytes());
    let credentials = Credentials::from_config(&VertexCredentials::ApiKey {
        env: None,
        file: Some(file.path().to_path_buf()),
    })
    .unwrap();
    assert!(credentials.is_api_key());
    assert!(credentials.token_source().is_none());
    assert_eq!(format!("{credentials:?}"), "Credentials(ApiKey { .. })");
    let (name, value) = futures_util::FutureExt::now_or_never(credentials.header())
        .unwrap()
        .unwrap();
    assert_eq!(name, "x-goog-api-key");
    assert_eq!(value, key);
    assert!(value.is_sensitive());
    assert!(!format!("{value:?}").contains(key));

    let (name, why) = Credentials::from_config(&VertexCredentials::ApiKey {
        env: Some("TOLLGATE_TEST_SURELY_UNSET_VARIABLE".into()),
        file: None,
    })
    .unwrap_err();
    assert_eq!(name, "env");
    assert!(why.contains("is not set"), "{why}");
}

#[test]
fn fingerprint_follows_the_key_file_content() {
    let first = TempFile::new(
        "fp1.json",
        key_file_json("http://127.0.0.1:9/token").as_bytes(),
    );
    let fingerprint = |path: &Path| {
        Credentials::from_config(&service_account(path))
            .unwrap()
            .fingerprint()
    };
    assert_eq!(fingerprint(first.path()), fingerprint(first.path()));
    std::fs::write(first.path(), key_file_json("http://127.0.0.1:10/token")).unwrap();
    let rotated = fingerprint(first.path());
    std::fs::write(first.path(), key_file_json("http://127.0.0.1:9/token")).unwrap();
    assert_ne!(rotated, fingerprint(first.path()));
    let other_http = TokenHttp {
        ca_file: None,
        connect_timeout: Duration::from_secs(1),
    };
    let with_other_http =
        Credentials::from_config_with(&service_account(first.path()), &other_http)
            .unwrap()
            .fingerprint();
    assert_ne!(with_other_http, fingerprint(first.path()));
}

#[test]
fn errors_show_no_secret() {
    let err =
        CredentialsError::rejected("the token endpoint answered 400 Bad Request: invalid_grant");
    assert_eq!(
        err.to_string(),
        "Vertex AI credentials: the token endpoint answered 400 Bad Request: invalid_grant"
    );
    assert_eq!(err.kind(), CredentialsErrorKind::Rejected);
    let wrapped = err.context("no valid access token");
    assert_eq!(
        format!("{wrapped:?}"),
        "CredentialsError { kind: Rejected, message: \"no valid access token: the token endpoint answered 400 Bad Request: invalid_grant\" }"
    );
}
