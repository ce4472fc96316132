//! The shared store's settings as written: where Redis is, how long a decision may wait for
//! it, the hash tag every limit key carries, and when the circuit breaker opens.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigDuration;

/// A config problem: the key (below the shared-store section) and why.
pub type ConfigProblem = (String, String);

/// Shared-mode rate limits: every replica keeps its buckets in one Redis (or Valkey).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedStoreConfig {
    /// `redis://HOST:PORT/DB`; `rediss://` for TLS; `redis-cluster://HOST:PORT` (or
    /// `rediss-cluster://`) for Redis Cluster. An ACL user name may stand in the URL
    /// (`redis://tollgate@HOST:6379/0`); a password may not: see `password_env` and
    /// `password_file`.
    pub url: String,
    /// Name of an environment variable holding the Redis password.
    pub password_env: Option<String>,
    /// Path of a file holding the Redis password (surrounding whitespace ignored).
    pub password_file: Option<PathBuf>,
    /// PEM file with extra CA certificates trusted beside the webpki roots (`rediss://`).
    pub ca_file: Option<PathBuf>,
    /// Longest a decision or a true-up waits for Redis, connecting included; past it the
    /// call fails with a timeout and the limit's fail-open or fail-closed policy applies.
    pub timeout: ConfigDuration,
    /// The Redis Cluster hash tag at the front of every limit key, `{name}`. One tag keeps
    /// all limit keys in one slot, so on one shard: that is what lets one script check and
    /// reserve every bucket of a request atomically. Replicas sharing limits must use the
    /// same tag; gateways that must not share them use different ones.
    pub hash_tag: String,
    /// Connections to Redis each worker keeps (one is enough: commands are pipelined).
    pub pool_size: usize,
    /// True-ups each worker may hold waiting to be sent; more are dropped and counted.
    pub reconcile_queue: usize,
    pub breaker: BreakerConfig,
}

/// When Redis looks dead: `failures` calls in a row fail, and calls stop for `cool_down`;
/// then one call probes it, which closes the breaker on success or opens it again.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cool_down: ConfigDuration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cool_down: ConfigDuration::from_secs(2),
        }
    }
}

impl Default for SharedStoreConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            password_env: None,
            password_file: None,
            ca_file: None,
            timeout: ConfigDuration::from_millis(50),
            hash_tag: DEFAULT_HASH_TAG.into(),
            pool_size: 1,
            reconcile_queue: 4096,
            breaker: BreakerConfig::default(),
        }
    }
}

pub const DEFAULT_HASH_TAG: &str = "{tollgate}";

/// Most connections per worker.
const MAX_POOL_SIZE: usize = 16;

/// Longest allowed `timeout`: a decision sits on the request path.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

impl SharedStoreConfig {
    /// Checks what can be checked without Redis.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let problem = |key: &str, why: String| Err((key.to_owned(), why));
        if self.url.trim().is_empty() {
            return problem("url", "is empty".into());
        }
        if let Err(why) = check_hash_tag(&self.hash_tag) {
            return problem("hash_tag", why);
        }
        if self.timeout.0.is_zero() || self.timeout.0 > MAX_TIMEOUT {
            return problem(
                "timeout",
                format!("must be above 0 and at most {}s", MAX_TIMEOUT.as_secs()),
            );
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return problem("pool_size", format!("must be 1 to {MAX_POOL_SIZE}"));
        }
        if self.reconcile_queue == 0 {
            return problem("reconcile_queue", "must be at least 1".into());
        }
        if self.breaker.failures == 0 {
            return problem("breaker.failures", "must be at least 1".into());
        }
        Ok(())
    }

    /// The password from `password_env` or `password_file`, when one is set.
    pub fn password(&self) -> Result<Option<String>, ConfigProblem> {
        match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => Err((
                "password_env".into(),
                "set password_env or password_file, not both".into(),
            )),
            (Some(var), None) => match std::env::var(var) {
                Ok(password) if !password.trim().is_empty() => Ok(Some(password.trim().to_owned())),
                _ => Err((
                    "password_env".into(),
                    format!("environment variable {var} is not set or empty"),
                )),
            },
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(password) if !password.trim().is_empty() => Ok(Some(password.trim().to_owned())),
                Ok(_) => Err((
                    "password_file".into(),
                    format!("{} is empty", path.display()),
                )),
                Err(err) => Err((
                    "password_file".into(),
                    format!("cannot read {}: {err}", path.display()),
                )),
            },
            (None, None) => Ok(None),
        }
    }
}

/// A hash tag is `{name}`: Redis Cluster hashes only what stands between the first `{` and
/// the next `}`, so the name may hold neither brace.
pub fn check_hash_tag(tag: &str) -> Result<(), String> {
    let name = tag
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| format!("`{tag}` must be written `{{name}}`"))?;
    if name.is_empty() || name.contains(['{', '}']) {
        return Err(format!("`{tag}` must hold a non-empty name without braces"));
    }
    if name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "`{tag}` must not hold spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<SharedStoreConfig, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = parse("{}").unwrap();
        assert_eq!(config, SharedStoreConfig::default());
        assert_eq!(config.url, "redis://127.0.0.1:6379/0");
        assert_eq!(config.timeout.0, Duration::from_millis(50));
        assert_eq!(config.hash_tag, "{tollgate}");
        assert_eq!(config.pool_size, 1);
        assert_eq!(config.breaker.failures, 5);
        assert_eq!(config.breaker.cool_down.0, Duration::from_secs(2));
        config.validate().unwrap();
    }

    #[test]
    fn every_field_reads_and_unknown_keys_are_refused() {
        let config = parse(
            "url: rediss://cache:6380/2\npassword_env: REDIS_PW\ntimeout: 20ms\nhash_tag: '{gw-a}'\npool_size: 2\nreconcile_queue: 10\nbreaker:\n  failures: 3\n  cool_down: 500ms\n",
        )
        .unwrap();
        assert_eq!(config.timeout.0, Duration::from_millis(20));
        assert_eq!(config.breaker.cool_down.0, Duration::from_millis(500));
        assert_eq!(config.pool_size, 2);
        assert!(
            parse("password: hunter2\n")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse("breaker:\n  failure: 3\n")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(parse("timeout: 50\n").unwrap_err().contains("no unit"));
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |edit: fn(&mut SharedStoreConfig)| {
            let mut config = SharedStoreConfig::default();
            edit(&mut config);
            config.validate().unwrap_err().0
        };
        assert_eq!(bad(|c| c.hash_tag = "tollgate".into()), "hash_tag");
        assert_eq!(bad(|c| c.hash_tag = "{}".into()), "hash_tag");
        assert_eq!(bad(|c| c.hash_tag = "{a}b}".into()), "hash_tag");
        assert_eq!(
            bad(|c| c.timeout = ConfigDuration::from_millis(0)),
            "timeout"
        );
        assert_eq!(bad(|c| c.pool_size = 0), "pool_size");
        assert_eq!(bad(|c| c.breaker.failures = 0), "breaker.failures");
        assert_eq!(bad(|c| c.url = " ".into()), "url");
    }

    #[test]
    fn the_password_comes_from_a_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("tollgate-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let config = SharedStoreConfig {
            password_file: Some(file.clone()),
            ..SharedStoreConfig::default()
        };
        assert_eq!(config.password().unwrap().as_deref(), Some("s3cret"));
        let both = SharedStoreConfig {
            password_env: Some("X".into()),
            ..config.clone()
        };
        assert_eq!(both.password().unwrap_err().0, "password_env");
        let unset = SharedStoreConfig {
            password_env: Some("TOLLGATE_TEST_SURELY_UNSET_PASSWORD".into()),
            ..SharedStoreConfig::default()
        };
        assert!(unset.password().unwrap_err().1.contains("not set"));
        assert_eq!(SharedStoreConfig::default().password().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
