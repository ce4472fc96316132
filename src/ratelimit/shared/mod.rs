//! Shared mode: rate-limit buckets in Redis, so that several replicas hold one limit exactly.
//!
//! - **One round trip per decision.** [`SharedStore::decide`] runs one Lua script
//!   ([`script::TAKE`]) that checks every bucket of a request and reserves its cost in all of
//!   them or none, atomically, with the same GCRA as local mode ([`crate::ratelimit::gcra`])
//!   on Redis's clock (`TIME` inside the script, never a replica's clock).
//! - **One hash tag.** Every key starts with the configured tag (`{tollgate}`), so on Redis
//!   Cluster all limit keys share one slot and so one shard: that is what makes one atomic
//!   multi-key decision possible (at the price of one shard carrying all limit traffic).
//! - **True-ups off the request path.** [`SharedStore::reconcile`] queues charges and
//!   refunds without waiting; each worker's owner task sends them in batches
//!   ([`script::TRUE_UP`]). A full queue drops and counts them.
//! - **Scripts by SHA.** `EVALSHA`, and on `NOSCRIPT` (a restarted or flushed Redis) one
//!   `EVAL` that caches the script again.
//! - **Idle keys expire**: a bucket key lives until its TAT (the moment it is full again),
//!   at most a millisecond more; an absent key is a full bucket.
//! - **Redis trouble** is a typed [`StoreError`] within the configured timeout (50 ms by
//!   default), never a hang: the caller applies each limit's fail-open or fail-closed policy.
//!   A [`breaker`] stops calling a Redis that keeps failing, then probes it; fred reconnects
//!   by itself, so a restarted Redis serves again without a new client.
//! - **Per worker.** Each worker thread runs its own runtime, so each opens its own
//!   connections on its first call (see `client.rs`); no call crosses threads. A call from
//!   outside the workers (worker index 0) shares worker 0's connections, which serve as long
//!   as that worker's runtime runs.
//!
//! Requests in flight (`concurrent`) stay per replica in shared mode: a shared count would
//! need a lease per request that outlives a crashed replica (expiring entries kept alive
//! while a stream runs) and a second round trip at every request's end, and a cap on
//! concurrency mostly protects the replica and the upstream connections it holds. With `R`
//! replicas a `concurrent: N` limit admits up to `R × N` at once.
//!
//! Where shared mode can be off: a decision that timed out may still have been carried out
//! by Redis (its reservation stands and drains within its window: over-counted); a true-up
//! dropped on a full queue or lost to a failing Redis leaves the estimate charged instead
//! of the usage; a Redis that restarts without persistence starts every bucket full.

pub mod breaker;
mod client;
pub mod config;
pub mod keys;
mod reconcile;
pub mod script;

pub use breaker::BreakerState;
pub use config::{BreakerConfig, SharedStoreConfig};
pub use keys::BucketKey;
pub use script::{Adjustment, Bucket, Decision, Standings};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::ratelimit::Place;
use crate::ratelimit::clock::now_ns;
use crate::ratelimit::gcra::Rate;
use breaker::{Breaker, Permit};
use client::{Connector, Lua, Slot, call};
use config::ConfigProblem;
use script::{TAKE, TAKE_SHA, decode_take, take_args};

/// Why the store could not decide. Every kind means the same to the request path: apply
/// the limit's fail-open or fail-closed policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the rate-limit store did not answer in time")]
    Timeout,
    #[error("the rate-limit store is failing; calls are paused (circuit breaker open)")]
    CircuitOpen,
    #[error("the rate-limit store is unreachable: {0}")]
    Unavailable(String),
    #[error("the rate-limit store answered with an error: {0}")]
    Redis(String),
    #[error("the rate-limit store's answer is malformed: {0}")]
    Protocol(String),
    #[error("the rate-limit store was called outside a tokio runtime")]
    NoRuntime,
    #[error("the rate-limit store is stopped")]
    Stopped,
}

/// Counts since the store started, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Decisions sent to Redis.
    pub decisions: u64,
    /// Calls (decisions and true-ups) that failed, timeouts included.
    pub errors: u64,
    pub timeouts: u64,
    /// Decisions refused at once because the breaker was open.
    pub circuit_open: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// `NOSCRIPT` answers that sent a script again.
    pub script_reloads: u64,
    /// True-ups (adjustments) sent, dropped on a full (or stopped) queue, and lost to
    /// Redis errors or an open breaker.
    pub true_ups_sent: u64,
    pub true_ups_dropped: u64,
    pub true_ups_failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    decisions: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    circuit_open: AtomicU64,
    script_reloads: AtomicU64,
    true_ups_sent: AtomicU64,
    true_ups_dropped: AtomicU64,
    true_ups_failed: AtomicU64,
}

/// What the request path and the owner tasks share.
struct Common {
    timeout: Duration,
    breaker: Breaker,
    counters: Counters,
    stopped: AtomicBool,
}

impl Common {
    /// Tells the breaker how a call went, and counts failures.
    fn report<T>(&self, permit: Permit<'_>, result: &Result<T, StoreError>) {
        let Err(err) = result else {
            permit.success();
            return;
        };
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if *err == StoreError::Timeout {
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        if permit.failure(now_ns()) {
            tracing::warn!(error = %err, "the rate-limit store keeps failing: calls paused (circuit breaker open)");
        } else {
            tracing::debug!(error = %err, "rate-limit store call failed");
        }
    }
}

const TAKE_LUA: Lua = Lua {
    text: TAKE,
    sha: TAKE_SHA,
};

/// Longest [`SharedStore::stop`] waits for one worker's owner task.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The shared store: one per config, used by every worker.
pub struct SharedStore {
    common: Arc<Common>,
    connector: Connector,
    hash_tag: Box<str>,
    pool_size: usize,
    queue_len: usize,
    /// One per worker, opened on that worker's first call.
    slots: Box<[OnceLock<Result<Slot, StoreError>>]>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("hash_tag", &self.hash_tag)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// Checks `config` (nothing connects yet) and prepares a slot for each of `workers`.
    pub fn new(config: &SharedStoreConfig, workers: usize) -> Result<SharedStore, ConfigProblem> {
        config.validate()?;
        Ok(SharedStore {
            common: Arc::new(Common {
                timeout: config.timeout.0,
                breaker: Breaker::new(&config.breaker),
                counters: Counters::default(),
                stopped: AtomicBool::new(false),
            }),
            connector: Connector::new(config)?,
            hash_tag: config.hash_tag.as_str().into(),
            pool_size: config.pool_size,
            queue_len: config.reconcile_queue,
            slots: (0..workers.max(1)).map(|_| OnceLock::new()).collect(),
            stop: watch::Sender::new(false),
        })
    }

    /// The key of rule `rule` (its config key) with `rate` at `place`, under this store's
    /// hash tag. Build keys when limits are compiled, not per request.
    pub fn key(&self, place: &Place<'_>, rule: &str, rate: Rate) -> BucketKey {
        BucketKey::new(&self.hash_tag, place, rule, rate)
    }

    /// This worker's connections, opened on its first call.
    fn slot(&self) -> Result<&Slot, StoreError> {
        let index = crate::server::worker_index() % self.slots.len();
        let cell = &self.slots[index];
        if let Some(slot) = cell.get() {
            return slot.as_ref().map_err(Clone::clone);
        }
        if self.common.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Stopped);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::NoRuntime);
        }
        cell.get_or_init(|| {
            Slot::start(
                &self.connector,
                self.pool_size,
                self.queue_len,
                self.common.clone(),
                self.stop.subscribe(),
            )
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Takes each bucket's cost from every bucket, or nothing: one script call. An empty
    /// `buckets` is admitted without a call.
    pub async fn decide(&self, buckets: &[Bucket<'_>]) -> Result<Decision, StoreError> {
        if buckets.is_empty() {
            return Ok(Decision::Admitted {
                standings: Standings::new(),
            });
        }
        if self.common.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Stopped);
        }
        let slot = self.slot()?;
        let Some(permit) = self.common.breaker.permit(now_ns()) else {
            self.common
                .counters
                .circuit_open
                .fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::CircuitOpen);
        };
        self.common
            .counters
            .decisions
            .fetch_add(1, Ordering::Relaxed);
        let result = call::<Vec<i64>>(
            slot.client(),
            &TAKE_LUA,
            || take_args(buckets),
            &self.common,
        )
        .await
        .and_then(|reply| decode_take(&reply, buckets));
        self.common.report(permit, &result);
        result
    }

    /// Queues true-ups for this worker's owner task to send, without waiting. What does
    /// not fit in the queue (or comes after [`SharedStore::stop`]) is dropped and counted.
    pub fn reconcile(&self, adjustments: impl IntoIterator<Item = Adjustment>) {
        let dropped = &self.common.counters.true_ups_dropped;
        let slot = self.slot().ok();
        for adjustment in adjustments {
            if adjustment.is_nothing() {
                continue;
            }
            let queued = slot.is_some_and(|slot| slot.queue.try_send(adjustment).is_ok());
            if !queued {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends true-ups now and waits for Redis: one script call.
    pub async fn reconcile_now(&self, adjustments: &[Adjustment]) -> Result<(), StoreError> {
        let adjustments: Vec<Adjustment> = adjustments
            .iter()
            .filter(|a| !a.is_nothing())
            .cloned()
            .collect();
        if adjustments.is_empty() {
            return Ok(());
        }
        let slot = self.slot()?;
        let result = match self.common.breaker.permit(now_ns()) {
            Some(permit) => {
                let result = call::<i64>(
                    slot.client(),
                    &reconcile::TRUE_UP_LUA,
                    || script::true_up_args(&adjustments),
                    &self.common,
                )
                .await
                .map(|_| ());
                self.common.report(permit, &result);
                result
            }
            None => Err(StoreError::CircuitOpen),
        };
        let c = &self.common.counters;
        let counter = if result.is_ok() {
            &c.true_ups_sent
        } else {
            &c.true_ups_failed
        };
        counter.fetch_add(
            u64::try_from(adjustments.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        result
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.common.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        StoreStats {
            decisions: get(&c.decisions),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            circuit_open: get(&c.circuit_open),
            breaker_opened: self.common.breaker.opened(),
            script_reloads: get(&c.script_reloads),
            true_ups_sent: get(&c.true_ups_sent),
            true_ups_dropped: get(&c.true_ups_dropped),
            true_ups_failed: get(&c.true_ups_failed),
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.common.breaker.state(now_ns())
    }

    /// Stops every worker's owner task: each sends the true-ups it holds, closes its
    /// connections and ends; waits for them (a few seconds at most). Calls after it fail
    /// with [`StoreError::Stopped`]. Dropping the store stops the tasks too, unawaited.
    pub async fn stop(&self) {
        self.common.stopped.store(true, Ordering::Release);
        self.stop.send_replace(true);
        for cell in self.slots.iter() {
            let Some(Ok(slot)) = cell.get() else { continue };
            let owner = slot
                .owner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(owner) = owner {
                let abort = owner.abort_handle();
                if tokio::time::timeout(STOP_WAIT, owner).await.is_err() {
                    abort.abort();
                }
            }
        }
    }
}
