//! Counters and a bounded request log that tests observe while the server runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::Notify;

/// How many requests [`MockStats::recorded`] keeps.
pub const RECORDED_CAPACITY: usize = 64;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The HTTP version the request arrived with.
    pub version: http::Version,
}

/// Live counters of a [`crate::MockServer`].
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    connections: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    token_requests: AtomicU64,
    metadata_requests: AtomicU64,
    tokens_issued: AtomicU64,
    /// Woken on every counter change so waiters re-check without polling.
    changed: Notify,
    recorded: Mutex<VecDeque<RecordedRequest>>,
}

impl MockStats {
    /// Requests received (counted once the request body has been read).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted; with keep-alive clients this stays below `requests()`.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// Stream bodies that reached their end (including cleanly ended fault streams).
    pub fn streams_completed(&self) -> u64 {
        self.streams_completed.load(Ordering::SeqCst)
    }

    /// Stream bodies dropped before their end, i.e. the client went away.
    pub fn streams_cancelled(&self) -> u64 {
        self.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once `streams_cancelled() >= n`.
    pub async fn wait_streams_cancelled(&self, n: u64) {
        self.wait_until(&self.streams_cancelled, n).await;
    }

    /// Resolves once `requests() >= n`.
    pub async fn wait_requests(&self, n: u64) {
        self.wait_until(&self.requests, n).await;
    }

    /// Resolves once `streams_completed() >= n`.
    pub async fn wait_streams_completed(&self, n: u64) {
        self.wait_until(&self.streams_completed, n).await;
    }

    /// Requests to the OAuth token endpoint, answered or not (a held one counts on arrival).
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Requests to the metadata server's token endpoint, with or without `Metadata-Flavor`.
    pub fn metadata_requests(&self) -> u64 {
        self.metadata_requests.load(Ordering::SeqCst)
    }

    /// Access tokens issued by the token and metadata endpoints together.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::SeqCst)
    }

    /// Resolves once `token_requests() >= n`.
    pub async fn wait_token_requests(&self, n: u64) {
        self.wait_until(&self.token_requests, n).await;
    }

    /// Resolves once `metadata_requests() >= n`.
    pub async fn wait_metadata_requests(&self, n: u64) {
        self.wait_until(&self.metadata_requests, n).await;
    }

    /// Resolves once `tokens_issued() >= n`.
    pub async fn wait_tokens_issued(&self, n: u64) {
        self.wait_until(&self.tokens_issued, n).await;
    }

    pub(crate) fn token_requested(&self) {
        self.bump(&self.token_requests);
    }

    pub(crate) fn metadata_requested(&self) {
        self.bump(&self.metadata_requests);
    }

    pub(crate) fn token_issued(&self) {
        self.bump(&self.tokens_issued);
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.log().back().cloned()
    }

    /// The last [`RECORDED_CAPACITY`] requests, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.log().iter().cloned().collect()
    }

    async fn wait_until(&self, counter: &AtomicU64, n: u64) {
        loop {
            // Register interest before checking, so an increment between the check
            // and the await still wakes us.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if counter.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        {
            let mut log = self.log();
            if log.len() == RECORDED_CAPACITY {
                log.pop_front();
            }
            log.push_back(request);
        }
        self.bump(&self.requests);
    }

    fn log(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lives inside a streaming body; its drop before [`StreamGuard::complete`] or
/// [`StreamGuard::disarm`] means the client went away.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    stats: Arc<MockStats>,
    armed: bool,
}

impl StreamGuard {
    pub(crate) fn new(stats: Arc<MockStats>) -> Self {
        Self { stats, armed: true }
    }

    /// The body reached its end.
    pub(crate) fn complete(&mut self) {
        if self.armed {
            self.armed = false;
            self.stats.bump(&self.stats.streams_completed);
        }
    }

    /// The mock itself ended the stream abnormally (injected reset): neither outcome.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.armed {
            self.stats.bump(&self.stats.streams_cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(i: usize) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path_and_query: format!("/v1/x?{i}"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            version: http::Version::HTTP_11,
        }
    }

    #[test]
    fn ring_keeps_last_requests_oldest_first() {
        let stats = MockStats::default();
        for i in 0..100 {
            stats.record(request(i));
        }
        let log = stats.recorded();
        assert_eq!(log.len(), RECORDED_CAPACITY);
        assert_eq!(log[0].path_and_query, "/v1/x?36");
        assert_eq!(stats.last_request().unwrap().path_and_query, "/v1/x?99");
        assert_eq!(stats.requests(), 100);
    }

    #[test]
    fn guard_counts_one_outcome() {
        let stats = Arc::new(MockStats::default());
        let mut done = StreamGuard::new(stats.clone());
        done.complete();
        done.complete();
        drop(done);
        drop(StreamGuard::new(stats.clone()));
        let mut reset = StreamGuard::new(stats.clone());
        reset.disarm();
        drop(reset);
        assert_eq!(stats.streams_completed(), 1);
        assert_eq!(stats.streams_cancelled(), 1);
    }

    #[tokio::test]
    async fn waiters_wake_on_increment() {
        let stats = Arc::new(MockStats::default());
        let waiter = tokio::spawn({
            let stats = stats.clone();
            async move { stats.wait_streams_cancelled(2).await }
        });
        drop(StreamGuard::new(stats.clone()));
        drop(StreamGuard::new(stats.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        stats.wait_requests(0).await;
    }
}
