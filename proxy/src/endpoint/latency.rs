//! The latencies of an endpoint's answers, for the live page's recent
//! percentiles.
//!
//! Counts only, since the endpoint appeared, in log-spaced buckets: four per
//! doubling, so a bucket's upper bound is at most a quarter above its lower.
//! Recording an answer is one relaxed atomic add on the endpoint's own
//! array. Nothing is windowed here: a reader takes the difference between
//! two reads (the page does, between its polls), so the proxy does no work
//! for percentiles while nobody looks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Buckets per doubling of the latency.
const PER_DOUBLING: usize = 4;
/// Enough for 2^27 µs (over two minutes); slower answers share the last.
pub(crate) const BUCKETS: usize = PER_DOUBLING * 27;

pub(crate) struct LatencySketch {
    counts: [AtomicU64; BUCKETS],
}

impl Default for LatencySketch {
    fn default() -> Self {
        LatencySketch {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySketch").finish_non_exhaustive()
    }
}

/// The bucket of a latency in µs: 0..3 exactly, then four per doubling.
pub(crate) fn bucket(us: u64) -> usize {
    if us < PER_DOUBLING as u64 {
        return us as usize;
    }
    let top = 63 - us.leading_zeros() as usize;
    let quarter = ((us >> (top - 2)) & 3) as usize;
    (PER_DOUBLING * (top - 1) + quarter).min(BUCKETS - 1)
}

/// The least latency (µs) that falls in bucket `index`.
pub(crate) fn lower_bound(index: usize) -> u64 {
    if index < PER_DOUBLING {
        return index as u64;
    }
    let top = index / PER_DOUBLING + 1;
    let quarter = (index % PER_DOUBLING) as u64;
    (4 + quarter) << (top - 2)
}

/// The range of one bucket and how many answers fell in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BucketCount {
    /// Least latency in the bucket, µs.
    pub(crate) low_us: u64,
    /// Least latency of the next bucket, µs; the last bucket also holds
    /// every slower answer.
    pub(crate) high_us: u64,
    pub(crate) count: u64,
}

impl LatencySketch {
    pub(crate) fn record(&self, us: u64) {
        self.counts[bucket(us)].fetch_add(1, Relaxed);
    }

    /// Every bucket that has answers, fastest first.
    pub(crate) fn buckets(&self) -> Vec<BucketCount> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let count = c.load(Relaxed);
                (count > 0).then(|| BucketCount {
                    low_us: lower_bound(i),
                    high_us: lower_bound(i + 1),
                    count,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "latency_tests.rs"]
mod tests;
