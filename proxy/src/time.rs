//! A cheap monotonic clock in microseconds, so per-request timestamps fit in
//! atomics (endpoint statistics are updated without locks).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Microseconds since the process's first call.
pub fn now_us() -> u64 {
    EPOCH.elapsed().as_micros() as u64
}

pub(crate) fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}
