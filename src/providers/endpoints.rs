//! Replicas of one provider: which one takes a request, and which ones sit out.
//!
//! Choice is power of two choices: two healthy endpoints drawn at random, and the one with the
//! lower cost wins. Cost is a peak-EWMA of response latency times (outstanding requests + 1):
//! a latency spike counts at once, and an endpoint that has not been measured for a while
//! decays towards zero, so it gets probed again. Ejection is passive: failures in a row (or a
//! 429) put an endpoint out for a period that doubles while it keeps failing. The last
//! endpoints are never ejected to nothing: when all are out, the one due back soonest is tried
//! and the error says so.
//!
//! Health lives in the metrics registry, keyed by provider and endpoint, so it survives a
//! reload that leaves the endpoint's definition alone.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::EjectionConfig;

/// Decay time of the latency estimate.
const DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for an endpoint not measured yet (new, or back from ejection) when no
/// endpoint of the provider has been measured either. Otherwise it is priced like the slowest
/// measured peer: it gets its share of traffic, not all of it, until its first answer.
const UNMEASURED_NANOS: f64 = 100_000.0;
/// Latency charged for a failure: a replica that fails fast must not look fast.
const FAILURE_PENALTY_NANOS: f64 = 1_000_000_000.0;
/// Longest ejection a `retry-after` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Nanoseconds since the first call: a clock atomics can hold.
pub fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One endpoint's load and health. Updates race benignly: each field is one atomic, and a
/// lost update only makes an estimate a little stale.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    pub outstanding: AtomicU64,
    /// Latency estimate, as f64 bits of nanoseconds; 0 until measured.
    ewma_bits: AtomicU64,
    /// When the estimate was last updated (`now()`).
    ewma_at: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections in a row, for the doubling period.
    ejections_in_a_row: AtomicU32,
    pub ejections_total: AtomicU64,
    /// Ejected until this `now()`; 0 when never ejected.
    pub ejected_until: AtomicU64,
}

/// Counts an outstanding request until dropped; a stream's lives in its response body.
pub struct InFlight(Arc<EndpointHealth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

impl EndpointHealth {
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// The latency estimate at `now`, decayed since its last sample; `None` until measured.
    fn measured(&self, now: u64) -> Option<f64> {
        let ewma = f64::from_bits(self.ewma_bits.load(Relaxed));
        if ewma == 0.0 {
            return None;
        }
        let idle = now.saturating_sub(self.ewma_at.load(Relaxed)) as f64;
        Some(ewma * (-idle / DECAY.as_nanos() as f64).exp())
    }

    /// The latency estimate at `now`, decayed since its last sample.
    fn latency(&self, now: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_bits.load(Relaxed));
        if ewma == 0.0 {
            return UNMEASURED_NANOS;
        }
        let idle = now.saturating_sub(self.ewma_at.load(Relaxed)) as f64;
        ewma * (-idle / DECAY.as_nanos() as f64).exp()
    }

    /// What sending one more request here is expected to cost, pricing an unmeasured
    /// endpoint at `unmeasured` nanoseconds.
    pub fn cost(&self, now: u64, unmeasured: f64) -> f64 {
        self.measured(now).unwrap_or(unmeasured) * (self.outstanding.load(Relaxed) as f64 + 1.0)
    }

    /// A response arrived after `rtt`: fold it in (a peak is taken at once) and forgive past
    /// failures.
    pub fn succeeded(&self, rtt: Duration, now: u64) {
        let sample = rtt.as_nanos() as f64;
        let current = self.latency(now);
        let next = if sample > current || self.ewma_bits.load(Relaxed) == 0 {
            sample
        } else {
            let idle = now.saturating_sub(self.ewma_at.load(Relaxed)) as f64;
            let keep = (-idle / DECAY.as_nanos() as f64).exp();
            current * keep + sample * (1.0 - keep)
        };
        self.ewma_bits.store(next.to_bits(), Relaxed);
        self.ewma_at.store(now, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.ejections_in_a_row.store(0, Relaxed);
    }

    /// An attempt here failed. Returns the ejection period if this failure ejected it.
    pub fn failed(
        &self,
        policy: &EjectionConfig,
        retry_after: Option<Duration>,
        now: u64,
    ) -> Option<Duration> {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        // A 429 with retry-after is the upstream asking for a pause: grant it at once.
        let asked = retry_after.filter(|d| !d.is_zero());
        if failures < policy.consecutive_failures.max(1) && asked.is_none() {
            let penalised = self.latency(now).max(FAILURE_PENALTY_NANOS);
            self.ewma_bits.store(penalised.to_bits(), Relaxed);
            self.ewma_at.store(now, Relaxed);
            return None;
        }
        // Back from ejection it starts unmeasured, so the first requests probe it.
        self.ewma_bits.store(0, Relaxed);
        let in_a_row = self.ejections_in_a_row.fetch_add(1, Relaxed);
        let doubled = policy
            .base
            .0
            .saturating_mul(1 << in_a_row.min(16))
            .min(policy.max.0);
        let period = asked.map_or(doubled, |a| doubled.max(a.min(MAX_RETRY_AFTER)));
        let until = now.saturating_add(u64::try_from(period.as_nanos()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        Some(period)
    }
}

/// The endpoint a request goes to.
#[derive(Debug, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// Every endpoint was ejected; this one is due back soonest.
    pub all_ejected: bool,
}

/// Power of two choices among the healthy endpoints; `draw` supplies random indexes below
/// its argument.
pub fn pick<T>(
    items: &[T],
    health: impl Fn(&T) -> &EndpointHealth,
    now: u64,
    mut draw: impl FnMut(usize) -> usize,
) -> Pick {
    let endpoints = |i: usize| health(&items[i]);
    let healthy = |k: usize| {
        (0..items.len())
            .filter(|i| !endpoints(*i).is_ejected(now))
            .nth(k)
            .unwrap_or(0)
    };
    let count = (0..items.len())
        .filter(|i| !endpoints(*i).is_ejected(now))
        .count();
    match count {
        0 => Pick {
            index: (0..items.len())
                .min_by_key(|i| endpoints(*i).ejected_until.load(Relaxed))
                .unwrap_or(0),
            all_ejected: true,
        },
        1 => Pick {
            index: healthy(0),
            all_ejected: false,
        },
        n => {
            let a = draw(n);
            let b = (a + 1 + draw(n - 1)) % n;
            let (a, b) = (healthy(a), healthy(b));
            // An unmeasured endpoint is priced like the slowest measured one.
            let unmeasured = (0..items.len())
                .filter_map(|i| endpoints(i).measured(now))
                .fold(None, |top: Option<f64>, l| {
                    Some(top.map_or(l, |t: f64| t.max(l)))
                })
                .unwrap_or(UNMEASURED_NANOS);
            let cost = |i: usize| endpoints(i).cost(now, unmeasured);
            let index = if cost(b) < cost(a) { b } else { a };
            Pick {
                index,
                all_ejected: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    const MS: u64 = 1_000_000;

    fn policy() -> EjectionConfig {
        EjectionConfig {
            consecutive_failures: 3,
            base: ConfigDuration::from_millis(100),
            max: ConfigDuration::from_millis(350),
        }
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let (fast, slow) = (
            Arc::new(EndpointHealth::default()),
            EndpointHealth::default(),
        );
        fast.succeeded(Duration::from_millis(2), 0);
        slow.succeeded(Duration::from_millis(40), 0);
        let endpoints = [&*fast, &slow];
        let mut rng = fastrand::Rng::with_seed(1);
        let picks: Vec<usize> = (0..50)
            .map(|_| pick(&endpoints, |e| *e, MS, |n| rng.usize(..n)).index)
            .collect();
        assert!(picks.iter().all(|i| *i == 0), "{picks:?}");
        // Enough requests piled on the fast one make the slow one cheaper.
        let _held: Vec<_> = (0..30).map(|_| fast.start()).collect();
        assert_eq!(pick(&endpoints, |e| *e, MS, |n| rng.usize(..n)).index, 1);
    }

    #[test]
    fn a_peak_counts_at_once_and_an_idle_estimate_decays() {
        let e = EndpointHealth::default();
        e.succeeded(Duration::from_millis(5), 0);
        e.succeeded(Duration::from_millis(500), MS);
        assert!(e.latency(MS) >= 499.0 * MS as f64, "peak taken at once");
        let later = e.latency(MS + 30_000 * MS);
        assert!(
            later < 500.0 * MS as f64 * 0.06,
            "decays after 3 decay times: {later}"
        );
    }

    #[test]
    fn failures_in_a_row_eject_with_a_doubling_period_and_success_forgives() {
        let e = EndpointHealth::default();
        assert_eq!(e.failed(&policy(), None, 0), None);
        assert_eq!(e.failed(&policy(), None, 0), None);
        assert_eq!(
            e.failed(&policy(), None, 0),
            Some(Duration::from_millis(100))
        );
        assert!(e.is_ejected(50 * MS) && !e.is_ejected(100 * MS));
        for _ in 0..2 {
            e.failed(&policy(), None, 200 * MS);
        }
        assert_eq!(
            e.failed(&policy(), None, 200 * MS),
            Some(Duration::from_millis(200))
        );
        for _ in 0..2 {
            e.failed(&policy(), None, 500 * MS);
        }
        assert_eq!(
            e.failed(&policy(), None, 500 * MS),
            Some(Duration::from_millis(350)),
            "capped"
        );
        e.succeeded(Duration::from_millis(1), 900 * MS);
        for _ in 0..2 {
            e.failed(&policy(), None, 1000 * MS);
        }
        assert_eq!(
            e.failed(&policy(), None, 1000 * MS),
            Some(Duration::from_millis(100)),
            "forgiven"
        );
    }

    #[test]
    fn a_failure_makes_a_fast_replica_look_slow_and_ejection_resets_it() {
        let (flaky, steady) = (EndpointHealth::default(), EndpointHealth::default());
        flaky.succeeded(Duration::from_micros(200), 0);
        steady.succeeded(Duration::from_millis(20), 0);
        let cost = |e: &EndpointHealth| e.cost(MS, 0.0);
        assert!(cost(&flaky) < cost(&steady));
        assert_eq!(flaky.failed(&policy(), None, MS), None);
        assert!(
            cost(&flaky) > cost(&steady),
            "one failure steers traffic away"
        );
        flaky.failed(&policy(), None, MS);
        flaky.failed(&policy(), None, MS);
        assert!(flaky.is_ejected(MS));
        // Back from ejection it is unmeasured: `pick` prices it like its slowest peer, so it
        // shares the traffic instead of drawing all of it.
        assert_eq!(flaky.measured(200 * MS), None);
        let (a, b) = (&flaky, &steady);
        let mut rng = fastrand::Rng::with_seed(9);
        let to_flaky = (0..1000)
            .filter(|_| pick(&[a, b], |e| *e, 200 * MS, |n| rng.usize(..n)).index == 0)
            .count();
        assert!((350..=650).contains(&to_flaky), "{to_flaky} of 1000");
    }

    #[test]
    fn retry_after_ejects_at_once_for_at_least_that_long() {
        let e = EndpointHealth::default();
        assert_eq!(
            e.failed(&policy(), Some(Duration::from_secs(2)), 0),
            Some(Duration::from_secs(2))
        );
        assert!(e.is_ejected(1_900 * MS));
    }

    #[test]
    fn ejected_endpoints_sit_out_until_all_are_out() {
        let (a, b, c) = (
            EndpointHealth::default(),
            EndpointHealth::default(),
            EndpointHealth::default(),
        );
        a.ejected_until.store(500 * MS, Relaxed);
        c.ejected_until.store(300 * MS, Relaxed);
        let endpoints = [&a, &b, &c];
        for _ in 0..20 {
            assert_eq!(
                pick(&endpoints, |e| *e, 0, |n| fastrand::usize(..n)),
                Pick {
                    index: 1,
                    all_ejected: false
                }
            );
        }
        b.ejected_until.store(900 * MS, Relaxed);
        assert_eq!(
            pick(&endpoints, |e| *e, 0, |n| fastrand::usize(..n)),
            Pick {
                index: 2,
                all_ejected: true
            }
        );
        // Back after its period.
        assert!(!pick(&endpoints, |e| *e, 600 * MS, |n| fastrand::usize(..n)).all_ejected);
    }
}
