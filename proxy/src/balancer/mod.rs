//! Per-service load balancing.
//!
//! [`Balancers`] holds one [`Pool`] per Service port in use. A pool is made
//! on first use (from an upstream listener at start, or the first request
//! naming the service on the authority listener), subscribes to discovery
//! once, and applies its updates for as long as it lives. Pools not used for
//! [`IDLE_POOL_TTL`] are dropped with their discovery subscription, so a
//! proxy watches only the services its pod talks to.

pub mod outlier;
pub mod pick;
pub(crate) mod pool;

use crate::discovery::Discover;
use crate::metrics::Metrics;
use crate::time::{now_us, us};
pub(crate) use pick::Protocol;
pub(crate) use pool::{NoEndpoint, Overloaded, Pool, Resolution};
use sidelb_config::{ProxyConfig, ServiceKey};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub(crate) const IDLE_POOL_TTL: Duration = Duration::from_secs(600);

pub(crate) struct Balancers {
    pools: RwLock<HashMap<ServiceKey, Arc<PoolEntry>>>,
    discover: Arc<dyn Discover>,
    config: Arc<ProxyConfig>,
    metrics: Arc<Metrics>,
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
    ) -> Arc<Self> {
        Arc::new(Balancers {
            pools: RwLock::new(HashMap::new()),
            discover,
            config,
            metrics,
        })
    }

    /// The pool of `key`, made and subscribed on first use.
    pub(crate) fn get(&self, key: &ServiceKey) -> Arc<Pool> {
        if let Some(entry) = self
            .pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return entry.pool.clone();
        }
        self.create(key, false)
    }

    /// The pool of a configured upstream: never dropped when idle.
    pub(crate) fn pin(&self, key: &ServiceKey) -> Arc<Pool> {
        self.create(key, true)
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

    fn create(&self, key: &ServiceKey, pinned: bool) -> Arc<Pool> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
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

    /// Runs [`Self::drop_idle`] periodically until the task is dropped.
    pub(crate) async fn run_idle_sweeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(IDLE_POOL_TTL / 10);
        loop {
            tick.tick().await;
            self.drop_idle(IDLE_POOL_TTL);
        }
    }
}
