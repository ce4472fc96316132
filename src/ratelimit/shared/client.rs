//! Connections to Redis (fred clients), one set per worker. A fred client is driven by a
//! routing task on the runtime that connected it; each worker runs its own single-threaded
//! runtime, so each worker opens its own connections, lazily, on its first call, and no
//! call wakes another worker's thread. Reconnection is fred's (backing off from 10 ms to
//! 1 s, forever); a call never waits for it longer than the store's timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::{Client, Options, ReconnectPolicy};
use fred::types::config::{Config, TlsConnector, UnresponsiveConfig};
use fred::types::{Builder, ConnectHandle, FromValue, Key, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::{ConfigProblem, SharedStoreConfig};
use super::script::Adjustment;
use super::{Common, StoreError, reconcile};

/// A script and its SHA-1, for `EVALSHA` with a fallback to `EVAL`.
pub(super) struct Lua {
    pub text: &'static str,
    pub sha: &'static str,
}

/// Builds the fred clients of every worker from one checked configuration.
pub(super) struct Connector {
    builder: Builder,
}

impl Connector {
    pub fn new(cfg: &SharedStoreConfig) -> Result<Connector, ConfigProblem> {
        let bad = |key: &str, why: String| (key.to_owned(), why);
        // TLS is set up here (webpki roots and `ca_file`, as upstream clients), so the URL
        // is read as its plain-text twin.
        let (url, uses_tls) = plain_url(cfg.url.trim());
        let mut config = Config::from_url(&url).map_err(|e| bad("url", e.details().to_owned()))?;
        if config.password.is_some() {
            return Err(bad(
                "url",
                "holds a password: give it in password_env or password_file instead".into(),
            ));
        }
        config.password = cfg.password()?;
        // A Redis that is down at start-up is retried like a lost connection.
        config.fail_fast = false;
        if uses_tls {
            config.tls = Some(
                tls(cfg.ca_file.as_deref())
                    .map_err(|why| bad("ca_file", why))?
                    .into(),
            );
        } else if cfg.ca_file.is_some() {
            return Err(bad("ca_file", "is for TLS (rediss://) only".into()));
        }
        let timeout = cfg.timeout.0;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = timeout.max(Duration::from_secs(1));
                c.internal_command_timeout = timeout.max(Duration::from_secs(1));
                c.max_command_attempts = 1;
                c.tcp.nodelay = Some(true);
                // A connection that stops answering (a hung server, a dropped route) is
                // closed and opened again rather than waited on.
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(timeout.saturating_mul(20).max(Duration::from_secs(1))),
                    interval: Duration::from_millis(250),
                };
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 10, 1_000, 2));
        builder
            .build()
            .map_err(|e| bad("url", e.details().to_owned()))?;
        Ok(Connector { builder })
    }
}

/// `url` with a TLS scheme (`rediss`, `rediss-cluster`, `valkeys`, ...) turned into its
/// plain-text one, and whether it had one.
fn plain_url(url: &str) -> (String, bool) {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("rediss") || scheme.starts_with("valkeys") => {
            let scheme = scheme
                .replacen("rediss", "redis", 1)
                .replacen("valkeys", "valkey", 1);
            (format!("{scheme}://{rest}"), true)
        }
        _ => (url.to_owned(), false),
    }
}

/// rustls with the webpki roots and the certificates of `ca_file`, as upstream clients.
fn tls(ca_file: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    crate::upstream::client::tls_config(ca_file).map(TlsConnector::from)
}

/// One worker's connections and true-up queue, and the task that owns them.
pub(super) struct Slot {
    clients: Box<[Client]>,
    turn: AtomicUsize,
    pub queue: mpsc::Sender<Adjustment>,
    /// The owner task: sends true-ups; on stop, flushes them and closes the connections.
    pub owner: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Slot {
    /// Opens `size` connections and starts the owner task, on the current runtime.
    pub fn start(
        connector: &Connector,
        size: usize,
        queue: usize,
        common: Arc<Common>,
        stop: watch::Receiver<bool>,
    ) -> Result<Slot, StoreError> {
        let mut clients = Vec::with_capacity(size);
        let mut routers: Vec<ConnectHandle> = Vec::with_capacity(size);
        for _ in 0..size.max(1) {
            let client = connector
                .builder
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            routers.push(client.connect());
            clients.push(client);
        }
        let (tx, rx) = mpsc::channel(queue.max(1));
        let owner = tokio::spawn(reconcile::run(
            rx,
            clients.clone().into(),
            routers,
            common,
            stop,
        ));
        Ok(Slot {
            clients: clients.into(),
            turn: AtomicUsize::new(0),
            queue: tx,
            owner: std::sync::Mutex::new(Some(owner)),
        })
    }

    /// The next connection, in turn.
    pub fn client(&self) -> &Client {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.clients[turn % self.clients.len()]
    }
}

/// Runs `lua` with the keys and arguments `args` builds, within `common.timeout` all told:
/// waiting for a connection, `EVALSHA`, and on `NOSCRIPT` (a restarted or flushed Redis)
/// one `EVAL` with the whole script, which caches it again.
pub(super) async fn call<R: FromValue>(
    client: &Client,
    lua: &Lua,
    args: impl Fn() -> (Vec<Key>, Vec<Value>),
    common: &Common,
) -> Result<R, StoreError> {
    let deadline = tokio::time::Instant::now() + common.timeout;
    let attempt = async {
        if !client.is_connected() {
            client.wait_for_connect().await.map_err(store_error)?;
        }
        let options = Options {
            timeout: Some(deadline.saturating_duration_since(tokio::time::Instant::now())),
            // Never queued inside the client while it reconnects, never sent twice.
            fail_fast: true,
            max_attempts: Some(1),
            ..Options::default()
        };
        let client = client.with_options(&options);
        let (keys, values) = args();
        match client
            .evalsha::<R, _, _, _>(fred::util::static_str(lua.sha), keys, values)
            .await
        {
            Err(err) if err.details().starts_with("NOSCRIPT") => {
                common
                    .counters
                    .script_reloads
                    .fetch_add(1, Ordering::Relaxed);
                let (keys, values) = args();
                client
                    .eval::<R, _, _, _>(fred::util::static_str(lua.text), keys, values)
                    .await
                    .map_err(store_error)
            }
            reply => reply.map_err(store_error),
        }
    };
    tokio::time::timeout_at(deadline, attempt)
        .await
        .unwrap_or(Err(StoreError::Timeout))
}

fn store_error(err: FredError) -> StoreError {
    match err.kind() {
        ErrorKind::Timeout => StoreError::Timeout,
        ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Tls
        | ErrorKind::Auth
        | ErrorKind::Routing
        | ErrorKind::Cluster => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Redis(err.details().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(yaml: &str) -> Result<Connector, ConfigProblem> {
        Connector::new(&serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn urls_are_checked_and_passwords_stay_out_of_them() {
        assert!(connector("url: redis://127.0.0.1:6390/1\n").is_ok());
        assert!(connector("url: redis://tollgate@127.0.0.1:6390/1\n").is_ok());
        assert!(connector("url: rediss://cache.example:6380/0\n").is_ok());
        assert!(connector("url: redis-cluster://127.0.0.1:7000\n").is_ok());
        let inline = connector("url: redis://user:hunter2@127.0.0.1:6390/0\n")
            .err()
            .unwrap();
        assert_eq!(inline.0, "url");
        assert!(!inline.1.contains("hunter2"));
        assert_eq!(connector("url: 'not a url'\n").err().unwrap().0, "url");
        assert_eq!(
            connector("url: redis://127.0.0.1\nca_file: /nonexistent\n")
                .err()
                .unwrap()
                .0,
            "ca_file"
        );
        assert_eq!(
            connector("url: rediss://127.0.0.1\nca_file: /nonexistent/ca.pem\n")
                .err()
                .unwrap()
                .0,
            "ca_file"
        );
    }

    #[test]
    fn tls_schemes_are_read_as_their_plain_twins() {
        assert_eq!(
            plain_url("rediss://h:1/0"),
            ("redis://h:1/0".to_owned(), true)
        );
        assert_eq!(
            plain_url("rediss-cluster://h:1"),
            ("redis-cluster://h:1".to_owned(), true)
        );
        assert_eq!(plain_url("valkeys://h"), ("valkey://h".to_owned(), true));
        assert_eq!(plain_url("redis://h"), ("redis://h".to_owned(), false));
        assert_eq!(plain_url("h:6379"), ("h:6379".to_owned(), false));
    }

    #[test]
    fn client_errors_map_to_store_errors() {
        let io = FredError::new(ErrorKind::IO, "connection reset");
        assert!(matches!(store_error(io), StoreError::Unavailable(_)));
        let timeout = FredError::new(ErrorKind::Timeout, "slow");
        assert_eq!(store_error(timeout), StoreError::Timeout);
        let script = FredError::new(ErrorKind::Unknown, "ERR Error running script");
        assert_eq!(
            store_error(script),
            StoreError::Redis("ERR Error running script".into())
        );
    }
}
