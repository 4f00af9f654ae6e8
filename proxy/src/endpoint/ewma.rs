//! The latency estimate of an endpoint: an exponentially weighted moving
//! average over time, with time constant [`DECAY_US`].
//!
//! Each answer moves the estimate towards its latency by a weight that
//! grows with the time since the previous answer, capped at one half: a
//! busy endpoint's estimate is an average over the last second, a quiet
//! one's follows its few answers quickly, and no single slow answer can
//! more than halve the way to itself. While an endpoint gets no requests its
//! estimate decays towards zero, so an endpoint avoided for being slow is
//! tried again after a while and never written off.
//!
//! (A peak-EWMA, which jumps to any slower answer at once, reacts faster to
//! a sudden slowdown but lets one late answer — a cold start, a pause —
//! starve an endpoint for many seconds. The in-flight term of the cost
//! already repels an endpoint whose requests pile up, so the smoother
//! estimate keeps equal endpoints evenly loaded without losing that.)

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How quickly old observations fade.
pub(crate) const DECAY_US: f64 = 1_000_000.0;
/// Most an answer can move the estimate towards itself.
const MAX_WEIGHT: f64 = 0.5;

/// Lock-free: two atomics, updated with plain stores. Concurrent updates may
/// lose one observation, which an estimate can afford.
#[derive(Debug)]
pub(crate) struct LatencyEwma {
    estimate_us: AtomicU64,
    stamp_us: AtomicU64,
}

impl LatencyEwma {
    pub(crate) fn new(initial_us: f64, now_us: u64) -> Self {
        LatencyEwma {
            estimate_us: AtomicU64::new(initial_us.to_bits()),
            stamp_us: AtomicU64::new(now_us),
        }
    }

    fn decay(&self, now_us: u64) -> f64 {
        let elapsed = now_us.saturating_sub(self.stamp_us.load(Relaxed)) as f64;
        (-elapsed / DECAY_US).exp()
    }

    /// The estimate at `now_us`, decayed since the last observation.
    pub(crate) fn estimate(&self, now_us: u64) -> f64 {
        f64::from_bits(self.estimate_us.load(Relaxed)) * self.decay(now_us)
    }

    /// When the last observation was made (or the estimate created).
    pub(crate) fn last_observed_us(&self) -> u64 {
        self.stamp_us.load(Relaxed)
    }

    pub(crate) fn observe(&self, rtt_us: f64, now_us: u64) {
        let est = f64::from_bits(self.estimate_us.load(Relaxed));
        let weight = (1.0 - self.decay(now_us)).min(MAX_WEIGHT);
        let next = est + (rtt_us - est) * weight;
        self.estimate_us.store(next.to_bits(), Relaxed);
        self.stamp_us.store(now_us, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_answer_moves_a_busy_estimate_little() {
        let e = LatencyEwma::new(1000.0, 0);
        let mut now = 0;
        for _ in 0..1000 {
            now += 3000;
            e.observe(1000.0, now);
        }
        now += 3000;
        e.observe(20_000.0, now);
        assert!(e.estimate(now) < 1100.0, "{}", e.estimate(now));
    }

    #[test]
    fn a_slow_endpoint_is_learned_in_a_few_answers() {
        let e = LatencyEwma::new(1000.0, 0);
        let mut now = 0;
        for _ in 0..4 {
            now += 500_000;
            e.observe(50_000.0, now);
        }
        assert!(e.estimate(now) > 40_000.0, "{}", e.estimate(now));
    }

    #[test]
    fn idle_time_decays_towards_zero() {
        let e = LatencyEwma::new(50_000.0, 0);
        assert!(e.estimate(5_000_000) < 500.0);
    }
}
