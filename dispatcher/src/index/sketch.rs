//! A mergeable latency sketch (DDSketch, logarithmic buckets): quantiles within a fixed
//! relative error, exact counts per bucket, so sketches add, subtract and merge exactly.
//!
//! Invariants: a value's bucket depends only on the value, so a sketch is the same however its
//! values were added, removed or merged; the estimate of a bucket is within `ALPHA` of every
//! value in it, so the nearest-rank quantile from the sketch is within `ALPHA` of the exact one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// The relative accuracy: every estimate is within 0.8% of the value it stands for, leaving
/// margin under the 1% the API promises.
pub const ALPHA: f64 = 0.008;

/// `(1 + ALPHA) / (1 - ALPHA)`: each bucket spans values `(GAMMA^(i-1), GAMMA^i]`.
fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// Counts of non-negative integer values (microseconds) by logarithmic bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    /// Values of 0, which have no logarithm.
    zero: u64,
    /// Bucket index → count; never holds a zero count.
    counts: BTreeMap<i32, u64>,
}

impl Sketch {
    fn index(value: u64) -> i32 {
        ((value as f64).ln() / gamma().ln()).ceil() as i32
    }

    /// The value a bucket stands for: within `ALPHA` of each value in it.
    fn estimate(index: i32) -> f64 {
        let g = gamma();
        2.0 * g.powi(index) / (g + 1.0)
    }

    /// Counts `value` once more.
    pub fn add(&mut self, value: u64) {
        if value == 0 {
            self.zero += 1;
        } else {
            *self.counts.entry(Self::index(value)).or_default() += 1;
        }
    }

    /// Counts `value` once less (undoing an `add` of the same value).
    pub fn remove(&mut self, value: u64) {
        if value == 0 {
            self.zero = self.zero.saturating_sub(1);
            return;
        }
        let index = Self::index(value);
        if let Some(count) = self.counts.get_mut(&index) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&index);
            }
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        self.zero += other.zero;
        for (index, count) in &other.counts {
            *self.counts.entry(*index).or_default() += count;
        }
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        self.zero + self.counts.values().sum::<u64>()
    }

    /// The nearest-rank `p`-th percentile (0–100); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as u64;
        if rank <= self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for (index, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return Some(Self::estimate(*index));
            }
        }
        self.counts.keys().next_back().map(|i| Self::estimate(*i))
    }
}

/// The stored form: the zero count, the first index, and (gap to the previous index, count)
/// pairs, so that a run of neighbouring buckets costs about two bytes each under bincode's
/// variable-length integers.
#[derive(Serialize, Deserialize)]
struct Wire {
    zero: u64,
    first: i32,
    rest: Vec<(u32, u64)>,
}

impl Serialize for Sketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let first = self.counts.keys().next().copied().unwrap_or(0);
        let mut previous = first;
        let rest = self
            .counts
            .iter()
            .map(|(index, count)| {
                let gap = (index - previous) as u32;
                previous = *index;
                (gap, *count)
            })
            .collect();
        Wire {
            zero: self.zero,
            first,
            rest,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Sketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sketch, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let mut index = wire.first;
        let mut counts = BTreeMap::new();
        for (gap, count) in wire.rest {
            index += gap as i32;
            if count > 0 {
                counts.insert(index, count);
            }
        }
        Ok(Sketch {
            zero: wire.zero,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latencies with a long tail, from a fixed seed: mostly 0.2–5 ms, some up to 2 s.
    fn latencies(n: usize) -> Vec<u64> {
        let mut state = 0x1234_5678_9abc_def0_u64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                // Log-uniform over 200 µs–5 ms, and one value in fifty up to 2 s.
                if state.is_multiple_of(50) {
                    (5_000.0 * (400.0f64).powf(u)) as u64
                } else {
                    (200.0 * (25.0f64).powf(u)) as u64
                }
            })
            .collect()
    }

    fn nearest_rank(sorted: &[u64], p: f64) -> f64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64
    }

    #[test]
    fn percentiles_are_within_one_percent_of_exact_nearest_rank_ones() {
        let values = latencies(100_000);
        let mut sketch = Sketch::default();
        // Built in 60 parts and merged, as a window's buckets are.
        let mut parts = vec![Sketch::default(); 60];
        for (i, v) in values.iter().enumerate() {
            parts[i % 60].add(*v);
        }
        for part in &parts {
            sketch.merge(part);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for p in [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0] {
            let exact = nearest_rank(&sorted, p);
            let estimate = sketch.percentile(p).unwrap();
            let error = (estimate - exact).abs() / exact;
            assert!(
                error <= 0.01,
                "p{p}: sketch {estimate} vs exact {exact} ({:.3}%)",
                error * 100.0
            );
        }
        assert_eq!(sketch.count(), 100_000);
    }

    #[test]
    fn removing_what_was_added_gives_the_same_sketch_and_it_round_trips() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for v in [0, 1, 5, 1000, 1000, 123_456] {
            a.add(v);
        }
        b.merge(&a);
        b.add(77);
        b.add(0);
        b.remove(77);
        b.remove(0);
        assert_eq!(a, b);
        let bytes = bincode::serde::encode_to_vec(&a, bincode::config::standard()).unwrap();
        let (back, _): (Sketch, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, a);
        assert_eq!(Sketch::default().percentile(50.0), None);
    }
}
