//! Which version of a route serves a request: a weighted draw, or a sticky choice by key.
//!
//! Sticky choice is weighted rendezvous hashing: every version scores `weight / -ln(u)`,
//! where `u` comes from a hash of (route, version, key), and the best score wins. The same key
//! lands on the same version while weights stay put, and when one version's weight grows only
//! the keys that now prefer it move, all of them towards it. No per-request randomness and no
//! shared state: any gateway instance decides the same way.

pub mod retry;

/// A route's versions as traffic shares.
#[derive(Debug, Clone)]
pub struct Split {
    weights: Box<[u32]>,
    /// Per version: a hash of route alias and version name, mixed into each key's hash.
    seeds: Box<[u64]>,
    total: u64,
}

impl Split {
    /// `versions`: (name, weight) in a stable order. Weight 0 means pinned traffic only.
    pub fn new<'a>(alias: &str, versions: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let (seeds, weights): (Vec<u64>, Vec<u32>) = versions
            .into_iter()
            .map(|(name, weight)| {
                let seed = fnv1a(fnv1a(FNV_OFFSET, alias.as_bytes()) ^ 0xff, name.as_bytes());
                (mix(seed), weight)
            })
            .unzip();
        let total = weights.iter().map(|w| u64::from(*w)).sum();
        Self {
            weights: weights.into(),
            seeds: seeds.into(),
            total,
        }
    }

    /// The sum of the weights; 0 when no version takes unpinned traffic.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The version for a sticky key when there is one, else by a random draw.
    pub fn pick(&self, sticky_key: Option<u64>) -> Option<usize> {
        match sticky_key {
            Some(key) => self.pick_sticky(key),
            None => self.pick_random(fastrand::u64(..)),
        }
    }

    /// The version for a uniformly random `draw`, in proportion to the weights.
    pub fn pick_random(&self, draw: u64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let mut point = draw % self.total;
        for (i, weight) in self.weights.iter().enumerate() {
            let weight = u64::from(*weight);
            if point < weight {
                return Some(i);
            }
            point -= weight;
        }
        None
    }

    /// The version for a sticky key (see [`key_hash`]).
    pub fn pick_sticky(&self, key: u64) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, (weight, seed)) in self.weights.iter().zip(self.seeds.iter()).enumerate() {
            if *weight == 0 {
                continue;
            }
            // 53 random bits as a float in (0, 1]; never 0, so the logarithm is finite.
            let unit = ((mix(seed ^ key) >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let score = f64::from(*weight) / -unit.ln();
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash of a stickiness key. Fixed by this code, not by the toolchain, so assignments
/// survive upgrades and agree across instances.
pub fn key_hash(key: &[u8]) -> u64 {
    mix(fnv1a(FNV_OFFSET, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[u32]) -> Split {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("v{i}")).collect();
        Split::new(
            "chat",
            names
                .iter()
                .map(String::as_str)
                .zip(weights.iter().copied()),
        )
    }

    /// Pearson's chi-square statistic of `counts` against `weights`.
    fn chi_square(counts: &[u64], weights: &[u32]) -> f64 {
        let n: u64 = counts.iter().sum();
        let total: u32 = weights.iter().sum();
        counts
            .iter()
            .zip(weights)
            .filter(|(_, w)| **w > 0)
            .map(|(c, w)| {
                let expected = n as f64 * f64::from(*w) / f64::from(total);
                (*c as f64 - expected).powi(2) / expected
            })
            .sum()
    }

    #[test]
    fn random_draws_follow_the_weights() {
        let weights = [1, 9, 90, 0];
        let s = split(&weights);
        let mut rng = fastrand::Rng::with_seed(11);
        let mut counts = [0u64; 4];
        for _ in 0..200_000 {
            counts[s.pick_random(rng.u64(..)).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "weight 0 takes no unpinned traffic");
        // Two degrees of freedom: 13.8 is the 0.1% critical value.
        assert!(chi_square(&counts, &weights) < 13.8, "{counts:?}");
    }

    #[test]
    fn sticky_choice_follows_the_weights_and_is_stable() {
        let weights = [1, 9, 90];
        let s = split(&weights);
        let mut counts = [0u64; 3];
        for user in 0..100_000u32 {
            let key = key_hash(format!("user-{user}").as_bytes());
            let first = s.pick_sticky(key).unwrap();
            assert_eq!(s.pick_sticky(key), Some(first));
            counts[first] += 1;
        }
        assert!(chi_square(&counts, &weights) < 13.8, "{counts:?}");
    }

    #[test]
    fn moving_a_canary_from_5_to_10_moves_only_the_keys_it_gains() {
        let before = split(&[5, 95]);
        let after = split(&[10, 90]);
        let users = 100_000u32;
        let mut moved = 0;
        for user in 0..users {
            let key = key_hash(format!("user-{user}").as_bytes());
            let (a, b) = (before.pick_sticky(key), after.pick_sticky(key));
            if a != b {
                assert_eq!(
                    (a, b),
                    (Some(1), Some(0)),
                    "keys only move towards the grown version"
                );
                moved += 1;
            }
        }
        // The minimum is 5% of keys; rendezvous hashing moves exactly those, up to sampling.
        let fraction = f64::from(moved) / f64::from(users);
        assert!((0.045..0.055).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn adding_a_version_takes_keys_only_for_itself() {
        let before = split(&[50, 50]);
        let after = split(&[50, 50, 100]);
        for user in 0..20_000u32 {
            let key = key_hash(format!("user-{user}").as_bytes());
            let (a, b) = (before.pick_sticky(key), after.pick_sticky(key));
            assert!(a == b || b == Some(2), "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn all_zero_weights_pick_nothing() {
        let s = split(&[0, 0]);
        assert_eq!(s.total(), 0);
        assert_eq!(s.pick_random(7), None);
        assert_eq!(s.pick_sticky(7), None);
    }
}
