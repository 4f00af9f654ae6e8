//! How much an endpoint that says it is rate limited should be avoided.
//!
//! An endpoint answering `RESOURCE_EXHAUSTED` (or HTTP 429) answers fast, so
//! by latency alone it looks like the cheapest endpoint there is and takes
//! more calls, all of which it refuses. Each such answer adds one to a
//! penalty that decays with time constant [`DECAY_US`]; the balancer
//! divides the endpoint's share by `1 + penalty` (see `balancer::pick`).
//! It is a cost, not an ejection: the endpoint keeps some calls, so it is
//! seen at once when it serves again, and a whole service that rate limits
//! still gets every call, spread as before. The answers themselves go back
//! to the app unchanged; they are not retried.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How quickly the penalty fades: after 5 s without a rate-limited answer
/// it is down to a third.
pub(crate) const DECAY_US: f64 = 5_000_000.0;
/// The most the penalty can reach, so that an endpoint limited for a long
/// while is back within seconds of serving again.
pub(crate) const MAX_PENALTY: f64 = 50.0;

/// Lock-free, as the latency estimate: concurrent hits may lose one.
#[derive(Debug)]
pub(crate) struct RateLimitPenalty {
    value: AtomicU64,
    stamp_us: AtomicU64,
}

impl Default for RateLimitPenalty {
    fn default() -> Self {
        RateLimitPenalty {
            value: AtomicU64::new(0f64.to_bits()),
            stamp_us: AtomicU64::new(0),
        }
    }
}

impl RateLimitPenalty {
    /// The penalty at `now_us`: 0 for an endpoint never rate limited.
    pub(crate) fn at(&self, now_us: u64) -> f64 {
        let value = f64::from_bits(self.value.load(Relaxed));
        if value == 0.0 {
            return 0.0;
        }
        let elapsed = now_us.saturating_sub(self.stamp_us.load(Relaxed)) as f64;
        value * (-elapsed / DECAY_US).exp()
    }

    /// One rate-limited answer at `now_us`.
    pub(crate) fn hit(&self, now_us: u64) {
        let next = (self.at(now_us) + 1.0).min(MAX_PENALTY);
        self.value.store(next.to_bits(), Relaxed);
        self.stamp_us.store(now_us, Relaxed);
    }

    /// The share an endpoint may take now, 0 < share ≤ 1.
    pub(crate) fn share(&self, now_us: u64) -> f64 {
        1.0 / (1.0 + self.at(now_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn an_endpoint_never_limited_takes_a_full_share() {
        let p = RateLimitPenalty::default();
        assert_eq!(p.at(10 * SEC), 0.0);
        assert_eq!(p.share(10 * SEC), 1.0);
    }

    #[test]
    fn each_hit_adds_one_and_the_sum_decays() {
        let p = RateLimitPenalty::default();
        p.hit(SEC);
        p.hit(SEC);
        p.hit(SEC);
        assert_eq!(p.at(SEC), 3.0);
        assert_eq!(p.share(SEC), 0.25);
        let later = p.at(SEC + DECAY_US as u64);
        assert!((later - 3.0 / std::f64::consts::E).abs() < 1e-9, "{later}");
        assert!(p.at(SEC + 60 * SEC) < 0.001);
    }

    #[test]
    fn the_penalty_is_capped() {
        let p = RateLimitPenalty::default();
        for _ in 0..1000 {
            p.hit(SEC);
        }
        assert_eq!(p.at(SEC), MAX_PENALTY);
        // Back to under half a penalty within 20 s of the last refusal.
        assert!(p.at(21 * SEC) < 1.0, "{}", p.at(21 * SEC));
    }

    proptest! {
        #[test]
        fn share_is_in_range_and_falls_with_hits(hits in 0usize..200, gap in 0u64..20 * SEC) {
            let p = RateLimitPenalty::default();
            let mut last = 1.0;
            for i in 0..hits {
                p.hit(i as u64 * 1000);
                let share = p.share(i as u64 * 1000);
                prop_assert!(share > 0.0 && share <= 1.0);
                prop_assert!(share <= last + 1e-12);
                last = share;
            }
            let after = p.share(hits as u64 * 1000 + gap);
            prop_assert!(after >= last - 1e-12 && after <= 1.0);
        }
    }
}
