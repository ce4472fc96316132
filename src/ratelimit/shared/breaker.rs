//! The circuit breaker in front of Redis: after `failures` calls in a row fail, calls stop
//! for `cool_down` (each failing at once, so a dead Redis costs requests nothing and is not
//! hammered); then exactly one call probes it, and its outcome closes the breaker or opens
//! it for another cool-down. Lock-free: three atomics, shared by every worker.
//!
//! Time is nanoseconds on the limiter clock ([`crate::ratelimit::clock`]), passed in.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::config::BreakerConfig;

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// The cool-down is over: the next call probes Redis (or one already does).
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down_ns: u64,
    /// Failures in a row since the last success.
    failures: AtomicU32,
    /// 0 while closed; else when the cool-down ends (never 0 itself).
    open_until: AtomicU64,
    /// A probe is out.
    probing: AtomicBool,
    /// Times the breaker opened (a failed probe opens it again).
    opened: AtomicU64,
}

/// Leave to make one call. Report its outcome with [`Permit::success`] or
/// [`Permit::failure`]; a probe dropped without either (its caller went away) lets the next
/// call probe instead.
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(config: &BreakerConfig) -> Breaker {
        Breaker {
            threshold: config.failures.max(1),
            cool_down_ns: u64::try_from(config.cool_down.0.as_nanos()).unwrap_or(u64::MAX),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
        }
    }

    /// A permit to call Redis at `now`, or `None` while the breaker is open (or half open
    /// with its probe already out).
    pub fn permit(&self, now: u64) -> Option<Permit<'_>> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
                reported: false,
            });
        }
        if now < until {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Permit {
                breaker: self,
                probe: true,
                reported: false,
            })
    }

    pub fn state(&self, now: u64) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if now < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Times the breaker has opened.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn cool_down_end(&self, now: u64) -> u64 {
        now.saturating_add(self.cool_down_ns).max(1)
    }

    /// Closes the breaker. Every decision succeeds here, from every worker: stores only
    /// what changes, so the usual case writes nothing to the shared cache line.
    fn succeeded(&self) {
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Acquire) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
        if self.probing.load(Ordering::Acquire) {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Counts a failure; whether it opened the breaker.
    fn failed(&self, probe: bool, now: u64) -> bool {
        let failures = self
            .failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                Some(f.saturating_add(1))
            })
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if probe {
            self.open_until
                .store(self.cool_down_end(now), Ordering::Release);
            self.opened.fetch_add(1, Ordering::Relaxed);
            self.probing.store(false, Ordering::Release);
            true
        } else if failures >= self.threshold
            && self
                .open_until
                .compare_exchange(
                    0,
                    self.cool_down_end(now),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            // Only the call that found it closed opens it (and counts the opening).
            self.opened.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

impl Permit<'_> {
    /// The call succeeded: Redis answers, the breaker closes.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.succeeded();
    }

    /// The call failed at `now`; whether that opened the breaker.
    pub fn failure(mut self, now: u64) -> bool {
        self.reported = true;
        self.breaker.failed(self.probe, now)
    }

    /// This call probes a breaker that was open.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    const MS: u64 = 1_000_000;

    fn breaker(failures: u32, cool_down_ms: u64) -> Breaker {
        Breaker::new(&BreakerConfig {
            failures,
            cool_down: ConfigDuration::from_millis(cool_down_ms),
        })
    }

    #[test]
    fn failures_in_a_row_open_it_and_a_success_resets_the_count() {
        let b = breaker(3, 100);
        b.permit(0).unwrap().failure(0);
        b.permit(0).unwrap().failure(0);
        b.permit(0).unwrap().success();
        b.permit(0).unwrap().failure(0);
        b.permit(0).unwrap().failure(0);
        assert_eq!(
            b.state(0),
            BreakerState::Closed,
            "the success reset the count"
        );
        b.permit(1).unwrap().failure(1);
        assert_eq!(b.state(1), BreakerState::Open);
        assert!(b.permit(50 * MS).is_none());
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        let b = breaker(1, 100);
        b.permit(0).unwrap().failure(0);
        assert!(b.permit(100 * MS - 1).is_none());
        assert_eq!(b.state(100 * MS), BreakerState::HalfOpen);
        let probe = b.permit(100 * MS).unwrap();
        assert!(probe.is_probe());
        assert!(b.permit(100 * MS).is_none(), "only one probe at a time");
        // The probe fails: another whole cool-down from then.
        probe.failure(120 * MS);
        assert_eq!(b.state(120 * MS), BreakerState::Open);
        assert!(b.permit(219 * MS).is_none());
        assert_eq!(b.opened(), 2);
        // The next probe succeeds: closed, every call goes through.
        b.permit(220 * MS).unwrap().success();
        assert_eq!(b.state(220 * MS), BreakerState::Closed);
        assert!(!b.permit(220 * MS).unwrap().is_probe());
        assert!(b.permit(220 * MS).is_some());
    }

    #[test]
    fn a_probe_whose_caller_went_away_lets_another_probe() {
        let b = breaker(1, 10);
        b.permit(0).unwrap().failure(0);
        drop(b.permit(10 * MS).unwrap());
        assert!(b.permit(10 * MS).unwrap().is_probe());
    }

    #[test]
    fn late_failures_of_calls_started_before_the_opening_do_not_extend_it() {
        let b = breaker(2, 100);
        let (early, late) = (b.permit(0).unwrap(), b.permit(0).unwrap());
        b.permit(0).unwrap().failure(0);
        early.failure(0);
        assert_eq!(b.state(0), BreakerState::Open);
        late.failure(90 * MS);
        assert_eq!(b.opened(), 1);
        assert_eq!(b.state(100 * MS), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn on_the_limiter_clock_the_cool_down_passes_with_paused_time() {
        use crate::ratelimit::clock::now_ns;
        let b = breaker(2, 2_000);
        b.permit(now_ns()).unwrap().failure(now_ns());
        b.permit(now_ns()).unwrap().failure(now_ns());
        assert!(b.permit(now_ns()).is_none());
        tokio::time::advance(std::time::Duration::from_millis(1_999)).await;
        assert!(b.permit(now_ns()).is_none());
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        b.permit(now_ns()).unwrap().success();
        assert_eq!(b.state(now_ns()), BreakerState::Closed);
    }
}
