//! The token source's timing and ownership, on paused Tokio time with a scripted fetcher:
//! nothing here sleeps or touches the network.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio::time::advance;

use super::*;

const FIRST: &str = "ya29.first-secret-token";
const SECOND: &str = "ya29.second-secret-token";
const HOUR: Duration = Duration::from_secs(3600);

/// What the scripted fetcher answers, in order; past the end it fails.
struct Script {
    answers: Mutex<VecDeque<Result<(&'static str, Duration), CredentialsErrorKind>>>,
    calls: AtomicUsize,
    /// A fetch takes one permit, and waits while there is none.
    gate: Semaphore,
}

#[derive(Clone)]
struct ScriptedFetch(Arc<Script>);

impl ScriptedFetch {
    fn new(
        answers: impl IntoIterator<Item = Result<(&'static str, Duration), CredentialsErrorKind>>,
    ) -> Self {
        Self::gated(answers, Semaphore::MAX_PERMITS)
    }

    /// A fetcher whose first `open` fetches go through at once; the rest wait for `release`.
    fn gated(
        answers: impl IntoIterator<Item = Result<(&'static str, Duration), CredentialsErrorKind>>,
        open: usize,
    ) -> Self {
        ScriptedFetch(Arc::new(Script {
            answers: Mutex::new(answers.into_iter().collect()),
            calls: AtomicUsize::new(0),
            gate: Semaphore::new(open),
        }))
    }

    fn calls(&self) -> usize {
        self.0.calls.load(SeqCst)
    }

    fn release(&self, fetches: usize) {
        self.0.gate.add_permits(fetches);
    }

    fn push(&self, answer: Result<(&'static str, Duration), CredentialsErrorKind>) {
        self.0.answers.lock().unwrap().push_back(answer);
    }
}

impl FetchToken for ScriptedFetch {
    fn fetch(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<FetchedToken, CredentialsError>> + Send + '_>> {
        Box::pin(async move {
            self.0.calls.fetch_add(1, SeqCst);
            self.0.gate.acquire().await.unwrap().forget();
            match self.0.answers.lock().unwrap().pop_front() {
                Some(Ok((token, expires_in))) => {
                    Ok(FetchedToken::new(token.to_owned(), expires_in))
                }
                Some(Err(kind)) => Err(CredentialsError::new(kind, "scripted failure")),
                None => Err(CredentialsError::unavailable(
                    "scripted failure (script over)",
                )),
            }
        })
    }

    fn describe(&self) -> String {
        "the script".into()
    }
}

fn ok(
    token: &'static str,
    expires_in: Duration,
) -> Result<(&'static str, Duration), CredentialsErrorKind> {
    Ok((token, expires_in))
}

/// Lets the refresher (on this single-threaded test runtime) run until it waits again.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// The header if `authorization` answers without waiting.
fn at_once(source: &TokenSource) -> Option<Result<HeaderValue, CredentialsError>> {
    source.authorization().now_or_never()
}

fn bearer_of(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn first_call_waits_for_the_first_fetch_then_the_cache_answers() {
    let script = ScriptedFetch::new([ok(FIRST, HOUR)]);
    let source = TokenSource::new(script.clone());
    assert_eq!(script.calls(), 0, "nothing is fetched before it is needed");
    let header = source.authorization().await.unwrap();
    assert_eq!(header, bearer_of(FIRST));
    assert!(header.is_sensitive());
    advance(Duration::from_secs(3000)).await;
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(FIRST));
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn one_fetch_for_100_concurrent_callers() {
    let script = ScriptedFetch::gated([ok(FIRST, HOUR)], 0);
    let source = Arc::new(TokenSource::new(script.clone()));
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.authorization().await })
        })
        .collect();
    settle().await;
    assert_eq!(
        script.calls(),
        1,
        "one fetch in flight while 100 callers wait"
    );
    script.release(1);
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), bearer_of(FIRST));
    }
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshes_before_expiry_while_callers_keep_the_old_token() {
    let script = ScriptedFetch::gated([ok(FIRST, HOUR), ok(SECOND, HOUR)], 1);
    let source = TokenSource::new(script.clone());
    source.authorization().await.unwrap();
    let refresh_at = HOUR - REFRESH_BEFORE_EXPIRY;
    advance(refresh_at - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(
        script.calls(),
        1,
        "not before {REFRESH_BEFORE_EXPIRY:?} before expiry"
    );
    advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(script.calls(), 2, "the refresh has started");
    // The refresh hangs; callers are answered at once with the old token.
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(FIRST));
    script.release(1);
    settle().await;
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(SECOND));
    // The next refresh is one lifetime later.
    advance(refresh_at - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_lived_tokens_refresh_at_half_life() {
    let script = ScriptedFetch::new([ok(FIRST, Duration::from_secs(120)), ok(SECOND, HOUR)]);
    let source = TokenSource::new(script.clone());
    source.authorization().await.unwrap();
    advance(Duration::from_millis(59_999)).await;
    settle().await;
    assert_eq!(script.calls(), 1);
    advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(script.calls(), 2);
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(SECOND));
}

#[test]
fn schedule_of_a_token() {
    let at = Instant::now();
    let hour = Schedule::new(at, HOUR);
    assert_eq!(hour.refresh_at, at + Duration::from_secs(3375));
    assert_eq!(hour.usable_until, at + Duration::from_secs(3590));
    let two_minutes = Schedule::new(at, Duration::from_secs(120));
    assert_eq!(two_minutes.refresh_at, at + Duration::from_secs(60));
    assert_eq!(two_minutes.usable_until, at + Duration::from_secs(110));
    // A server saying "valid for a second" does not make the refresher spin.
    assert_eq!(
        Schedule::new(at, Duration::from_secs(1)).refresh_at,
        at + Duration::from_secs(1)
    );
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter() {
    let mut backoff = Backoff::new();
    let mut step = FIRST_RETRY_DELAY;
    for _ in 0..12 {
        let delay = backoff.delay();
        assert!(
            delay >= step / 2 && delay <= step,
            "{delay:?} for a step of {step:?}"
        );
        step = (step * 2).min(MAX_RETRY_DELAY);
    }
    assert_eq!(step, MAX_RETRY_DELAY);
    backoff.reset();
    assert!(backoff.delay() <= FIRST_RETRY_DELAY);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_retried_with_backoff_while_the_old_token_serves() {
    use CredentialsErrorKind::Unavailable;
    let script = ScriptedFetch::new([
        ok(FIRST, HOUR),
        Err(Unavailable),
        Err(Unavailable),
        ok(SECOND, HOUR),
    ]);
    let source = TokenSource::new(script.clone());
    source.authorization().await.unwrap();
    advance(HOUR - REFRESH_BEFORE_EXPIRY).await;
    settle().await;
    assert_eq!(script.calls(), 2, "the refresh failed");
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(FIRST));
    // First retry between 0.5 s and 1 s later, the second 1 s to 2 s after that.
    advance(Duration::from_millis(499)).await;
    settle().await;
    assert_eq!(script.calls(), 2);
    advance(Duration::from_millis(501)).await;
    settle().await;
    assert_eq!(script.calls(), 3);
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(FIRST));
    advance(Duration::from_millis(999)).await;
    settle().await;
    assert_eq!(script.calls(), 3);
    advance(Duration::from_millis(1001)).await;
    settle().await;
    assert_eq!(script.calls(), 4);
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(SECOND));
}

#[tokio::test(start_paused = true)]
async fn expired_and_failing_gives_a_clear_error_then_recovers() {
    let script = ScriptedFetch::new([ok(FIRST, HOUR)]);
    let source = TokenSource::new(script.clone());
    source.authorization().await.unwrap();
    // Every refresh fails, up to and past expiry; retries stay bounded by the backoff cap.
    for _ in 0..61 {
        advance(Duration::from_secs(60)).await;
        settle().await;
    }
    let calls = script.calls();
    assert!((2..=40).contains(&calls), "{calls} fetches");
    let err = at_once(&source).unwrap().unwrap_err();
    assert_eq!(err.kind(), CredentialsErrorKind::Unavailable);
    assert_eq!(
        err.to_string(),
        "Vertex AI credentials: no valid access token; the last attempt failed: scripted failure (script over)"
    );
    assert!(!format!("{err:?} {source:?}").contains("secret-token"));
    script.push(ok(SECOND, HOUR));
    advance(MAX_RETRY_DELAY).await;
    settle().await;
    assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(SECOND));
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_fetch_is_returned_at_once_and_retried() {
    let script = ScriptedFetch::new([Err(CredentialsErrorKind::Rejected), ok(FIRST, HOUR)]);
    let source = TokenSource::new(script.clone());
    let err = source.authorization().await.unwrap_err();
    assert_eq!(err.kind(), CredentialsErrorKind::Rejected);
    assert_eq!(
        at_once(&source).unwrap().unwrap_err(),
        err,
        "no waiting while failing"
    );
    advance(FIRST_RETRY_DELAY).await;
    settle().await;
    assert_eq!(source.authorization().await.unwrap(), bearer_of(FIRST));
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_hangs_times_out() {
    let script = ScriptedFetch::gated([ok(FIRST, HOUR)], 0);
    let source = TokenSource::new(script.clone());
    let started = Instant::now();
    let err = source.authorization().await.unwrap_err();
    assert_eq!(started.elapsed(), FETCH_TIMEOUT);
    assert_eq!(err.kind(), CredentialsErrorKind::Unavailable);
    assert!(err.message().ends_with("no token within 15 s"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_source_stops_the_refresher() {
    let script = ScriptedFetch::new([ok(FIRST, HOUR), ok(SECOND, HOUR)]);
    let source = TokenSource::new(script.clone());
    source.authorization().await.unwrap();
    assert_ne!(source.running(), 0);
    drop(source);
    settle().await;
    assert_eq!(
        Arc::strong_count(&script.0),
        1,
        "the task and its fetcher are gone"
    );
    advance(HOUR * 3).await;
    settle().await;
    assert_eq!(script.calls(), 1);
}

#[test]
fn a_refresher_whose_runtime_ended_is_restarted_by_the_next_caller() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let script = ScriptedFetch::new([ok(FIRST, HOUR), ok(SECOND, HOUR)]);
    let source = TokenSource::new(script.clone());
    let first = runtime();
    assert_eq!(
        first.block_on(source.authorization()).unwrap(),
        bearer_of(FIRST)
    );
    assert_ne!(source.running(), 0);
    drop(first);
    assert_eq!(source.running(), 0, "the refresher ended with its runtime");
    runtime().block_on(async {
        advance(HOUR - REFRESH_BEFORE_EXPIRY).await;
        // Due for a refresh, none running: the old token still answers, and one starts.
        assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(FIRST));
        settle().await;
        assert_eq!(script.calls(), 2);
        assert_eq!(at_once(&source).unwrap().unwrap(), bearer_of(SECOND));
    });
}

#[test]
fn outside_a_runtime_the_source_says_so() {
    let source = TokenSource::new(ScriptedFetch::new([]));
    let err = at_once(&source).unwrap().unwrap_err();
    assert_eq!(err.kind(), CredentialsErrorKind::NoRuntime);
}

#[tokio::test(start_paused = true)]
async fn nothing_printable_holds_the_token() {
    let script = ScriptedFetch::new([ok(FIRST, HOUR)]);
    let source = TokenSource::new(script.clone());
    let header = source.authorization().await.unwrap();
    let token = FetchedToken::new(FIRST.into(), HOUR);
    let shown = format!("{source:?} {header:?} {token:?}");
    assert!(!shown.contains("secret-token"), "{shown}");
    assert_eq!(
        format!("{source:?}"),
        "TokenSource { from: \"the script\", has_token: true, failing: false, .. }"
    );
}
