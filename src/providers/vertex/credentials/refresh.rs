//! The token source every request of a provider shares: a cached `Bearer` header read
//! without a lock, and one background refresher that fetches a new token well before the
//! old one expires, retries failures with backoff, and stops with its owner.
//!
//! The refresher is started by the first call that needs a token, on that caller's Tokio
//! runtime (a worker's), so compiling a config (also offline, in `tollgate check`) starts
//! nothing, and a source that a reload replaces before it serves costs nothing. It ends when
//! the source is dropped (its handle is aborted) or when its runtime ends at shutdown; if
//! its runtime ends while the source is still in use, the next caller that needs it starts
//! it again on its own runtime, keeping the cached token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::{CredentialsError, CredentialsErrorKind};

/// How long before expiry a token is replaced: what Google's own client libraries use.
/// Tokens living less than twice this are replaced at half their life instead.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(3 * 60 + 45);

/// A token is not handed out in its last seconds, so that it is still valid when the request
/// carrying it reaches Google.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Longest a fetch may take before it counts as failed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest a caller waits for a token that is being fetched: one fetch, and some slack.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// First retry delay after a failed fetch; each further failure doubles it up to
/// [`MAX_RETRY_DELAY`]. Every delay is jittered down by up to half, so replicas that failed
/// together do not retry together.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest step between retries, so a token endpoint back from an outage is tried
/// again within a minute.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Token lifetimes are capped at this (Google's are an hour), whatever a server says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The next fetch is never sooner than this after the last, whatever a server says, so a
/// token "valid for 0 s" cannot make the refresher spin.
const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// An access token as a token server issued it.
pub struct FetchedToken {
    access_token: String,
    expires_in: Duration,
}

impl FetchedToken {
    /// A token valid for `expires_in` from when it was asked for.
    pub fn new(access_token: String, expires_in: Duration) -> FetchedToken {
        FetchedToken {
            access_token,
            expires_in,
        }
    }

    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
}

impl fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// One way of getting an access token: the service-account exchange, the metadata server,
/// or (in tests) a script.
pub trait FetchToken: Send + Sync + 'static {
    /// Asks for a new token once. Retrying and timing out are the refresher's business.
    fn fetch(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<FetchedToken, CredentialsError>> + Send + '_>>;

    /// Where tokens come from, for logs (no secret).
    fn describe(&self) -> String;
}

/// A token ready to be sent, and when it stops being usable.
struct CachedToken {
    /// `Bearer ...`, marked sensitive.
    header: HeaderValue,
    /// When the refresher fetches the next one.
    refresh_at: Instant,
    /// After this the token is not handed out.
    usable_until: Instant,
}

/// What callers read: the newest token, and the failure of the last fetch if it failed.
#[derive(Default)]
struct State {
    token: Option<Arc<CachedToken>>,
    /// Set when the last fetch failed, cleared by a success; worded for callers.
    failure: Option<CredentialsError>,
}

enum Outcome {
    Token(HeaderValue),
    Failed(CredentialsError),
    Pending,
}

impl State {
    fn outcome(&self, now: Instant) -> Outcome {
        match (&self.token, &self.failure) {
            (Some(token), _) if now < token.usable_until => Outcome::Token(token.header.clone()),
            (_, Some(failure)) => Outcome::Failed(failure.clone()),
            _ => Outcome::Pending,
        }
    }
}

/// What the source and its refresher share.
struct Inner {
    fetcher: Box<dyn FetchToken>,
    state: ArcSwap<State>,
    /// Rung after every change of `state`, and when a refresher ends.
    changed: Notify,
    /// Generation of the refresher that is running, 0 when none is.
    running: AtomicU64,
    /// The last generation handed out (changed only under the task lock).
    generations: AtomicU64,
}

/// Access tokens for one provider, shared by all its requests (hold it in an `Arc`).
///
/// [`TokenSource::authorization`] answers from the cache with an atomic load when a valid
/// token is cached; only the first calls (and calls after the token expired) wait, and
/// however many wait, one fetch is in flight. Dropping the source stops its refresher.
pub struct TokenSource {
    inner: Arc<Inner>,
    /// The refresher's handle: taken only to start or stop it, never on the cached path.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TokenSource {
    /// A source getting its tokens from `fetcher`. Starts nothing yet.
    pub fn new(fetcher: impl FetchToken) -> TokenSource {
        TokenSource {
            inner: Arc::new(Inner {
                fetcher: Box::new(fetcher),
                state: ArcSwap::from_pointee(State::default()),
                changed: Notify::new(),
                running: AtomicU64::new(0),
                generations: AtomicU64::new(0),
            }),
            task: Mutex::new(None),
        }
    }

    /// The `Authorization` header value (`Bearer TOKEN`, marked sensitive) for a request
    /// sent now.
    ///
    /// With a valid token cached this is an atomic load and a reference-count increment.
    /// Otherwise it starts the refresher if it is not running (so it must be called inside
    /// a Tokio runtime) and waits for the token, at most [`MAX_WAIT`]; it fails at once if
    /// the last fetch failed and no valid token is left.
    pub async fn authorization(&self) -> Result<HeaderValue, CredentialsError> {
        let now = Instant::now();
        if let Some(token) = &self.inner.state.load().token {
            // Past `refresh_at` the refresher should be fetching: check it still runs.
            let refreshing = || self.inner.running.load(Acquire) != 0;
            if now < token.refresh_at || (now < token.usable_until && refreshing()) {
                return Ok(token.header.clone());
            }
        }
        self.wait_for_token().await
    }

    async fn wait_for_token(&self) -> Result<HeaderValue, CredentialsError> {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.inner.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            self.ensure_refresher()?;
            match self.inner.state.load().outcome(Instant::now()) {
                Outcome::Token(header) => return Ok(header),
                Outcome::Failed(failure) => return Err(failure),
                Outcome::Pending => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(CredentialsError::unavailable(format!(
                    "no access token came within {} s",
                    MAX_WAIT.as_secs()
                )));
            }
        }
    }

    /// Starts the refresher on the caller's runtime unless one is running.
    fn ensure_refresher(&self) -> Result<(), CredentialsError> {
        if self.inner.running.load(Acquire) != 0 {
            return Ok(());
        }
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if self.inner.running.load(Acquire) != 0 {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            CredentialsError::new(
                CredentialsErrorKind::NoRuntime,
                "the token refresher needs a Tokio runtime",
            )
        })?;
        let generation = self.inner.generations.fetch_add(1, Relaxed) + 1;
        self.inner.running.store(generation, Relaxed);
        // Built here, not inside the task, so that a task dropped before its first poll
        // (its runtime shutting down) still marks the refresher as gone.
        let running = Running {
            inner: self.inner.clone(),
            generation,
        };
        if let Some(ended) = task.replace(runtime.spawn(refresh(running))) {
            ended.abort();
        }
        Ok(())
    }

    /// The refresher's generation, 0 when none runs (for tests).
    #[cfg(test)]
    fn running(&self) -> u64 {
        self.inner.running.load(Acquire)
    }

    /// Where tokens come from, for logs.
    pub fn describe(&self) -> String {
        self.inner.fetcher.describe()
    }
}

impl Drop for TokenSource {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(refresher) = task.take() {
            refresher.abort();
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        f.debug_struct("TokenSource")
            .field("from", &self.inner.fetcher.describe())
            .field("has_token", &state.token.is_some())
            .field("failing", &state.failure.is_some())
            .finish_non_exhaustive()
    }
}

/// Marks the refresher of `generation` as running while it lives; its drop (the task ends,
/// is aborted, or its runtime drops it) clears the mark and wakes waiters so that one of
/// them starts a new refresher.
struct Running {
    inner: Arc<Inner>,
    generation: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self
            .inner
            .running
            .compare_exchange(self.generation, 0, AcqRel, Relaxed);
        self.inner.changed.notify_waiters();
    }
}

/// When to fetch next and until when a token may be used, for a token asked for at
/// `asked_at` and valid for `expires_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Schedule {
    refresh_at: Instant,
    usable_until: Instant,
}

impl Schedule {
    fn new(asked_at: Instant, expires_in: Duration) -> Schedule {
        // Counted from when the token was asked for, not received: never later than Google.
        let lifetime = expires_in.min(MAX_TOKEN_LIFETIME);
        let expires_at = asked_at + lifetime;
        let lead = REFRESH_BEFORE_EXPIRY.min(lifetime / 2);
        Schedule {
            refresh_at: (expires_at - lead).max(asked_at + MIN_REFRESH_DELAY),
            usable_until: expires_at - EXPIRY_MARGIN.min(lifetime / 10),
        }
    }
}

/// Retry delays after failed fetches: doubling, capped, jittered.
struct Backoff {
    next: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_RETRY_DELAY,
            rng: fastrand::Rng::new(),
        }
    }

    /// The delay before the next retry: between half of the current step and all of it.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(MAX_RETRY_DELAY);
        let half = step / 2;
        let jitter_ms = self.rng.u64(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY_DELAY;
    }
}

/// The refresher: fetches, publishes, sleeps until the next refresh (or retry), forever;
/// it ends by being aborted or dropped with its runtime.
async fn refresh(running: Running) {
    let inner = &*running.inner;
    let mut backoff = Backoff::new();
    loop {
        let asked_at = Instant::now();
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, inner.fetcher.fetch()).await {
            Ok(fetched) => fetched,
            Err(_) => Err(CredentialsError::unavailable(format!(
                "no token within {} s",
                FETCH_TIMEOUT.as_secs()
            ))),
        };
        let fetched = fetched.and_then(|token| {
            let header = bearer(&token.access_token)?;
            Ok((header, Schedule::new(asked_at, token.expires_in)))
        });
        let wake_at = match fetched {
            Ok((header, schedule)) => {
                backoff.reset();
                inner.state.store(Arc::new(State {
                    token: Some(Arc::new(CachedToken {
                        header,
                        refresh_at: schedule.refresh_at,
                        usable_until: schedule.usable_until,
                    })),
                    failure: None,
                }));
                tracing::debug!(from = %inner.fetcher.describe(), "new Vertex AI access token");
                schedule.refresh_at
            }
            Err(err) => {
                let delay = backoff.delay();
                let state = inner.state.load();
                let valid_for = state
                    .token
                    .as_ref()
                    .map(|token| token.usable_until.saturating_duration_since(Instant::now()));
                tracing::warn!(
                    from = %inner.fetcher.describe(),
                    error = %err,
                    retry_in_ms = delay.as_millis() as u64,
                    token_valid_for_s = valid_for.map(|d| d.as_secs()),
                    "cannot get a Vertex AI access token"
                );
                inner.state.store(Arc::new(State {
                    token: state.token.clone(),
                    failure: Some(err.context("no valid access token; the last attempt failed")),
                }));
                Instant::now() + delay
            }
        };
        inner.changed.notify_waiters();
        tokio::time::sleep_until(wake_at).await;
    }
}

/// `Bearer TOKEN` as a sensitive header value.
fn bearer(access_token: &str) -> Result<HeaderValue, CredentialsError> {
    let mut value = String::with_capacity(7 + access_token.len());
    value.push_str("Bearer ");
    value.push_str(access_token);
    super::sensitive_header(value).ok_or_else(|| {
        CredentialsError::unavailable("the access token holds characters not allowed in a header")
    })
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
