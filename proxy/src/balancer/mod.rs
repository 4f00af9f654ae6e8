//! Per-service load balancing.
//!
//! [`Balancers`] holds one [`Pool`] per Service port in use. A pool is made
//! on first use (from an upstream listener at start, or the first request
//! naming the service on the authority listener), subscribes to discovery
//! once, and applies its updates for as long as it lives. Pools not used for
//! `SIDELB_SERVICE_IDLE_TIMEOUT` are dropped with their discovery
//! subscription and metric series, so a proxy watches only the services its
//! pod talks to.
//!
//! Every valid authority names a service, so an app (or whatever it lets
//! choose the authority) could make the proxy open pools and API-server
//! watches without end. `SIDELB_MAX_SERVICES` bounds them: a pool one past
//! the limit is refused before anything is subscribed. Pinned pools (the
//! configured upstreams, the services an endpoints file lists) count
//! towards it but are never refused: they are the operator's choice.

pub(crate) mod hash;
pub mod outlier;
pub mod pick;
pub(crate) mod pool;
mod retry_budget;
pub mod subset;
mod zone;

use crate::discovery::Discover;
use crate::endpoint::tls::{Connector, TlsServices};
use crate::metrics::Metrics;
use crate::time::{now_us, us};
pub(crate) use pick::Protocol;
pub(crate) use pool::{NoEndpoint, Overloaded, Pool, Resolution};
use sidelb_config::{ProxyConfig, ServiceKey};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A pool past `SIDELB_MAX_SERVICES` was asked for.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "this proxy already serves {limit} services, the most SIDELB_MAX_SERVICES (sidelb.io/max-services) allows, so it does not open service {service}; raise the limit, or let services this pod no longer calls go idle (SIDELB_SERVICE_IDLE_TIMEOUT)"
)]
pub(crate) struct TooManyServices {
    pub(crate) service: String,
    pub(crate) limit: usize,
}

/// Shortest pause between idle sweeps.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

pub(crate) struct Balancers {
    pools: RwLock<HashMap<ServiceKey, Arc<PoolEntry>>>,
    discover: Arc<dyn Discover>,
    config: Arc<ProxyConfig>,
    metrics: Arc<Metrics>,
    /// This proxy's part of every subset choice.
    client: u64,
    /// The services whose pods serve TLS; `None`: all in cleartext.
    tls: Option<TlsServices>,
}

struct PoolEntry {
    pool: Arc<Pool>,
    subscription: tokio::task::AbortHandle,
}

impl Balancers {
    pub(crate) fn new(
        discover: Arc<dyn Discover>,
        config: Arc<ProxyConfig>,
        metrics: Arc<Metrics>,
        tls: Option<TlsServices>,
    ) -> Arc<Self> {
        let identity = subset::identity(&config);
        if config.subset_size > 0 {
            tracing::info!(
                "at most {} endpoints per service (SIDELB_SUBSET_SIZE), chosen for {identity}",
                config.subset_size
            );
        }
        Arc::new(Balancers {
            pools: RwLock::new(HashMap::new()),
            discover,
            config,
            metrics,
            client: subset::client(&identity),
            tls,
        })
    }

    /// The pool of `key`, made and subscribed on first use unless the
    /// proxy already serves `SIDELB_MAX_SERVICES` services.
    pub(crate) fn get(&self, key: &ServiceKey) -> Result<Arc<Pool>, TooManyServices> {
        if let Some(entry) = self
            .pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Ok(entry.pool.clone());
        }
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        let limit = self.config.max_services;
        if !pools.contains_key(key) && pools.len() >= limit {
            self.metrics.services_refused.inc();
            tracing::debug!(service = %key, "not served: {limit} services already (SIDELB_MAX_SERVICES)");
            return Err(TooManyServices {
                service: key.to_string(),
                limit,
            });
        }
        Ok(self.create(&mut pools, key, false))
    }

    /// The pool of a configured upstream: never dropped when idle, never
    /// refused.
    pub(crate) fn pin(&self, key: &ServiceKey) -> Arc<Pool> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        self.create(&mut pools, key, true)
    }

    /// Lets the pool of `key` be dropped once idle again.
    pub(crate) fn unpin(&self, key: &ServiceKey) {
        if let Some(entry) = self
            .pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            entry.pool.set_pinned(false);
        }
    }

    /// Keeps a pool for every Service the discovery source lists by itself
    /// (see [`Discover::listed`]) for as long as it lists it; `configured`
    /// pools (the upstream listeners') stay pinned whatever the list says.
    pub(crate) fn keep_listed(self: &Arc<Self>, configured: Vec<ServiceKey>) {
        let Some(mut listed) = self.discover.listed() else {
            return;
        };
        let mut kept: BTreeSet<ServiceKey> = BTreeSet::new();
        let mut follow = move |this: &Self, now: BTreeSet<ServiceKey>| {
            for key in now.difference(&kept) {
                this.pin(key);
            }
            for key in kept.difference(&now) {
                if !configured.contains(key) {
                    this.unpin(key);
                }
            }
            kept = now;
        };
        follow(self, listed.borrow_and_update().iter().cloned().collect());
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            while listed.changed().await.is_ok() {
                let Some(this) = this.upgrade() else { return };
                let now = listed.borrow_and_update().iter().cloned().collect();
                follow(&this, now);
            }
        });
    }

    /// The pool of `key` in `pools`, made and subscribed if there is none.
    fn create(
        &self,
        pools: &mut HashMap<ServiceKey, Arc<PoolEntry>>,
        key: &ServiceKey,
        pinned: bool,
    ) -> Arc<Pool> {
        if let Some(entry) = pools.get(key) {
            if pinned {
                entry.pool.set_pinned(true);
            }
            return entry.pool.clone();
        }
        let pool = Arc::new(Pool::new(
            key.clone(),
            self.config.clone(),
            self.metrics.clone(),
            self.discover.describe(),
            pinned,
            self.client,
            self.tls
                .as_ref()
                .map_or(Connector::Plain, |tls| tls.connector(key)),
        ));
        let mut updates = self.discover.subscribe(key);
        let subscriber = pool.clone();
        let subscription = tokio::spawn(async move {
            while let Some(update) = updates.recv().await {
                subscriber.apply(update);
            }
        })
        .abort_handle();
        pools.insert(
            key.clone(),
            Arc::new(PoolEntry {
                pool: pool.clone(),
                subscription,
            }),
        );
        pool
    }

    pub(crate) fn pools(&self) -> Vec<Arc<Pool>> {
        let pools = self.pools.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = pools.values().map(|e| e.pool.clone()).collect();
        out.sort_by(|a, b| a.key().cmp(b.key()));
        out
    }

    /// Whether discovery works and every pinned pool has heard from it once.
    pub(crate) fn ready(&self) -> Result<(), String> {
        self.discover.ready()?;
        for pool in self.pools() {
            if pool.is_pinned() && pool.resolution() == Resolution::Pending {
                return Err(format!("waiting for discovery of {}", pool.name()));
            }
        }
        Ok(())
    }

    /// Drops pools unused for `ttl` with nothing in flight.
    pub(crate) fn drop_idle(&self, ttl: Duration) -> usize {
        let cutoff = now_us().saturating_sub(us(ttl));
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        let before = pools.len();
        pools.retain(|_, e| {
            let idle =
                !e.pool.is_pinned() && e.pool.in_flight() == 0 && e.pool.last_used_us() < cutoff;
            if idle {
                tracing::info!(
                    service = e.pool.name(),
                    "no longer watched: unused for {ttl:?}"
                );
                e.subscription.abort();
                e.pool.shut();
            }
            !idle
        });
        before - pools.len()
    }

    /// Runs [`Self::drop_idle`] with `SIDELB_SERVICE_IDLE_TIMEOUT`, every
    /// tenth of it, until the task is dropped.
    pub(crate) async fn run_idle_sweeper(self: Arc<Self>) {
        let ttl = self.config.service_idle_timeout;
        let mut tick = tokio::time::interval((ttl / 10).max(MIN_SWEEP_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.drop_idle(ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::file::FileDiscovery;
    use sidelb_config::PortRef;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new(name, "ns", PortRef::Number(80))
    }

    fn balancers(max_services: usize, listed: &[&str]) -> Arc<Balancers> {
        let path = std::env::temp_dir().join(format!(
            "sidelb-balancers-{}-{}.yaml",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut text = String::from("services:\n");
        for name in listed {
            text.push_str(&format!("- name: {name}\n  namespace: ns\n  port: 80\n"));
        }
        if listed.is_empty() {
            text.push_str("- name: unused\n  namespace: other\n  port: 80\n");
        }
        std::fs::write(&path, text).unwrap();
        let discover = FileDiscovery::load(&path, "ns").unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut config = ProxyConfig::defaults();
        config.max_services = max_services;
        Balancers::new(
            Arc::new(discover),
            Arc::new(config),
            Arc::new(Metrics::new()),
            None,
        )
    }

    #[tokio::test]
    async fn the_service_past_the_limit_is_refused_and_not_made() {
        let b = balancers(2, &[]);
        let first = b.get(&key("a")).unwrap();
        b.get(&key("b")).unwrap();
        assert!(
            Arc::ptr_eq(&first, &b.get(&key("a")).unwrap()),
            "known ones still answer"
        );
        let refused = b.get(&key("c")).unwrap_err();
        assert_eq!((refused.service.as_str(), refused.limit), ("c.ns:80", 2));
        let message = refused.to_string();
        assert!(
            message.contains("already serves 2 services")
                && message.contains("SIDELB_MAX_SERVICES (sidelb.io/max-services)"),
            "{message}"
        );
        assert_eq!(b.pools().len(), 2, "no pool for the refused one");
        assert_eq!(b.metrics.services_refused.get(), 1);
    }

    #[tokio::test]
    async fn pinned_pools_count_but_are_never_refused() {
        let b = balancers(1, &[]);
        b.pin(&key("up1"));
        b.pin(&key("up2"));
        assert_eq!(b.pools().len(), 2);
        assert!(b.get(&key("a")).is_err(), "the pinned ones fill the limit");
        assert!(b.get(&key("up1")).is_ok());
    }

    #[tokio::test]
    async fn listed_services_are_pinned_past_the_limit() {
        let b = balancers(1, &["x", "y"]);
        b.keep_listed(Vec::new());
        assert_eq!(b.pools().len(), 2);
        assert!(b.get(&key("z")).is_err());
    }

    #[tokio::test]
    async fn a_dropped_idle_pool_frees_its_place() {
        let b = balancers(1, &[]);
        let a = b.get(&key("a")).unwrap();
        assert!(b.get(&key("b")).is_err());
        assert_eq!(b.drop_idle(Duration::from_secs(3600)), 0, "used just now");
        // The clock counts microseconds: let one pass since its last use.
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(b.drop_idle(Duration::ZERO), 1);
        assert!(a.is_shut());
        assert!(b.get(&key("b")).is_ok());
    }
}
