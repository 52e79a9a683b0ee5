//! [`Random`]: a small seeded generator (SplitMix64), so that a fault schedule and a
//! workload replay from one printed seed.

use std::ops::RangeInclusive;
use std::time::Duration;

/// A deterministic generator of numbers from a seed; not for cryptography.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    /// Returns a generator that yields the same numbers for the same `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Returns a seed from the clock, for runs that were not given one.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Self::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
    }

    /// Returns a generator for part `stream` of this run (a client, the schedule), so
    /// that each part draws its own numbers whatever the others draw.
    pub fn fork(&self, stream: u64) -> Self {
        Self::new(Self::new(self.0 ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)).next_u64())
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a number below `bound` (which must be above zero).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range has no numbers");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Returns a number in `range`.
    pub fn in_range(&mut self, range: RangeInclusive<u64>) -> u64 {
        range.start() + self.below(range.end() - range.start() + 1)
    }

    /// Returns a duration between `low_ms` and `high_ms` milliseconds.
    pub fn millis(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(self.in_range(low_ms..=high_ms))
    }

    /// Returns true with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// Returns one of `items`, or `None` when there are none.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_ranges_hold() {
        let mut first = Random::new(7);
        let mut second = Random::new(7);
        let drawn: Vec<u64> = (0..5).map(|_| first.next_u64()).collect();
        assert_eq!(drawn, (0..5).map(|_| second.next_u64()).collect::<Vec<_>>());
        assert_ne!(Random::new(7).fork(1).next_u64(), Random::new(7).fork(2).next_u64());
        let mut random = Random::new(1);
        for _ in 0..1000 {
            assert!((3..=5).contains(&random.in_range(3..=5)));
            assert!(random.below(2) < 2);
        }
    }
}
