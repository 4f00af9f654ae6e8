//! The endpoints of one service port, and the choice among them.
//!
//! The endpoint list is an immutable snapshot swapped atomically on each
//! discovery update, so a request's pick reads it without a lock while
//! updates build the next one. An endpoint present in both keeps its `Arc`:
//! its connection, in-flight count and latency estimate carry over. With
//! `SIDELB_SUBSET_SIZE` the snapshot holds only the subset's members
//! ([`super::subset`]); the others get no endpoint, so no connection.

use super::hash::Affinity;
use super::outlier::Outlier;
use super::pick::{PickContext, Protocol, pick, usable};
use super::retry_budget::RetryBudget;
use super::subset::Subset;
use super::zone::{Locality, Placement, keep_local, local_addrs};
use crate::discovery::{EndpointMeta, Update};
use crate::endpoint::tls::Connector;
use crate::endpoint::{ConnState, Endpoint, ServiceContext, driver, request_counter};
use crate::metrics::{Metrics, RequestLabels, ServiceLabels};
use crate::time::{now_us, us};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use sidelb_config::{ProxyConfig, ServiceKey};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Latency estimate of an endpoint before its first answer, when the
/// service has no other endpoint to take an estimate from.
const DEFAULT_RTT_US: f64 = 1000.0;

/// What discovery has said about the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    Pending,
    Resolved,
    NoService(String),
}

/// Why no endpoint could be chosen; each says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum NoEndpoint {
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
        "all {count} endpoints of service {service}{subset} are failing (last error: {last_error}); check that its pods are running and accept connections"
    )]
    AllFailing {
        service: String,
        count: usize,
        /// Empty, or how the subset leaves other endpoints out.
        subset: String,
        last_error: String,
    },
    #[error(
        "no endpoint of service {service} can take calls: {not_serving} of its {count} endpoints answer NOT_SERVING to gRPC health checks (SIDELB_HEALTH_CHECK=grpc, annotation sidelb.io/health-check){others}; they get calls again once they answer SERVING"
    )]
    NotServing {
        service: String,
        count: usize,
        not_serving: usize,
        /// Empty, or what is wrong with the others.
        others: String,
    },
}

/// The in-flight limit is reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "service {service} has {limit} requests in flight, the most allowed (SIDELB_MAX_IN_FLIGHT); retry later or raise the limit"
)]
pub(crate) struct Overloaded {
    pub(crate) service: String,
    pub(crate) limit: usize,
}

/// The service's own counters, resolved once.
struct PoolMetrics {
    duration: Histogram,
    retries: Counter,
    retries_over_budget: Counter,
    overloaded: Counter,
    discovery_updates: Counter,
    subset_endpoints: Gauge,
    zone_local: Counter,
    zone_spilled: Counter,
}

impl PoolMetrics {
    fn new(metrics: &Metrics, name: &str) -> Self {
        let labels = ServiceLabels {
            service: name.to_owned(),
        };
        PoolMetrics {
            duration: metrics.request_duration.get_or_create(&labels).clone(),
            retries: metrics.retries.get_or_create(&labels).clone(),
            retries_over_budget: metrics.retries_over_budget.get_or_create(&labels).clone(),
            overloaded: metrics.overloaded.get_or_create(&labels).clone(),
            discovery_updates: metrics.discovery_updates.get_or_create(&labels).clone(),
            subset_endpoints: metrics.subset_endpoints.get_or_create(&labels).clone(),
            zone_local: metrics.zone_local_requests.get_or_create(&labels).clone(),
            zone_spilled: metrics.zone_spilled_requests.get_or_create(&labels).clone(),
        }
    }
}

pub(crate) struct Pool {
    key: ServiceKey,
    /// What its endpoints share (name, metrics, change signal).
    service: Arc<ServiceContext>,
    config: Arc<ProxyConfig>,
    /// The discovery source, for messages.
    source_name: String,
    outlier: Arc<Outlier>,
    counters: PoolMetrics,
    /// The request series of answers the proxy gave itself, removed with
    /// the pool (endpoints remove their own).
    local_series: Mutex<HashSet<RequestLabels>>,
    /// The members of the subset, or every endpoint when there is none.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// This pod's zone (`SIDELB_ZONE` or its Node's) and node, where calls
    /// are kept while they can be (see [`super::zone`]); where each endpoint
    /// is; and the endpoints local to it.
    zone: Option<Arc<str>>,
    node: Option<Arc<str>>,
    placements: Mutex<HashMap<SocketAddr, Placement>>,
    locality: ArcSwap<Locality>,
    /// With `SIDELB_SUBSET_SIZE` above 0: every endpoint, ranked.
    subset: Option<Mutex<Subset>>,
    /// With `SIDELB_HASH_HEADER`: the ring over `endpoints`.
    affinity: Option<Affinity>,
    /// Removed endpoints that still have requests in flight.
    draining: Mutex<Vec<Weak<Endpoint>>>,
    resolution: Mutex<Resolution>,
    resolved: AtomicBool,
    in_flight: AtomicUsize,
    next: AtomicUsize,
    budget: RetryBudget,
    last_used_us: AtomicU64,
    /// Configured upstreams are never dropped for being idle.
    pinned: AtomicBool,
    shut: AtomicBool,
    /// How its endpoints connect: cleartext or TLS (`SIDELB_BACKEND_TLS`).
    connector: Connector,
}

/// A request's place in the service's in-flight limit.
#[derive(Debug)]
pub(crate) struct Admission(Arc<Pool>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("service", &self.service.name)
            .finish()
    }
}

impl Pool {
    /// The pool of service port `key`, with no endpoints until discovery
    /// answers; `source_name` names the discovery source in messages,
    /// `client` is this proxy's part of the subset choice
    /// ([`super::subset::client`]), `connector` how its endpoints connect.
    pub(crate) fn new(
        key: ServiceKey,
        config: Arc<ProxyConfig>,
        metrics: Arc<Metrics>,
        source_name: String,
        pinned: bool,
        client: u64,
        connector: Connector,
    ) -> Self {
        let name: Arc<str> = key.to_string().into();
        let changed = Arc::new(Notify::new());
        Pool {
            budget: RetryBudget::new(
                config.retry_budget_percent,
                config.retry_budget_min_per_second,
            ),
            counters: PoolMetrics::new(&metrics, &name),
            affinity: config
                .hash_header
                .as_deref()
                .and_then(|header| Affinity::new(header, &metrics, &name)),
            local_series: Mutex::new(HashSet::new()),
            outlier: Arc::new(Outlier::new(&config, metrics.clone(), changed.clone())),
            service: Arc::new(ServiceContext {
                name,
                metrics,
                changed,
            }),
            source_name,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            zone: Some(config.zone.as_str())
                .filter(|z| !z.is_empty())
                .map(Arc::from),
            node: Some(config.node_name.as_str())
                .filter(|n| !n.is_empty())
                .map(Arc::from),
            placements: Mutex::new(HashMap::new()),
            locality: ArcSwap::from_pointee(Locality::default()),
            subset: (config.subset_size > 0)
                .then(|| Mutex::new(Subset::new(config.subset_size, client))),
            key,
            config,
            draining: Mutex::new(Vec::new()),
            resolution: Mutex::new(Resolution::Pending),
            resolved: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            last_used_us: AtomicU64::new(now_us()),
            pinned: AtomicBool::new(pinned),
            shut: AtomicBool::new(false),
            connector,
        }
    }

    /// `svc.ns:port`.
    pub(crate) fn name(&self) -> &str {
        &self.service.name
    }

    pub(crate) fn key(&self) -> &ServiceKey {
        &self.key
    }

    pub(crate) fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The name its pods' certificates must carry; `None` in cleartext.
    pub(crate) fn tls_server_name(&self) -> Option<String> {
        self.connector.server_name()
    }

    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned.load(Relaxed)
    }

    /// Whether the pool may be dropped when idle (`false`) or not.
    pub(crate) fn set_pinned(&self, pinned: bool) {
        self.pinned.store(pinned, Relaxed);
    }

    /// When a request last took a place in the pool.
    pub(crate) fn last_used_us(&self) -> u64 {
        self.last_used_us.load(Relaxed)
    }

    /// Whether the pool was dropped (idle); holders should look it up again.
    pub(crate) fn is_shut(&self) -> bool {
        self.shut.load(Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub(crate) fn resolution(&self) -> Resolution {
        self.resolution
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.resolved.load(Relaxed)
    }

    pub(crate) fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// The endpoints discovery reports that are not in the subset.
    pub(crate) fn outside_subset(&self) -> Vec<EndpointMeta> {
        self.subset.as_ref().map_or_else(Vec::new, |s| {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .outside()
                .collect()
        })
    }

    /// Removed endpoints still finishing requests.
    pub(crate) fn draining(&self) -> Vec<Arc<Endpoint>> {
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        draining.retain(|w| w.upgrade().is_some_and(|ep| ep.in_flight() > 0));
        draining.iter().filter_map(Weak::upgrade).collect()
    }

    /// How many of its endpoints are ejected now.
    pub(crate) fn ejected(&self) -> usize {
        self.outlier.ejected()
    }

    /// Returns to rotation every endpoint whose ejection is up, so a view
    /// of state shows them as they are.
    pub(crate) fn sweep_ejections(&self) {
        self.outlier.sweep(self.endpoints.load().iter(), now_us());
    }

    /// Takes a place in the in-flight limit, or says the service is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Admission, Overloaded> {
        let limit = self.config.max_in_flight;
        if self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .is_err()
        {
            self.counters.overloaded.inc();
            return Err(Overloaded {
                service: self.name().to_owned(),
                limit,
            });
        }
        self.last_used_us.store(now_us(), Relaxed);
        self.budget.deposit();
        Ok(Admission(self.clone()))
    }

    /// Chooses an endpoint for a request sent by `protocol`, never
    /// `exclude`, waiting (at most `wait`) while discovery has not answered
    /// or endpoints are still connecting.
    pub(crate) async fn pick(
        &self,
        protocol: Protocol,
        exclude: Option<&Endpoint>,
        wait: Duration,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        self.pick_for(None, protocol, exclude, wait).await
    }

    /// The header `SIDELB_HASH_HEADER` names, if set.
    pub(crate) fn hash_header(&self) -> Option<&str> {
        self.affinity.as_ref().map(Affinity::header)
    }

    /// As [`Self::pick`], for a request with `headers`: one carrying the
    /// hash header goes to the pod its value picks (see [`super::hash`]).
    pub(crate) async fn pick_by_headers(
        &self,
        headers: &http::HeaderMap,
        protocol: Protocol,
        exclude: Option<&Endpoint>,
        wait: Duration,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        let key = self.affinity.as_ref().and_then(|a| a.key(headers));
        self.pick_for(key, protocol, exclude, wait).await
    }

    async fn pick_for(
        &self,
        key: Option<&[u8]>,
        protocol: Protocol,
        exclude: Option<&Endpoint>,
        wait: Duration,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rng = fastrand::Rng::new();
        loop {
            let changed = self.service.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let err = match self.pick_now(key, protocol, exclude, &mut rng) {
                Ok(ep) => return Ok(ep),
                Err(e) => e,
            };
            if !self.worth_waiting(exclude) {
                return Err(err);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self
                    .pick_now(key, protocol, exclude, &mut rng)
                    .err()
                    .unwrap_or(err));
            }
        }
    }

    fn pick_now(
        &self,
        key: Option<&[u8]>,
        protocol: Protocol,
        exclude: Option<&Endpoint>,
        rng: &mut fastrand::Rng,
    ) -> Result<Arc<Endpoint>, NoEndpoint> {
        let endpoints = self.endpoints.load();
        let cx = PickContext {
            kind: self.config.balancer,
            now_us: now_us(),
            protocol,
            exclude,
            outlier: &self.outlier,
            slow_start_us: self.config.slow_start.map(us),
            next: &self.next,
        };
        // A key whose pods are all ejected is balanced as usual, which
        // knows when to use an ejected endpoint.
        if let (Some(key), Some(affinity)) = (key, &self.affinity)
            && let Some(ep) = affinity.place(key, self.in_flight(), |ep| usable(&cx, ep, false))
        {
            return Ok(ep);
        }
        let locality = self.locality.load();
        if !locality.local.is_empty() {
            if keep_local(&locality.local, &locality.remote, &cx, rng)
                && let Some(ep) = pick(&locality.local, &cx, rng)
            {
                self.counters.zone_local.inc();
                return Ok(ep);
            }
            let spilled = pick(&endpoints, &cx, rng).ok_or_else(|| self.why_none(&endpoints));
            if spilled.is_ok() {
                self.counters.zone_spilled.inc();
            }
            return spilled;
        }
        pick(&endpoints, &cx, rng).ok_or_else(|| self.why_none(&endpoints))
    }

    /// This pod's zone, when calls are kept in it.
    pub(crate) fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Whether this pod knows its zone or node, so that endpoints may be local.
    pub(crate) fn has_locality(&self) -> bool {
        self.zone.is_some() || self.node.is_some()
    }

    /// The zone discovery gives endpoint `addr`, and whether it is local.
    pub(crate) fn placement(&self, addr: SocketAddr) -> (Option<String>, bool) {
        let zone = self
            .placements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .and_then(|p| p.zone.clone());
        let local = self.locality.load().local.iter().any(|ep| ep.addr == addr);
        (zone, local)
    }

    /// A completed exchange with `ep` that was not a failure.
    pub(crate) fn record_success(&self, ep: &Endpoint) {
        self.outlier.on_success(ep);
    }

    /// A connection error or an UNAVAILABLE/INTERNAL answer from `ep`.
    pub(crate) fn record_failure(&self, ep: &Endpoint) {
        ep.count_failure();
        self.outlier.on_failure(ep, now_us());
    }

    /// How long a request took until its response head.
    pub(crate) fn observe_duration(&self, elapsed: Duration) {
        self.counters.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request the proxy answered itself (`endpoint` empty when
    /// none was reached).
    pub(crate) fn count_local(&self, endpoint: &str, grpc_status: Option<u16>, http_status: u16) {
        let metrics = &self.service.metrics;
        let counter = request_counter(metrics, self.name(), endpoint, grpc_status, http_status);
        counter.inc();
        let labels = RequestLabels {
            service: self.name().to_owned(),
            endpoint: endpoint.to_owned(),
            grpc_status: crate::metrics::grpc_status_label(grpc_status),
            http_status: http_status.to_string(),
        };
        self.local_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels);
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
        let source_name = self.source_name.clone();
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
            Resolution::Resolved if endpoints.iter().any(|ep| ep.is_not_serving()) => {
                let not_serving = endpoints.iter().filter(|ep| ep.is_not_serving()).count();
                NoEndpoint::NotServing {
                    service,
                    count: endpoints.len(),
                    not_serving,
                    others: if not_serving == endpoints.len() {
                        String::new()
                    } else {
                        format!(
                            " and the others are failing (last error: {})",
                            endpoints
                                .iter()
                                .filter(|ep| !ep.is_not_serving())
                                .find_map(|ep| ep.last_error())
                                .unwrap_or_else(|| "they are still connecting".into())
                        )
                    },
                }
            }
            Resolution::Resolved => NoEndpoint::AllFailing {
                service,
                count: endpoints.len(),
                subset: match self.subset.as_ref().map_or(0, |s| {
                    s.lock().unwrap_or_else(|p| p.into_inner()).outside_len()
                }) {
                    0 => String::new(),
                    n => format!(
                        " in this proxy's subset (SIDELB_SUBSET_SIZE={}; {n} more outside it)",
                        self.config.subset_size
                    ),
                },
                last_error: endpoints
                    .iter()
                    .find_map(|ep| ep.last_error())
                    .unwrap_or_else(|| "the endpoints are still connecting".into()),
            },
        }
    }

    /// Applies a discovery update. Its cost follows the update, not the
    /// service: the next snapshot is the current one (sorted by address)
    /// with the removed endpoints taken out and the new ones put in, each
    /// found by binary search; only a reset looks at every endpoint. With a
    /// subset, the update is first made one of its members.
    pub(crate) fn apply(&self, update: Update) {
        self.counters.discovery_updates.inc();
        let update = match &self.subset {
            Some(subset) => subset
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(update),
            None => update,
        };
        if self.zone.is_some() || self.node.is_some() {
            let mut placements = self.placements.lock().unwrap_or_else(|p| p.into_inner());
            match &update {
                Update::Reset(list) => {
                    *placements = list.iter().map(|m| (m.addr, Placement::of(m))).collect();
                }
                Update::Add(list) => {
                    placements.extend(list.iter().map(|m| (m.addr, Placement::of(m))));
                }
                Update::Remove(addrs) => {
                    for addr in addrs {
                        placements.remove(addr);
                    }
                }
                Update::NoService(_) => placements.clear(),
            }
        }
        let current = self.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint>> = current.as_ref().clone();
        let mut gone: Vec<Arc<Endpoint>> = Vec::new();
        let mut no_service = None;
        match update {
            Update::Reset(list) => {
                let keep: HashSet<SocketAddr> = list.iter().map(|m| m.addr).collect();
                next.retain(|ep| {
                    let kept = keep.contains(&ep.addr);
                    if !kept {
                        gone.push(ep.clone());
                    }
                    kept
                });
                self.add(&mut next, list);
            }
            Update::Add(list) => self.add(&mut next, list),
            Update::Remove(addrs) => {
                for addr in addrs {
                    if let Ok(i) = next.binary_search_by_key(&addr, |ep| ep.addr) {
                        gone.push(next.remove(i));
                    }
                }
            }
            Update::NoService(why) => {
                gone = std::mem::take(&mut next);
                no_service = Some(why);
            }
        }
        for ep in &gone {
            self.outlier.forget(ep);
            ep.mark_removed();
            if ep.in_flight() > 0 {
                self.draining
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::downgrade(ep));
            }
        }
        self.outlier.set_size(next.len());
        self.counters.subset_endpoints.set(next.len() as i64);
        tracing::info!(
            service = self.name(),
            endpoints = next.len(),
            "endpoints updated"
        );
        if let Some(affinity) = &self.affinity {
            affinity.rebuild(&next);
        }
        if self.zone.is_some() || self.node.is_some() {
            let placements = self.placements.lock().unwrap_or_else(|p| p.into_inner());
            let local = local_addrs(self.zone.as_deref(), self.node.as_deref(), &placements);
            let (local, remote) = next
                .iter()
                .cloned()
                .partition(|ep| local.binary_search(&ep.addr).is_ok());
            self.locality.store(Arc::new(Locality { local, remote }));
        }
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
        self.service.changed.notify_waiters();
    }

    /// Adds what `list` has that `endpoints` (sorted by address) lacks, and
    /// keeps it sorted; a known endpoint only takes the list's name.
    fn add(&self, endpoints: &mut Vec<Arc<Endpoint>>, list: Vec<EndpointMeta>) {
        let slow_start = self.is_resolved() && self.config.slow_start.is_some();
        let mut initial_rtt = None;
        let known = endpoints.len();
        let mut added: HashMap<SocketAddr, usize> = HashMap::new();
        for meta in list {
            let found = endpoints[..known]
                .binary_search_by_key(&meta.addr, |ep| ep.addr)
                .ok()
                .or_else(|| added.get(&meta.addr).copied());
            if let Some(i) = found {
                endpoints[i].set_name(meta.name);
                continue;
            }
            added.insert(meta.addr, endpoints.len());
            let rtt = *initial_rtt.get_or_insert_with(|| self.typical_rtt());
            let ep = Endpoint::new(
                meta.addr,
                meta.name,
                rtt,
                self.service.clone(),
                slow_start,
                now_us(),
            );
            let outlier = self.outlier.clone();
            driver::spawn(
                ep.clone(),
                self.config.clone(),
                self.connector.clone(),
                move |ep| {
                    outlier.on_failure(ep, now_us());
                },
            );
            endpoints.push(ep);
        }
        if endpoints.len() > known {
            // A sorted run and a short tail: the sort merges them in O(n).
            endpoints.sort_by_key(|ep| ep.addr);
        }
    }

    /// The mean latency estimate of ready endpoints: a fair start for a new one.
    fn typical_rtt(&self) -> f64 {
        let now = now_us();
        let eps = self.endpoints.load();
        let estimates: Vec<f64> = eps
            .iter()
            .filter(|ep| ep.is_ready())
            .map(|ep| ep.latency_estimate(now))
            .collect();
        if estimates.is_empty() {
            DEFAULT_RTT_US
        } else {
            estimates.iter().sum::<f64>() / estimates.len() as f64
        }
    }

    /// Spends one retry from the budget, if there is one left.
    pub(crate) fn withdraw_retry(&self) -> bool {
        let granted = self.budget.withdraw();
        if granted {
            self.counters.retries.inc();
        } else {
            self.counters.retries_over_budget.inc();
        }
        granted
    }

    /// Stops everything: the pool is being dropped. Its endpoints close
    /// (and remove their series as they go); the service's own series go now.
    pub(crate) fn shut(&self) {
        self.shut.store(true, Relaxed);
        for ep in self.endpoints.load().iter() {
            ep.mark_removed();
            ep.retire_series();
        }
        let metrics = &self.service.metrics;
        metrics.remove_service(self.name());
        let local =
            std::mem::take(&mut *self.local_series.lock().unwrap_or_else(|p| p.into_inner()));
        for labels in local {
            metrics.requests.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidelb_config::PortRef;

    fn pool(config: ProxyConfig) -> Arc<Pool> {
        Arc::new(Pool::new(
            ServiceKey::new("svc", "ns", PortRef::Number(80)),
            Arc::new(config),
            Arc::new(Metrics::new()),
            "test".into(),
            false,
            0,
            Connector::Plain,
        ))
    }

    fn meta(port: u16) -> EndpointMeta {
        EndpointMeta::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn ports(eps: &[Arc<Endpoint>]) -> Vec<u16> {
        eps.iter().map(|ep| ep.addr.port()).collect()
    }

    fn find(pool: &Pool, port: u16) -> Arc<Endpoint> {
        pool.endpoints()
            .iter()
            .find(|ep| ep.addr.port() == port)
            .cloned()
            .expect("endpoint")
    }

    // Drivers are spawned but never run: these tests do not yield.

    #[tokio::test]
    async fn an_endpoint_in_both_sets_keeps_its_arc() {
        let pool = pool(ProxyConfig::defaults());
        pool.apply(Update::Reset(vec![meta(1), meta(2)]));
        let kept = find(&pool, 2);
        pool.apply(Update::Reset(vec![meta(2), meta(3)]));
        assert_eq!(ports(&pool.endpoints()), [2, 3]);
        assert!(Arc::ptr_eq(&kept, &find(&pool, 2)));
        pool.apply(Update::Add(vec![meta(2), meta(4)]));
        assert!(
            Arc::ptr_eq(&kept, &find(&pool, 2)),
            "adding it again keeps it"
        );
        pool.apply(Update::Remove(vec![meta(3).addr]));
        assert_eq!(ports(&pool.endpoints()), [2, 4]);
        assert!(Arc::ptr_eq(&kept, &find(&pool, 2)));
        assert!(!kept.is_removed());
    }

    fn update() -> impl proptest::strategy::Strategy<Value = Update> {
        use proptest::prelude::*;
        let ports = || proptest::collection::vec(1u16..40, 0..12);
        prop_oneof![
            ports().prop_map(|p| Update::Reset(p.into_iter().map(meta).collect())),
            ports().prop_map(|p| Update::Add(p.into_iter().map(meta).collect())),
            ports().prop_map(|p| Update::Remove(p.into_iter().map(|p| meta(p).addr).collect())),
            Just(Update::NoService("gone".into())),
        ]
    }

    proptest::proptest! {
        /// Whatever the updates, the pool holds exactly the set they
        /// describe, sorted and without repeats, and an endpoint that stayed
        /// throughout is the same endpoint (its connection and statistics).
        #[test]
        fn the_pool_follows_any_updates_and_keeps_what_stayed(
            updates in proptest::collection::vec(update(), 1..30)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _entered = runtime.enter();
            let pool = pool(ProxyConfig::defaults());
            let mut model = std::collections::BTreeSet::new();
            for update in updates {
                let before: HashMap<u16, Arc<Endpoint>> =
                    pool.endpoints().iter().map(|ep| (ep.addr.port(), ep.clone())).collect();
                match &update {
                    Update::Reset(list) => model = list.iter().map(|m| m.addr.port()).collect(),
                    Update::Add(list) => model.extend(list.iter().map(|m| m.addr.port())),
                    Update::Remove(addrs) => {
                        for a in addrs {
                            model.remove(&a.port());
                        }
                    }
                    Update::NoService(_) => model.clear(),
                }
                pool.apply(update);
                let now = pool.endpoints();
                let got: Vec<u16> = ports(&now);
                proptest::prop_assert_eq!(&got, &model.iter().copied().collect::<Vec<_>>());
                for ep in now.iter() {
                    if let Some(old) = before.get(&ep.addr.port()) {
                        proptest::prop_assert!(Arc::ptr_eq(old, ep), "{} was replaced", ep.addr);
                    }
                }
                for (port, old) in &before {
                    proptest::prop_assert_eq!(old.is_removed(), !model.contains(port));
                }
            }
        }
    }

    #[tokio::test]
    async fn a_subset_connects_to_its_members_and_keeps_those_that_stay() {
        let metrics = Arc::new(Metrics::new());
        let mut config = ProxyConfig::defaults();
        config.subset_size = 2;
        let pool = Arc::new(Pool::new(
            ServiceKey::new("svc", "ns", PortRef::Number(80)),
            Arc::new(config),
            metrics.clone(),
            "test".into(),
            false,
            super::super::subset::client("ns/client"),
            Connector::Plain,
        ));
        pool.apply(Update::Reset((1..=5).map(meta).collect()));
        let members = pool.endpoints();
        assert_eq!(members.len(), 2, "only members get an endpoint");
        let outside: Vec<u16> = pool
            .outside_subset()
            .iter()
            .map(|m| m.addr.port())
            .collect();
        assert_eq!(outside.len(), 3);
        assert!(
            metrics
                .encode(|_| ())
                .contains("sidelb_subset_endpoints{service=\"svc.ns:80\"} 2")
        );

        pool.apply(Update::Remove(vec![meta(outside[0]).addr]));
        for (before, now) in members.iter().zip(pool.endpoints().iter()) {
            assert!(
                Arc::ptr_eq(before, now),
                "an outsider's removal changes no member"
            );
        }
        let (gone, stays) = (&members[0], &members[1]);
        pool.apply(Update::Remove(vec![gone.addr]));
        let now = pool.endpoints();
        assert_eq!(now.len(), 2);
        assert!(gone.is_removed());
        assert!(
            now.iter().any(|ep| Arc::ptr_eq(ep, stays)),
            "the other member stays"
        );
        assert_eq!(
            pool.outside_subset().len(),
            1,
            "the next one took the place"
        );
        for ep in now.iter() {
            ep.set_state(ConnState::Down, Some("connection refused".into()));
        }
        let err = pool
            .pick(Protocol::Http2, None, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("all 2 endpoints of service svc.ns:80 in this proxy's subset (SIDELB_SUBSET_SIZE=2; 1 more outside it) are failing"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_removed_endpoint_drains_its_requests_then_goes() {
        let pool = pool(ProxyConfig::defaults());
        pool.apply(Update::Reset(vec![meta(1), meta(2)]));
        let busy = find(&pool, 1);
        let request = busy.start_request();
        let idle = find(&pool, 2);
        pool.apply(Update::Reset(vec![]));
        assert!(pool.endpoints().is_empty(), "no new request goes to either");
        assert!(busy.is_removed() && idle.is_removed());
        assert_eq!(ports(&pool.draining()), [1], "only the busy one drains");
        drop(request);
        assert!(pool.draining().is_empty());
    }

    #[tokio::test]
    async fn resolution_follows_discovery() {
        let pool = pool(ProxyConfig::defaults());
        assert_eq!(pool.resolution(), Resolution::Pending);
        let err = pool.pick(Protocol::Http2, None, Duration::ZERO).await;
        assert!(
            matches!(err, Err(NoEndpoint::NotResolved { .. })),
            "{err:?}"
        );
        pool.apply(Update::Reset(vec![]));
        let err = pool.pick(Protocol::Http2, None, Duration::ZERO).await;
        assert!(matches!(err, Err(NoEndpoint::Empty { .. })), "{err:?}");
        pool.apply(Update::Reset(vec![meta(1)]));
        pool.apply(Update::NoService("no such service".into()));
        assert!(pool.endpoints().is_empty());
        assert_eq!(
            pool.resolution(),
            Resolution::NoService("no such service".into())
        );
        let err = pool.pick(Protocol::Http2, None, Duration::ZERO).await;
        assert!(matches!(err, Err(NoEndpoint::NoService(_))), "{err:?}");
    }

    #[tokio::test]
    async fn endpoints_not_ready_are_reported_with_their_last_error() {
        let pool = pool(ProxyConfig::defaults());
        pool.apply(Update::Reset(vec![meta(1), meta(2)]));
        for ep in pool.endpoints().iter() {
            ep.set_state(ConnState::Down, Some("connection refused".into()));
        }
        match pool.pick(Protocol::Http1, None, Duration::ZERO).await {
            Err(NoEndpoint::AllFailing {
                count, last_error, ..
            }) => assert_eq!((count, last_error.as_str()), (2, "connection refused")),
            other => panic!("{other:?}"),
        }
        find(&pool, 2).set_state(ConnState::Ready, None);
        let ep = pool.pick(Protocol::Http2, None, Duration::ZERO).await;
        assert_eq!(ep.unwrap().addr.port(), 2);
    }

    #[tokio::test]
    async fn when_no_endpoint_is_serving_the_error_names_the_health_checks() {
        use crate::endpoint::grpc_health::Verdict;
        let pool = pool(ProxyConfig::defaults());
        pool.apply(Update::Reset(vec![meta(1), meta(2)]));
        for ep in pool.endpoints().iter() {
            ep.set_state(ConnState::Ready, None);
            ep.set_grpc_health(Verdict::NotServing);
        }
        let err = pool.pick(Protocol::Http2, None, Duration::ZERO).await;
        let message = err.unwrap_err().to_string();
        assert!(
            message.contains("2 of its 2 endpoints answer NOT_SERVING")
                && message.contains("SIDELB_HEALTH_CHECK=grpc")
                && !message.contains("others"),
            "{message}"
        );
        find(&pool, 2).set_grpc_health(Verdict::Unknown);
        find(&pool, 2).set_state(ConnState::Down, Some("connection refused".into()));
        let message = pool
            .pick(Protocol::Http2, None, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("1 of its 2 endpoints")
                && message.contains("the others are failing (last error: connection refused)"),
            "{message}"
        );
        find(&pool, 1).set_grpc_health(Verdict::Serving);
        let ep = pool.pick(Protocol::Http2, None, Duration::ZERO).await;
        assert_eq!(ep.unwrap().addr.port(), 1);
    }

    #[tokio::test]
    async fn a_shut_pool_leaves_no_series() {
        let metrics = Arc::new(Metrics::new());
        let pool = Arc::new(Pool::new(
            ServiceKey::new("svc", "ns", PortRef::Number(80)),
            Arc::new(ProxyConfig::defaults()),
            metrics.clone(),
            "test".into(),
            false,
            0,
            Connector::Plain,
        ));
        pool.apply(Update::Reset(vec![meta(1)]));
        find(&pool, 1).count_status(Some(0), 200);
        find(&pool, 1).count_status(Some(99), 200);
        pool.count_local("", Some(14), 200);
        pool.count_local("127.0.0.1:1", None, 502);
        pool.observe_duration(Duration::from_millis(1));
        let before = metrics.encode(|_| ());
        assert!(before.contains("grpc_status=\"other\""), "{before}");
        pool.shut();
        let text = metrics.encode(|_| ());
        assert!(!text.contains("svc.ns:80"), "{text}");
    }

    #[tokio::test]
    async fn the_in_flight_limit_admits_up_to_it() {
        let mut config = ProxyConfig::defaults();
        config.max_in_flight = 2;
        let pool = pool(config);
        let first = pool.admit().unwrap();
        let _second = pool.admit().unwrap();
        let full = pool.admit().unwrap_err();
        assert_eq!((full.service.as_str(), full.limit), ("svc.ns:80", 2));
        drop(first);
        assert!(pool.admit().is_ok());
    }
}
