//! A gauge spread over cache lines, so worker threads moving it never contend on one line.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::server::workers::worker_index;

/// Slots; workers beyond this share them, which stays correct (only contention grows).
const SLOTS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicI64);

/// A gauge each worker moves in its own slot. An increment and its decrement may land in
/// different slots (a request can end on another thread); the sum is still exact.
#[derive(Debug, Default)]
pub struct ShardedGauge {
    slots: [Slot; SLOTS],
}

impl ShardedGauge {
    pub fn add(&self, delta: i64) {
        self.slots[worker_index() % SLOTS]
            .0
            .fetch_add(delta, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.slots.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_threads() {
        let gauge = std::sync::Arc::new(ShardedGauge::default());
        gauge.add(3);
        let other = gauge.clone();
        std::thread::spawn(move || other.add(-1)).join().unwrap();
        assert_eq!(gauge.get(), 2);
    }
}
