//! The retry plan of a route: which version each attempt goes to, and how long to wait first.

use std::time::Duration;

/// The version of attempt `n` (0 is the first): the chosen version, then each fallback that
/// is not the chosen one, in order; past the end of that list, the last one again.
pub fn attempt_version(first: usize, fallbacks: &[usize], n: usize) -> usize {
    if n == 0 {
        return first;
    }
    let mut rest = fallbacks.iter().copied().filter(|v| *v != first);
    let count = fallbacks.iter().filter(|v| **v != first).count();
    match count {
        0 => first,
        _ => rest.nth((n - 1).min(count - 1)).unwrap_or(first),
    }
}

/// The wait before attempt `n` (`n >= 1`): "full jitter", a uniform draw below
/// `base * 2^(n-1)`, capped at `max`. `unit` is the draw, in `[0, 1)`.
pub fn backoff(n: usize, base: Duration, max: Duration, unit: f64) -> Duration {
    let exponent = u32::try_from(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    let ceiling = base.saturating_mul(1 << exponent).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_tries_the_chosen_version_then_fallbacks_then_the_last_again() {
        let plan: Vec<usize> = (0..5).map(|n| attempt_version(0, &[2, 1], n)).collect();
        assert_eq!(plan, [0, 2, 1, 1, 1]);
        // A fallback that is the chosen version is not tried twice in a row.
        let plan: Vec<usize> = (0..4).map(|n| attempt_version(2, &[2, 1], n)).collect();
        assert_eq!(plan, [2, 1, 1, 1]);
        // No fallbacks: the same version again.
        let plan: Vec<usize> = (0..3).map(|n| attempt_version(1, &[], n)).collect();
        assert_eq!(plan, [1, 1, 1]);
    }

    #[test]
    fn backoff_grows_doubles_and_is_capped() {
        let (base, max) = (Duration::from_millis(50), Duration::from_secs(2));
        assert_eq!(backoff(1, base, max, 0.999_999).as_millis(), 49);
        assert_eq!(backoff(2, base, max, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(3, base, max, 0.999_999).as_millis(), 199);
        assert_eq!(backoff(10, base, max, 0.999_999).as_millis(), 1999);
        assert_eq!(backoff(200, base, max, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, 0.0), Duration::ZERO);
        // Full jitter: draws spread over the whole range.
        let mut rng = fastrand::Rng::with_seed(3);
        let waits: Vec<Duration> = (0..1000)
            .map(|_| backoff(3, base, max, rng.f64()))
            .collect();
        assert!(waits.iter().all(|w| *w < Duration::from_millis(200)));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(20)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(180)));
    }
}
