//! GCRA (the generic cell rate algorithm) on one atomic: a rate limit's whole state is the
//! theoretical arrival time of the next unit, moved by compare-and-swap. A request of cost
//! `n` is allowed when the bucket can take `n` more units without running more than one
//! window ahead of now; tokens are units too, so requests per minute and tokens per minute
//! are the same arithmetic with different costs.
//!
//! Time is nanoseconds on the caller's clock, passed in, so the arithmetic is tested with
//! any time the test likes and shared mode can use Redis's clock instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `limit` units per `window`, with a burst of up to `limit` units at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub limit: u64,
    pub window_ns: u64,
}

/// The bucket's state as the rate-limit response headers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Units that could be taken now.
    pub remaining: u64,
    /// Until the bucket is full again (nothing taken counts any more).
    pub reset_ns: u64,
}

/// Why a take was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not now: try again after this long.
    Wait { retry_after_ns: u64 },
    /// Never: the cost is more than the whole limit.
    TooLarge,
}

impl Rate {
    pub fn new(limit: u64, window: Duration) -> Rate {
        Rate {
            limit: limit.max(1),
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// The time `units` take from the bucket (`units / limit` of the window), rounded up
    /// so that `limit` units never take less than the window.
    fn span(&self, units: u64) -> u64 {
        let ns = (u128::from(units) * u128::from(self.window_ns)).div_ceil(u128::from(self.limit));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Units a stretch of `ns` of free bucket holds (rounded down).
    fn units(&self, ns: u64) -> u64 {
        let units = u128::from(ns) * u128::from(self.limit) / u128::from(self.window_ns);
        u64::try_from(units).unwrap_or(u64::MAX)
    }

    fn standing(&self, tat: u64, now: u64) -> Standing {
        let used = tat.saturating_sub(now);
        Standing {
            remaining: self.units(self.window_ns.saturating_sub(used)),
            reset_ns: used,
        }
    }
}

/// One bucket.
#[derive(Debug, Default)]
pub struct Gcra {
    /// Theoretical arrival time: when the bucket will be empty of what was taken.
    tat: AtomicU64,
}

impl Gcra {
    /// Moves the state with `step` (given the current one, the new one or a refusal) until
    /// no other thread got in between.
    fn update<T>(&self, step: impl Fn(u64) -> Result<(u64, T), Refusal>) -> Result<T, Refusal> {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let (next, out) = step(current)?;
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(out),
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes `cost` units at `now` if the bucket has room; the standing after it.
    pub fn try_take(&self, rate: &Rate, now: u64, cost: u64) -> Result<Standing, Refusal> {
        let span = rate.span(cost);
        if span > rate.window_ns {
            return Err(Refusal::TooLarge);
        }
        self.update(|tat| {
            let next = tat.max(now).saturating_add(span);
            let ahead = next - now;
            if ahead > rate.window_ns {
                return Err(Refusal::Wait {
                    retry_after_ns: ahead - rate.window_ns,
                });
            }
            Ok((next, rate.standing(next, now)))
        })
    }

    /// Takes `amount` units whatever the bucket holds: the part of a true usage above its
    /// estimate. The bucket may go into debt; later takes wait it out.
    pub fn force_take(&self, rate: &Rate, now: u64, amount: u64) {
        let span = rate.span(amount);
        let _ = self.update(|tat| Ok((tat.max(now).saturating_add(span), ())));
    }

    /// Gives back `amount` units taken earlier (a refused request's other buckets, an
    /// estimate above the true usage). A bucket never holds more than it is full.
    pub fn give_back(&self, rate: &Rate, now: u64, amount: u64) {
        let span = rate.span(amount);
        let _ = self.update(|tat| Ok((tat.saturating_sub(span).max(now), ())));
    }

    /// The standing at `now`, taking nothing.
    pub fn standing(&self, rate: &Rate, now: u64) -> Standing {
        rate.standing(self.tat.load(Ordering::Acquire), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn per_second(limit: u64) -> Rate {
        Rate::new(limit, Duration::from_secs(1))
    }

    #[test]
    fn a_full_bucket_allows_a_burst_of_the_limit_then_one_per_interval() {
        let rate = per_second(10);
        let bucket = Gcra::default();
        let now = 5 * S;
        for i in 0..10 {
            let standing = bucket.try_take(&rate, now, 1).unwrap();
            assert_eq!(standing.remaining, 9 - i);
        }
        assert_eq!(
            bucket.try_take(&rate, now, 1),
            Err(Refusal::Wait {
                retry_after_ns: S / 10
            })
        );
        // One interval later there is room for exactly one more.
        assert!(bucket.try_take(&rate, now + S / 10, 1).is_ok());
        assert!(bucket.try_take(&rate, now + S / 10, 1).is_err());
        // A full window of silence refills it completely.
        let later = now + S / 10 + S;
        assert_eq!(
            bucket.standing(&rate, later),
            Standing {
                remaining: 10,
                reset_ns: 0
            }
        );
    }

    #[test]
    fn over_a_long_run_the_rate_holds_exactly() {
        let rate = Rate::new(600, Duration::from_secs(60));
        let bucket = Gcra::default();
        let mut allowed = 0u64;
        // Ten minutes of attempts every 10 ms.
        let mut now = 0;
        while now < 600 * S {
            if bucket.try_take(&rate, now, 1).is_ok() {
                allowed += 1;
            }
            now += S / 100;
        }
        // The burst of 600, then 10 a second for the rest: never more.
        assert!(allowed <= 600 + 6000, "{allowed}");
        assert!(allowed >= 600 + 5990, "{allowed}");
    }

    #[test]
    fn costs_are_tokens_and_a_cost_above_the_limit_never_passes() {
        let rate = Rate::new(1000, Duration::from_secs(60));
        let bucket = Gcra::default();
        assert_eq!(bucket.try_take(&rate, 0, 1001), Err(Refusal::TooLarge));
        let standing = bucket.try_take(&rate, 0, 700).unwrap();
        assert_eq!(standing.remaining, 300);
        assert_eq!(standing.reset_ns, 42 * S);
        // 400 more must wait until 100 have drained: 6 seconds.
        assert_eq!(
            bucket.try_take(&rate, 0, 400),
            Err(Refusal::Wait {
                retry_after_ns: 6 * S
            })
        );
        assert!(bucket.try_take(&rate, 6 * S, 400).is_ok());
    }

    #[test]
    fn true_up_charges_debt_and_refunds_but_never_overfills() {
        let rate = Rate::new(100, Duration::from_secs(100));
        let bucket = Gcra::default();
        bucket.try_take(&rate, 0, 50).unwrap();
        // The answer used 80, not 50: 30 more, then the bucket is 80 down.
        bucket.force_take(&rate, 0, 30);
        assert_eq!(bucket.standing(&rate, 0).remaining, 20);
        // Debt: 40 more than the bucket holds is charged anyway, and waited out.
        bucket.force_take(&rate, 0, 40);
        assert_eq!(bucket.standing(&rate, 0).remaining, 0);
        assert!(matches!(
            bucket.try_take(&rate, 0, 1),
            Err(Refusal::Wait { retry_after_ns }) if retry_after_ns == 21 * S
        ));
        // A refund of more than was taken leaves the bucket just full.
        bucket.give_back(&rate, 0, 1_000);
        assert_eq!(bucket.standing(&rate, 0).remaining, 100);
        // A refund after the bucket drained on its own changes nothing.
        bucket.try_take(&rate, 0, 10).unwrap();
        bucket.give_back(&rate, 200 * S, 10);
        assert_eq!(bucket.standing(&rate, 200 * S).remaining, 100);
    }

    #[test]
    fn threads_racing_for_the_last_units_never_overdraw() {
        let rate = Rate::new(1000, Duration::from_secs(3600));
        let bucket = std::sync::Arc::new(Gcra::default());
        let allowed = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (bucket, allowed) = (bucket.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if bucket.try_take(&rate, 0, 1).is_ok() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        let rate = Rate::new(u64::MAX, Duration::from_secs(u64::MAX));
        let bucket = Gcra::default();
        assert!(bucket.try_take(&rate, u64::MAX - 1, 1).is_ok());
        let zero = Rate::new(0, Duration::ZERO);
        assert_eq!(zero.limit, 1);
        assert!(Gcra::default().try_take(&zero, 0, 1).is_ok());
    }
}
