//! Latency percentiles and the JSON line each scenario prints.

use std::time::Duration;

use serde_json::{Value, json};

/// Percentile `p` (0..=100) of sorted samples, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary floating point.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// p50, p99 and p99.9 of `samples` as a JSON object.
pub fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    json!({
        "p50_ms": percentile_ms(&samples, 50.0),
        "p99_ms": percentile_ms(&samples, 99.0),
        "p999_ms": percentile_ms(&samples, 99.9),
        "max_ms": samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 50.0), 500.0);
        assert_eq!(percentile_ms(&samples, 99.0), 990.0);
        assert_eq!(percentile_ms(&samples, 99.9), 999.0);
        assert_eq!(percentile_ms(&[], 99.0), 0.0);
        assert_eq!(percentile_ms(&samples[..1], 99.9), 1.0);
    }
}
