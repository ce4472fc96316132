//! Log lines for repeated failures, at most one per interval, each with the count of those
//! left out since: the metric counts every failure, the log says that it is happening.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Lets one event in per interval and counts the ones it keeps out.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    /// When the last event was let in, in milliseconds after the start plus one; 0: never.
    admitted_at: AtomicU64,
    kept_out: AtomicU64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            admitted_at: AtomicU64::new(0),
            kept_out: AtomicU64::new(0),
        }
    }

    /// `Some(events kept out since the last one let in)` when an event at `now` (time since
    /// the start) is let in.
    pub fn admit(&self, now: Duration) -> Option<u64> {
        let now = u64::try_from(now.as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.admitted_at.load(Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            self.kept_out.fetch_add(1, Relaxed);
            return None;
        }
        self.admitted_at.store(now, Relaxed);
        Some(self.kept_out.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_is_let_in_with_the_count_kept_out() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let at = Duration::from_millis;
        assert_eq!(limiter.admit(at(0)), Some(0));
        assert_eq!(limiter.admit(at(1)), None);
        assert_eq!(limiter.admit(at(9_999)), None);
        assert_eq!(limiter.admit(at(10_000)), Some(2));
        assert_eq!(limiter.admit(at(10_500)), None);
        assert_eq!(limiter.admit(at(60_000)), Some(1));
    }
}
