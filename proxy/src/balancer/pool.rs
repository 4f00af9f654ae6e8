//! The endpoints of one service port, and the choice among them.
//!
//! The endpoint list is an immutable snapshot swapped atomically on each
//! discovery update, so a request's pick reads it without a lock while
//! updates build the next one. An endpoint present in both keeps its `Arc`:
//! its connection, in-flight count and latency estimate carry over.

use super::PoolShared;
use super::pick::{PickContext, pick};
use crate::discovery::{EndpointMeta, Update};
use crate::endpoint::{ConnState, Endpoint, driver};
use crate::time::{now_us, us};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};

/// Latency estimate of an endpoint before its first answer, when the
/// service has no other endpoint to take an estimate from.
const DEFAULT_RTT_US: f64 = 1000.0;
/// How long a request waits for the first discovery answer.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// What discovery has said about the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Pending,
    Resolved,
    NoService(String),
}

/// Why no endpoint could be chosen; each says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoEndpoint {
    #[error("{0}")]
    NoService(String),
    #[error(
        "no endpoints for service {service} from {source_name}; check that the service has ready pods"
    )]
    Empty {
        service: String,
        source_name: String,
    },
    #[error(
        "discovery of service {service} has not answered yet ({source_name}); check that the proxy can reach it"
    )]
    NotResolved {
        service: String,
        source_name: String,
    },
    #[error(
        "all {count} endpoints of service {service} are failing (last error: {last_error}); check that its pods are running and accept connections"
    )]
    AllFailing {
        service: String,
        count: usize,
        last_error: String,
    },
}

pub struct Pool {
    pub shared: Arc<PoolShared>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Removed endpoints that still have requests in flight.
    draining: Mutex<Vec<Weak<Endpoint>>>,
    resolution: Mutex<Resolution>,
    resolved: AtomicBool,
    in_flight: AtomicUsize,
    next: AtomicUsize,
    pub budget: TpsBudget,
    pub last_used_us: AtomicU64,
    /// Configured upstreams are never dropped for being idle.
    pub pinned: AtomicBool,
    shut: AtomicBool,
}

/// A request's place in the service's in-flight limit.
#[derive(Debug)]
pub struct Admission(Arc<Pool>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("service", &self.shared.name)
            .finish()
    }
}

impl Pool {
    pub fn new(shared: Arc<PoolShared>, pinned: bool) -> Self {
        let config = &shared.config;
        let percent = config.retry_budget_percent as f32 / 100.0;
        Pool {
            budget: TpsBudget::new(
                Duration::from_secs(10),
                config.retry_budget_min_per_second,
                percent,
            ),
            shared,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            draining: Mutex::new(Vec::new()),
            resolution: Mutex::new(Resolution::Pending),
            resolved: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            last_used_us: AtomicU64::new(now_us()),
            pinned: AtomicBool::new(pinned),
            shut: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Relaxed)
    }

    /// Whether the pool was dropped (idle); holders should look it up again.
    pub fn is_shut(&self) -> bool {
        self.shut.load(Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn resolution(&self) -> Resolution {
        self.resolution
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_resolved(&self) -> bool {
        self.resolved.load(Relaxed)
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Removed endpoints still finishing requests.
    pub fn draining(&self) -> Vec<Arc<Endpoint>> {
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        draining.retain(|w| w.upgrade().is_some_and(|ep| ep.in_flight() > 0));
        draining.iter().filter_map(Weak::upgrade).collect()
    }

    /// Takes a place in the in-flight limit, or `None` when the service is full.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let limit = self.shared.config.max_in_flight;
        self.in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        self.last_used_us.store(now_us(), Relaxed);
        self.budget.deposit();
        Some(Admission(self.clone()))
    }

    /// Chooses an endpoint now, without waiting, for an HTTP/2 request.
    pub fn try_pick(&self, exclude: Option<&Endpoint>) -> Result<Arc<Endpoint>, NoEndpoint> {
        self.try_pick_for(exclude, true)
    }

    /// Chooses an endpoint now, without waiting; `http2`: for a request on
    /// the endpoint's HTTP/2 connection (else HTTP/1.1, see [`PickContext::http2`]).
    pub fn try_pick_for(
        &self,
        exclude: Option<&Endpoint>,
        http2: bool,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        let endpoints = self.endpoints.load();
        let mut cx = PickContext {
            kind: self.shared.config.balancer,
            now_us: now_us(),
            exclude,
            outlier: &self.shared.outlier,
            slow_start_us: self.shared.config.slow_start.map(us),
            next: &self.next,
            allow_ejected: false,
            http2,
        };
        if let Some(ep) = pick(&endpoints, &cx) {
            return Ok(ep);
        }
        cx.allow_ejected = true;
        if let Some(ep) = pick(&endpoints, &cx) {
            return Ok(ep);
        }
        Err(self.why_none(&endpoints))
    }

    /// Chooses an endpoint for an HTTP/2 request, waiting (at most `wait`)
    /// while discovery has not answered or endpoints are still connecting.
    pub async fn pick(
        &self,
        exclude: Option<&Endpoint>,
        wait: Duration,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        self.pick_for(exclude, wait, true).await
    }

    /// [`Pool::pick`] for an HTTP/1.1 request: the endpoint's HTTP/2
    /// connection need not be up, only the endpoint reachable.
    pub async fn pick_http1(
        &self,
        exclude: Option<&Endpoint>,
        wait: Duration,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        self.pick_for(exclude, wait, false).await
    }

    async fn pick_for(
        &self,
        exclude: Option<&Endpoint>,
        wait: Duration,
        http2: bool,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let err = match self.try_pick_for(exclude, http2) {
                Ok(ep) => return Ok(ep),
                Err(e) => e,
            };
            if !self.worth_waiting(exclude) {
                return Err(err);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self.try_pick_for(exclude, http2).err().unwrap_or(err));
            }
        }
    }

    /// Whether waiting may help: discovery pending, or an endpoint connecting.
    fn worth_waiting(&self, exclude: Option<&Endpoint>) -> bool {
        if !self.is_resolved() {
            return matches!(self.resolution(), Resolution::Pending);
        }
        self.endpoints.load().iter().any(|ep| {
            ep.state() == ConnState::Connecting && !exclude.is_some_and(|x| std::ptr::eq(x, &**ep))
        })
    }

    fn why_none(&self, endpoints: &[Arc<Endpoint>]) -> NoEndpoint {
        let service = self.name().to_owned();
        let source_name = self.shared.source_name.clone();
        match self.resolution() {
            Resolution::NoService(why) => NoEndpoint::NoService(why),
            Resolution::Pending => NoEndpoint::NotResolved {
                service,
                source_name,
            },
            Resolution::Resolved if endpoints.is_empty() => NoEndpoint::Empty {
                service,
                source_name,
            },
            Resolution::Resolved => NoEndpoint::AllFailing {
                service,
                count: endpoints.len(),
                last_error: endpoints
                    .iter()
                    .find_map(|ep| ep.last_error())
                    .unwrap_or_else(|| "the endpoints are still connecting".into()),
            },
        }
    }

    /// Applies a discovery update.
    pub fn apply(&self, update: Update) {
        let current = self.endpoints.load_full();
        let mut by_addr: HashMap<SocketAddr, Arc<Endpoint>> =
            current.iter().map(|ep| (ep.addr, ep.clone())).collect();
        let mut no_service = None;
        match update {
            Update::Reset(list) => {
                let keep: std::collections::HashSet<_> = list.iter().map(|m| m.addr).collect();
                by_addr.retain(|addr, _| keep.contains(addr));
                self.add(&mut by_addr, list);
            }
            Update::Add(list) => self.add(&mut by_addr, list),
            Update::Remove(addrs) => {
                for addr in addrs {
                    by_addr.remove(&addr);
                }
            }
            Update::NoService(why) => {
                by_addr.clear();
                no_service = Some(why);
            }
        }
        let mut next: Vec<_> = by_addr.into_values().collect();
        next.sort_by_key(|ep| ep.addr);
        for gone in current
            .iter()
            .filter(|ep| !next.iter().any(|n| Arc::ptr_eq(n, ep)))
        {
            self.shared.outlier.forget(gone);
            gone.mark_removed();
            if gone.in_flight() > 0 {
                self.draining
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::downgrade(gone));
            }
        }
        self.shared.outlier.set_size(next.len());
        tracing::info!(
            service = self.name(),
            endpoints = next.len(),
            "endpoints updated"
        );
        self.endpoints.store(Arc::new(next));
        let resolution = match no_service {
            Some(why) => {
                tracing::warn!(service = self.name(), "{why}");
                Resolution::NoService(why)
            }
            None => Resolution::Resolved,
        };
        self.resolved
            .store(resolution == Resolution::Resolved, Relaxed);
        *self.resolution.lock().unwrap_or_else(|p| p.into_inner()) = resolution;
        self.shared.changed.notify_waiters();
    }

    fn add(&self, by_addr: &mut HashMap<SocketAddr, Arc<Endpoint>>, list: Vec<EndpointMeta>) {
        let slow_start = self.is_resolved() && self.shared.config.slow_start.is_some();
        let initial_rtt = self.typical_rtt();
        for meta in list {
            if let Some(ep) = by_addr.get(&meta.addr) {
                ep.set_name(meta.name);
                continue;
            }
            let ep = Endpoint::new(
                meta.addr,
                meta.name,
                initial_rtt,
                self.shared.clone(),
                slow_start,
            );
            driver::spawn(ep.clone(), self.shared.config.clone());
            by_addr.insert(meta.addr, ep);
        }
    }

    /// The mean latency estimate of ready endpoints: a fair start for a new one.
    fn typical_rtt(&self) -> f64 {
        let now = now_us();
        let eps = self.endpoints.load();
        let estimates: Vec<f64> = eps
            .iter()
            .filter(|ep| ep.is_ready())
            .map(|ep| ep.ewma.estimate(now))
            .collect();
        if estimates.is_empty() {
            DEFAULT_RTT_US
        } else {
            estimates.iter().sum::<f64>() / estimates.len() as f64
        }
    }

    /// Spends one retry from the budget, if there is one left.
    pub fn withdraw_retry(&self) -> bool {
        self.budget.withdraw()
    }

    /// Stops everything: the pool is being dropped.
    pub fn shut(&self) {
        self.shut.store(true, Relaxed);
        for ep in self.endpoints.load().iter() {
            ep.mark_removed();
        }
    }
}
