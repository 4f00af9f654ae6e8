//! How long to wait before trying an endpoint again: exponential backoff
//! with equal jitter (half fixed, half random), so that proxies that lost the
//! same endpoint at once do not come back at once. The connection driver and
//! the gRPC health checker both use it.

use std::time::Duration;

const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait before try number `attempt` (from 1).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(BACKOFF_MAX);
    let half = cap / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let first = backoff(1);
        assert!(first >= BACKOFF_BASE && first <= BACKOFF_BASE * 2);
        for attempt in [10, 20, 1000] {
            let b = backoff(attempt);
            assert!(b >= BACKOFF_MAX / 2 && b <= BACKOFF_MAX, "{b:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(8)).collect();
        assert!(samples.len() > 1, "jittered");
    }
}
