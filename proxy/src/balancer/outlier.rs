//! Outlier ejection.
//!
//! An endpoint that fails [`ProxyConfig::ejection_failures`] times in a row
//! (connection errors, UNAVAILABLE or INTERNAL answers) is taken out of
//! rotation for the base time, doubled with each repeat up to the maximum.
//! At most `ejection_max_percent` of a service's endpoints (at least one) are
//! out at once, so a bad deploy cannot empty the pool. Ejected endpoints
//! come back lazily: the first look after their time is up returns them.

use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use crate::time::{now_us, us};
use sidelb_config::ProxyConfig;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug)]
pub struct Outlier {
    failures_to_eject: u32,
    base_us: u64,
    max_us: u64,
    max_percent: u32,
    ejected: AtomicUsize,
    size: AtomicUsize,
}

impl Outlier {
    pub fn new(config: &ProxyConfig) -> Self {
        Outlier {
            failures_to_eject: config.ejection_failures,
            base_us: us(config.ejection_base_time),
            max_us: us(config.ejection_max_time),
            max_percent: config.ejection_max_percent,
            ejected: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
        }
    }

    /// How many endpoints the service has now.
    pub fn set_size(&self, n: usize) {
        self.size.store(n, Relaxed);
    }

    pub fn ejected(&self) -> usize {
        self.ejected.load(Relaxed)
    }

    fn allowed(&self) -> usize {
        if self.max_percent == 0 {
            return 0;
        }
        (self.size.load(Relaxed) * self.max_percent as usize / 100).max(1)
    }

    pub fn on_success(&self, ep: &Endpoint) {
        if ep.health.consecutive_failures.load(Relaxed) != 0 {
            ep.health.consecutive_failures.store(0, Relaxed);
        }
    }

    pub fn on_failure(&self, ep: &Endpoint) {
        if self.failures_to_eject == 0 {
            return;
        }
        let failures = ep.health.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if failures < self.failures_to_eject || ep.is_ejected() || ep.is_removed() {
            return;
        }
        let allowed = self.allowed();
        if self
            .ejected
            .fetch_update(Relaxed, Relaxed, |n| (n < allowed).then_some(n + 1))
            .is_err()
        {
            tracing::debug!(endpoint = %ep.addr, service = ep.service(), "not ejected: {allowed} endpoint(s) already out");
            return;
        }
        let now = now_us();
        let last_return = ep.health.last_return_us.load(Relaxed);
        if last_return != 0 && now.saturating_sub(last_return) > self.max_us {
            ep.health.ejections.store(0, Relaxed);
        }
        let repeats = ep.health.ejections.fetch_add(1, Relaxed).min(32);
        let time_us = self
            .base_us
            .saturating_mul(1u64 << repeats.min(20))
            .min(self.max_us);
        ep.health.ejection_us.store(time_us, Relaxed);
        ep.health
            .ejected_until_us
            .store(now + time_us.max(1), Relaxed);
        ep.health.consecutive_failures.store(0, Relaxed);
        let labels = ep.metric_labels();
        let metrics: &Metrics = &ep.pool.metrics;
        metrics.ejections.get_or_create(&labels).inc();
        metrics.ejected.get_or_create(&labels).set(1);
        tracing::warn!(
            endpoint = %ep.addr,
            service = ep.service(),
            "ejected for {:?} after {failures} consecutive failures",
            std::time::Duration::from_micros(time_us)
        );
        ep.pool.changed.notify_waiters();
    }

    /// Whether `ep` is ejected now; returns it to rotation when its time is up.
    pub fn is_out(&self, ep: &Endpoint, now: u64) -> bool {
        let until = ep.health.ejected_until_us.load(Relaxed);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        if ep
            .health
            .ejected_until_us
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            self.ejected.fetch_sub(1, Relaxed);
            ep.health.last_return_us.store(now, Relaxed);
            ep.pool
                .metrics
                .ejected
                .get_or_create(&ep.metric_labels())
                .set(0);
            tracing::info!(endpoint = %ep.addr, service = ep.service(), "returned to rotation after ejection");
        }
        false
    }

    /// An endpoint left the service: it no longer counts as ejected.
    pub fn forget(&self, ep: &Endpoint) {
        if ep.health.ejected_until_us.swap(0, Relaxed) != 0 {
            self.ejected.fetch_sub(1, Relaxed);
            ep.pool.metrics.ejected.remove(&ep.metric_labels());
        }
    }

    /// Returns every endpoint whose time is up (for views of state).
    pub fn sweep<'a>(&self, eps: impl IntoIterator<Item = &'a std::sync::Arc<Endpoint>>) {
        let now = now_us();
        for ep in eps {
            self.is_out(ep, now);
        }
    }
}
