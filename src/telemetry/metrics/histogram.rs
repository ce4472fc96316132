//! Fixed-bucket histograms recorded with relaxed atomic adds, and the bucket boundaries in use.
//!
//! Values are integers in a unit chosen per histogram (nanoseconds for durations, tokens for
//! token counts), so recording compares integers and adds integers: no float maths, no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Token counts, from the OTel GenAI conventions (powers of four).
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Request and operation duration (seconds), from the OTel GenAI conventions.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Time to first token (seconds), from the OTel GenAI conventions.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Time per output token after the first (seconds), from the OTel GenAI conventions.
pub const TIME_PER_TOKEN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// The gateway's own time per request (seconds): tens of microseconds when all is well, so
/// the buckets start far below the GenAI duration buckets.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// A histogram over integer observations.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds as printed in `le`.
    bounds: &'static [f64],
    /// The same bounds in observation units, compared on the hot path.
    limits: Box<[u64]>,
    /// Size of one observation unit in the exposed unit (1e-9 for nanoseconds as seconds).
    unit: f64,
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram of durations, exposed in seconds.
    pub fn seconds(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1e-9)
    }

    /// A histogram of plain counts (tokens).
    pub fn counts(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1.0)
    }

    fn new(bounds: &'static [f64], unit: f64) -> Self {
        Self {
            bounds,
            limits: bounds.iter().map(|b| (b / unit).round() as u64).collect(),
            unit,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records `value` observation units.
    pub fn observe(&self, value: u64) {
        if let Some(i) = self.limits.iter().position(|limit| value <= *limit) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Records a duration (for histograms made with [`Histogram::seconds`]).
    pub fn observe_duration(&self, value: Duration) {
        self.observe(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines under `labels` (already escaped).
    pub fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        // Read after the buckets, so `+Inf` is never below the last finite bucket.
        let count = self.count.load(Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum.load(Relaxed) as f64 * self.unit;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive_of_their_bound() {
        let h = Histogram::seconds(REQUEST_DURATION_BUCKETS);
        h.observe_duration(Duration::from_millis(10));
        h.observe_duration(Duration::from_millis(15));
        h.observe_duration(Duration::from_secs(100));
        let mut out = String::new();
        h.encode(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.01\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.02\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"81.92\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 100.025\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }

    #[test]
    fn token_buckets_are_powers_of_four_up_to_2_to_the_26() {
        for (i, bound) in TOKEN_BUCKETS.iter().enumerate() {
            assert_eq!(*bound, 4f64.powi(i as i32));
        }
        assert_eq!(TOKEN_BUCKETS.last(), Some(&67108864.0));
        let h = Histogram::counts(TOKEN_BUCKETS);
        h.observe(5);
        let mut out = String::new();
        h.encode(&mut out, "t", "");
        assert!(out.contains("t_bucket{le=\"4\"} 0\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"16\"} 1\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"67108864\"} 1\n"), "{out}");
    }

    #[test]
    fn duration_buckets_double_from_10ms() {
        for pair in REQUEST_DURATION_BUCKETS.windows(2) {
            assert!((pair[1] / pair[0] - 2.0).abs() < 1e-9);
        }
    }
}
