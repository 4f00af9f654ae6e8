//! Outlier ejection.
//!
//! An endpoint that fails [`ProxyConfig::ejection_failures`] times in a row
//! (connection errors, UNAVAILABLE or INTERNAL answers) is taken out of
//! rotation for the base time, doubled with each repeat up to the maximum.
//! At most `ejection_max_percent` of a service's endpoints (at least one) are
//! out at once, so a bad deploy cannot empty the pool. Ejected endpoints
//! come back lazily: the first look after their time is up returns them.
//!
//! The endpoint keeps its own record ([`Health`]); this module holds what
//! only the pool knows (how many are out, how many there are) and decides.
//!
//! [`Health`]: crate::endpoint::health::Health

use crate::endpoint::Endpoint;
use crate::endpoint::health::Rotation;
use crate::metrics::Metrics;
use crate::time::us;
use sidelb_config::ProxyConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio::sync::Notify;

pub struct Outlier {
    failures_to_eject: u32,
    base_us: u64,
    max_us: u64,
    max_percent: u32,
    ejected: AtomicUsize,
    size: AtomicUsize,
    metrics: Arc<Metrics>,
    /// The pool's: an ejection changes what a waiting request may pick.
    changed: Arc<Notify>,
}

impl Outlier {
    pub fn new(config: &ProxyConfig, metrics: Arc<Metrics>, changed: Arc<Notify>) -> Self {
        Outlier {
            failures_to_eject: config.ejection_failures,
            base_us: us(config.ejection_base_time),
            max_us: us(config.ejection_max_time),
            max_percent: config.ejection_max_percent,
            ejected: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
            metrics,
            changed,
        }
    }

    /// How many endpoints the service has now.
    pub(crate) fn set_size(&self, n: usize) {
        self.size.store(n, Relaxed);
    }

    /// How many endpoints are out now.
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Relaxed)
    }

    fn allowed(&self) -> usize {
        if self.max_percent == 0 {
            return 0;
        }
        (self.size.load(Relaxed) * self.max_percent as usize / 100).max(1)
    }

    /// The length of an ejection that follows `prior` ones in a row.
    fn length_us(&self, prior: u32) -> u64 {
        self.base_us
            .saturating_mul(1u64 << prior.min(20))
            .min(self.max_us)
    }

    pub(crate) fn on_success(&self, ep: &Endpoint) {
        ep.health().succeeded();
    }

    /// A failed exchange with `ep` at `now` (µs); ejects it when it is the
    /// last of a run and the cap allows.
    pub(crate) fn on_failure(&self, ep: &Endpoint, now: u64) {
        if self.failures_to_eject == 0 {
            return;
        }
        let health = ep.health();
        let failures = health.failed();
        if failures < self.failures_to_eject || health.is_ejected() || ep.is_removed() {
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
        let prior = health.prior_ejections(now, self.max_us);
        let length_us = self.length_us(prior);
        if !health.eject(now, length_us, prior.saturating_add(1)) {
            // Another failure ejected it first.
            self.ejected.fetch_sub(1, Relaxed);
            return;
        }
        let labels = ep.metric_labels();
        self.metrics.ejections.get_or_create(&labels).inc();
        self.metrics.ejected.get_or_create(&labels).set(1);
        tracing::warn!(
            endpoint = %ep.addr,
            service = ep.service(),
            "ejected for {:?} after {failures} consecutive failures",
            std::time::Duration::from_micros(length_us)
        );
        self.changed.notify_waiters();
    }

    /// Whether `ep` is ejected at `now`; returns it to rotation when its time is up.
    pub(crate) fn is_out(&self, ep: &Endpoint, now: u64) -> bool {
        match ep.health().check(now) {
            Rotation::In => false,
            Rotation::Out => true,
            Rotation::Returned => {
                self.ejected.fetch_sub(1, Relaxed);
                self.metrics
                    .ejected
                    .get_or_create(&ep.metric_labels())
                    .set(0);
                tracing::info!(endpoint = %ep.addr, service = ep.service(), "returned to rotation after ejection");
                false
            }
        }
    }

    /// An endpoint left the service: it no longer counts as ejected.
    pub(crate) fn forget(&self, ep: &Endpoint) {
        if ep.health().clear() {
            self.ejected.fetch_sub(1, Relaxed);
            self.metrics.ejected.remove(&ep.metric_labels());
        }
    }

    /// Returns every endpoint whose time is up at `now` (for views of state).
    pub(crate) fn sweep<'a>(&self, eps: impl IntoIterator<Item = &'a Arc<Endpoint>>, now: u64) {
        for ep in eps {
            self.is_out(ep, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ServiceContext;
    use crate::metrics::EndpointLabels;
    use std::time::Duration;

    const SECOND: u64 = 1_000_000;

    struct Fixture {
        metrics: Arc<Metrics>,
        service: Arc<ServiceContext>,
        outlier: Outlier,
    }

    /// Ejection after 3 failures for 10 s, doubling up to 60 s, at most half out.
    fn fixture() -> Fixture {
        let mut config = ProxyConfig::defaults();
        config.ejection_failures = 3;
        config.ejection_base_time = Duration::from_secs(10);
        config.ejection_max_time = Duration::from_secs(60);
        config.ejection_max_percent = 50;
        fixture_with(&config)
    }

    fn fixture_with(config: &ProxyConfig) -> Fixture {
        let metrics = Arc::new(Metrics::new());
        Fixture {
            service: Arc::new(ServiceContext {
                name: "svc.ns:80".into(),
                metrics: metrics.clone(),
                changed: Default::default(),
            }),
            outlier: Outlier::new(config, metrics.clone(), Default::default()),
            metrics,
        }
    }

    impl Fixture {
        fn endpoints(&self, n: usize) -> Vec<Arc<Endpoint>> {
            self.outlier.set_size(n);
            (0..n)
                .map(|i| {
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
                    Endpoint::new(addr, None, 1000.0, self.service.clone(), false, 0)
                })
                .collect()
        }

        fn fail(&self, ep: &Endpoint, times: u32, now: u64) {
            for _ in 0..times {
                self.outlier.on_failure(ep, now);
            }
        }

        fn ejected_gauge(&self, ep: &Endpoint) -> i64 {
            self.metrics
                .ejected
                .get_or_create(&EndpointLabels {
                    service: "svc.ns:80".into(),
                    endpoint: ep.addr.to_string(),
                })
                .get()
        }
    }

    #[test]
    fn ejects_after_the_configured_run_of_failures() {
        let f = fixture();
        let ep = &f.endpoints(2)[0];
        f.fail(ep, 2, 0);
        f.outlier.on_success(ep);
        f.fail(ep, 2, 0);
        assert!(!ep.is_ejected(), "a success ends the run");
        f.fail(ep, 1, 0);
        assert!(f.outlier.is_out(ep, 0));
        assert_eq!(f.outlier.ejected(), 1);
        assert_eq!(f.ejected_gauge(ep), 1);
        assert_eq!(ep.health_view(0).ejection_us, Some(10 * SECOND));
    }

    #[test]
    fn at_most_the_cap_is_out_and_at_least_one() {
        let f = fixture();
        let eps = f.endpoints(10);
        for ep in &eps {
            f.fail(ep, 3, 0);
        }
        assert_eq!(f.outlier.ejected(), 5, "50 % of 10");
        assert_eq!(eps.iter().filter(|ep| f.outlier.is_out(ep, 0)).count(), 5);

        let f = fixture();
        let eps = f.endpoints(1);
        f.fail(&eps[0], 3, 0);
        assert_eq!(f.outlier.ejected(), 1, "50 % of one rounds up to one");

        let mut config = ProxyConfig::defaults();
        config.ejection_max_percent = 0;
        let f = fixture_with(&config);
        let eps = f.endpoints(4);
        f.fail(&eps[0], config.ejection_failures * 2, 0);
        assert_eq!(f.outlier.ejected(), 0, "0 % turns ejection off");
    }

    #[test]
    fn returns_once_its_time_is_up_and_frees_its_place() {
        let f = fixture();
        let eps = f.endpoints(2);
        f.fail(&eps[0], 3, 0);
        f.fail(&eps[1], 3, 0);
        assert!(!eps[1].is_ejected(), "the cap (one of two) is taken");
        assert!(f.outlier.is_out(&eps[0], 10 * SECOND - 1));
        assert!(!f.outlier.is_out(&eps[0], 10 * SECOND));
        assert_eq!(f.outlier.ejected(), 0);
        assert_eq!(f.ejected_gauge(&eps[0]), 0);
        f.fail(&eps[1], 3, 10 * SECOND);
        assert!(
            f.outlier.is_out(&eps[1], 10 * SECOND),
            "its place is free again"
        );
    }

    #[test]
    fn each_repeat_doubles_the_time_up_to_the_maximum() {
        let f = fixture();
        let ep = &f.endpoints(2)[0];
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            f.fail(ep, 3, now);
            let length = ep.health_view(now).ejection_us.unwrap();
            lengths.push(length / SECOND);
            now += length;
            f.outlier.sweep([ep], now);
            assert!(!ep.is_ejected());
        }
        assert_eq!(lengths, [10, 20, 40, 60, 60]);
        assert_eq!(ep.health_view(now).ejections, 5);

        // Back for longer than the maximum: the next ejection is short again.
        now += 60 * SECOND + 1;
        f.fail(ep, 3, now);
        assert_eq!(ep.health_view(now).ejection_us, Some(10 * SECOND));
        assert_eq!(ep.health_view(now).ejections, 1);
    }

    #[test]
    fn a_removed_endpoint_is_not_ejected_and_leaves_the_count() {
        let f = fixture();
        let eps = f.endpoints(4);
        f.fail(&eps[0], 3, 0);
        assert_eq!(f.outlier.ejected(), 1);
        f.outlier.forget(&eps[0]);
        assert_eq!(f.outlier.ejected(), 0);
        assert!(!eps[0].is_ejected());
        eps[1].mark_removed();
        f.fail(&eps[1], 3, 0);
        assert!(!eps[1].is_ejected());
    }

    #[test]
    fn ejection_off_counts_nothing() {
        let mut config = ProxyConfig::defaults();
        config.ejection_failures = 0;
        let f = fixture_with(&config);
        let ep = &f.endpoints(2)[0];
        f.fail(ep, 100, 0);
        assert!(!ep.is_ejected());
        assert_eq!(ep.health_view(0).consecutive_failures, 0);
    }
}
