//! Peak-EWMA latency: the estimate jumps to any slower observation at once
//! and decays towards faster ones (and towards zero while idle) with time
//! constant [`DECAY`]. A slow endpoint is avoided quickly and tried again
//! after a while, never written off for good.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How quickly old observations fade.
pub const DECAY_US: f64 = 10_000_000.0;

/// Lock-free: two atomics, updated with plain stores. Concurrent updates may
/// lose one observation, which an estimate can afford.
#[derive(Debug)]
pub struct PeakEwma {
    estimate_us: AtomicU64,
    stamp_us: AtomicU64,
}

impl PeakEwma {
    pub fn new(initial_us: f64, now_us: u64) -> Self {
        PeakEwma {
            estimate_us: AtomicU64::new(initial_us.to_bits()),
            stamp_us: AtomicU64::new(now_us),
        }
    }

    /// The estimate at `now_us`, decayed since the last observation.
    pub fn estimate(&self, now_us: u64) -> f64 {
        let est = f64::from_bits(self.estimate_us.load(Relaxed));
        let elapsed = now_us.saturating_sub(self.stamp_us.load(Relaxed)) as f64;
        est * (-elapsed / DECAY_US).exp()
    }

    pub fn observe(&self, rtt_us: f64, now_us: u64) {
        let est = f64::from_bits(self.estimate_us.load(Relaxed));
        let elapsed = now_us.saturating_sub(self.stamp_us.load(Relaxed)) as f64;
        let next = if rtt_us > est {
            rtt_us
        } else {
            let w = (-elapsed / DECAY_US).exp();
            est * w + rtt_us * (1.0 - w)
        };
        self.estimate_us.store(next.to_bits(), Relaxed);
        self.stamp_us.store(now_us, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_then_decays() {
        let e = PeakEwma::new(1000.0, 0);
        e.observe(50_000.0, 1);
        assert_eq!(e.estimate(1), 50_000.0);
        e.observe(1000.0, 2);
        assert!(
            e.estimate(2) > 49_000.0,
            "one fast answer barely moves a peak"
        );
        assert!(e.estimate(30_000_000) < 3_000.0, "idle time decays it");
        e.observe(1000.0, 10_000_000);
        let later = e.estimate(10_000_000);
        assert!(later < 50_000.0 && later > 1000.0);
    }
}
