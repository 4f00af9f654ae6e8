//! One endpoint of a service: its connections, its load and latency, its
//! health.
//!
//! An endpoint lives from the discovery update that adds it until it has
//! been removed *and* its last in-flight stream has finished; meanwhile a
//! driver task keeps its connection open (see [`driver`]).

pub(crate) mod backoff;
pub(crate) mod conns;
pub(crate) mod driver;
pub(crate) mod ewma;
pub(crate) mod grpc_health;
pub(crate) mod health;
pub(crate) mod latency;
pub(crate) mod load_report;
pub(crate) mod penalty;
pub(crate) mod tls;

use crate::metrics::{
    EndpointLabels, HealthLabels, MAX_GRPC_STATUS, Metrics, RequestLabels, grpc_status_label,
};
use crate::time::now_us;
use bytes::Bytes;
use conns::{ConnSet, StreamSlot};
use ewma::LatencyEwma;
use grpc_health::{GrpcHealth, Verdict};
use health::{Health, HealthView};
use latency::{BucketCount, LatencySketch};
use load_report::{LoadReport, LoadWeight};
use penalty::RateLimitPenalty;
use prometheus_client::metrics::counter::Counter;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Connection state, as the driver last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    Connecting = 0,
    Ready = 1,
    /// Connections are refused or time out.
    Down = 2,
    /// Connections open but HTTP/2 fails on them: the endpoint can serve
    /// HTTP/1.1 requests only.
    NoHttp2 = 3,
}

impl ConnState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Ready => "ready",
            ConnState::Down => "down",
            ConnState::NoHttp2 => "no-http2",
        }
    }
}

/// What the endpoints of one service share: its name, where they count,
/// and whom they wake when their state changes.
pub struct ServiceContext {
    /// `svc.ns:port`, for messages and labels.
    pub name: Arc<str>,
    pub metrics: Arc<Metrics>,
    /// Signalled when an endpoint's state changes: a request waiting for a
    /// usable endpoint looks again.
    pub changed: Arc<Notify>,
}

pub struct Endpoint {
    pub(crate) addr: SocketAddr,
    service: Arc<ServiceContext>,
    name: Mutex<Option<String>>,
    conns: ConnSet,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    /// Requests sent and waiting for their response head, and since when
    /// that number last rose from zero: see [`Endpoint::stalled_us`].
    awaiting: AtomicUsize,
    awaiting_since_us: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    ewma: LatencyEwma,
    latency: LatencySketch,
    health: Health,
    /// With `SIDELB_HEALTH_CHECK=grpc`: what its Health service says.
    grpc_health: GrpcHealth,
    rate_limit: RateLimitPenalty,
    load: LoadWeight,
    /// When its slow start began; 0 when it takes a full share at once.
    slow_start_from_us: u64,
    removed: AtomicBool,
    driver: Mutex<Option<tokio::task::AbortHandle>>,
    metrics: EndpointMetrics,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Endpoint {
    /// A new endpoint at `now` (µs), its latency estimated at
    /// `initial_rtt_us` until it answers; with `slow_start` it takes less
    /// than a full share at first (see `balancer::pick`).
    pub fn new(
        addr: SocketAddr,
        name: Option<String>,
        initial_rtt_us: f64,
        service: Arc<ServiceContext>,
        slow_start: bool,
        now: u64,
    ) -> Arc<Self> {
        Arc::new(Endpoint {
            addr,
            name: Mutex::new(name),
            conns: ConnSet::default(),
            state: AtomicU8::new(ConnState::Connecting as u8),
            last_error: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            awaiting_since_us: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma: LatencyEwma::new(initial_rtt_us, now),
            latency: LatencySketch::default(),
            health: Health::default(),
            grpc_health: GrpcHealth::default(),
            rate_limit: RateLimitPenalty::default(),
            load: LoadWeight::default(),
            slow_start_from_us: if slow_start { now } else { 0 },
            removed: AtomicBool::new(false),
            driver: Mutex::new(None),
            metrics: EndpointMetrics::new(service.metrics.clone(), &service.name, addr),
            service,
        })
    }

    /// The service's display name, `svc.ns:port`.
    pub(crate) fn service(&self) -> &str {
        &self.service.name
    }

    /// When this endpoint's slow start began (0: it takes a full share).
    pub(crate) fn slow_start_from_us(&self) -> u64 {
        self.slow_start_from_us
    }

    pub(crate) fn name(&self) -> Option<String> {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_name(&self, name: Option<String>) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    pub(crate) fn state(&self) -> ConnState {
        match self.state.load(Relaxed) {
            1 => ConnState::Ready,
            2 => ConnState::Down,
            3 => ConnState::NoHttp2,
            _ => ConnState::Connecting,
        }
    }

    pub fn set_state(&self, state: ConnState, error: Option<String>) {
        let before = self.state.swap(state as u8, Relaxed);
        if let Some(e) = error {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        if before != state as u8 {
            self.service.changed.notify_waiters();
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.state.load(Relaxed) == ConnState::Ready as u8
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.health.is_ejected()
    }

    /// Its record of failures and ejections, which the balancer's outlier
    /// detection reads and updates.
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// What its gRPC Health service said last (always unknown with checks off).
    pub(crate) fn grpc_health(&self) -> &GrpcHealth {
        &self.grpc_health
    }

    /// Whether its Health service says it takes no new calls.
    pub(crate) fn is_not_serving(&self) -> bool {
        self.grpc_health.is_not_serving()
    }

    /// Records its Health service's verdict; a change wakes waiting
    /// requests and is counted.
    pub(crate) fn set_grpc_health(&self, verdict: Verdict) {
        if !self.grpc_health.set(verdict) {
            return;
        }
        tracing::info!(endpoint = %self.addr, service = self.service(), "health: {}", verdict.name());
        self.service
            .metrics
            .health_transitions
            .get_or_create(&HealthLabels {
                service: self.service.name.to_string(),
                health: verdict.name().to_owned(),
            })
            .inc();
        self.service.changed.notify_waiters();
    }

    pub(crate) fn health_view(&self, now: u64) -> HealthView {
        self.health.view(now)
    }

    /// The latency estimate at `now`, in µs.
    pub(crate) fn latency_estimate(&self, now: u64) -> f64 {
        self.ewma.estimate(now)
    }

    /// An answer's latency (µs), arrived at `now`.
    pub(crate) fn observe_latency(&self, rtt_us: f64, now: u64) {
        self.ewma.observe(rtt_us, now);
        self.latency.record(rtt_us as u64);
    }

    /// Its answers by latency since it appeared (see [`latency`]).
    pub(crate) fn latency_buckets(&self) -> Vec<BucketCount> {
        self.latency.buckets()
    }

    /// An answer that says the endpoint is rate limited
    /// (`RESOURCE_EXHAUSTED`, HTTP 429), at `now`: see [`penalty`].
    pub(crate) fn record_rate_limited(&self, now: u64) {
        self.rate_limit.hit(now);
        self.service
            .metrics
            .rate_limited
            .get_or_create(&self.metric_labels())
            .inc();
    }

    /// An answer's ORCA load report, arrived at `now`: see [`load_report`].
    pub(crate) fn record_load_report(&self, report: &LoadReport, now: u64) {
        self.load.record(report, now);
        self.service
            .metrics
            .load_reports
            .get_or_create(&self.metric_labels())
            .inc();
    }

    /// The weight its last ORCA report gives it, while that report stands.
    pub(crate) fn load_weight(&self, now: u64) -> Option<f64> {
        self.load.at(now)
    }

    /// The rate-limit penalty at `now` (0: none).
    pub(crate) fn rate_limit_penalty(&self, now: u64) -> f64 {
        self.rate_limit.at(now)
    }

    /// The share of calls it may take at `now` for being rate limited, 0 < share ≤ 1.
    pub(crate) fn rate_limit_share(&self, now: u64) -> f64 {
        self.rate_limit.share(now)
    }

    /// How many HTTP/2 connections it has open.
    pub(crate) fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A stream on one of its connections, waiting at most `wait` for room
    /// when every connection is full (see [`ConnSet::acquire`]).
    pub(crate) async fn open_stream(
        &self,
        wait: Duration,
    ) -> Option<(h2::client::SendRequest<Bytes>, StreamSlot)> {
        self.conns.acquire(wait).await
    }

    /// Marks the endpoint removed from discovery; it closes once idle.
    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Relaxed);
        self.close_if_drained();
    }

    /// Closes the connections of a removed endpoint with nothing in flight.
    pub(crate) fn close_if_drained(&self) {
        if self.is_removed() && self.in_flight() == 0 {
            if let Some(driver) = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take() {
                driver.abort();
            }
            self.conns.clear();
        }
    }

    pub(crate) fn set_driver(&self, handle: tokio::task::AbortHandle) {
        *self.driver.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Counts a request against this endpoint until the guard drops.
    pub(crate) fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// Marks a request sent to the endpoint as waiting for its response
    /// head, until the guard drops (the head arrived, or the request ended
    /// without one).
    pub(crate) fn await_answer(self: &Arc<Self>) -> Awaiting {
        if self.awaiting.fetch_add(1, Relaxed) == 0 {
            self.awaiting_since_us.store(now_us(), Relaxed);
        }
        Awaiting(self.clone())
    }

    /// How long the endpoint has had requests waiting for an answer without
    /// answering any: since the later of its last response head and the
    /// moment requests started waiting. 0 when none waits.
    ///
    /// A stuck endpoint (a stopped process, a black-holed network) never
    /// answers, so its latency estimate learns nothing and only decays; this
    /// is what tells it apart, and what the balancer weighs it by instead.
    pub(crate) fn stalled_us(&self, now_us: u64) -> u64 {
        if self.awaiting.load(Relaxed) == 0 {
            return 0;
        }
        let since = self
            .awaiting_since_us
            .load(Relaxed)
            .max(self.ewma.last_observed_us());
        now_us.saturating_sub(since)
    }

    /// Counts a connection error or an UNAVAILABLE/INTERNAL answer (whether
    /// it ejects the endpoint is the balancer's decision).
    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    /// Counts a connection that could not be opened.
    pub(crate) fn count_connect_failure(&self) {
        self.service
            .metrics
            .connect_failures
            .get_or_create(&self.metric_labels())
            .inc();
        self.count_failure();
    }

    /// Counts a finished request by its statuses.
    pub(crate) fn count_status(&self, grpc_status: Option<u16>, http_status: u16) {
        self.metrics.count(grpc_status, http_status);
    }

    /// Its finished requests by (gRPC status, HTTP status), with their
    /// counts, since it appeared.
    pub(crate) fn status_counts(&self) -> Vec<(Option<u16>, u16, u64)> {
        self.metrics.counts()
    }

    /// Removes the endpoint's metric series now rather than when it is
    /// dropped: its service is dropped, and nothing is in flight.
    pub(crate) fn retire_series(&self) {
        self.metrics.retire();
    }

    pub(crate) fn metric_labels(&self) -> EndpointLabels {
        EndpointLabels {
            service: self.service.name.to_string(),
            endpoint: self.addr.to_string(),
        }
    }
}

/// An in-flight request on an endpoint.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.0.close_if_drained();
        }
    }
}

/// A request waiting for its response head, see [`Endpoint::await_answer`].
#[derive(Debug)]
pub(crate) struct Awaiting(Arc<Endpoint>);

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.awaiting.fetch_sub(1, Relaxed);
    }
}

/// Per-endpoint request counters by status, resolved once each; their
/// series (and the endpoint's other series) go when the endpoint does.
struct EndpointMetrics {
    metrics: Arc<Metrics>,
    service: String,
    endpoint: String,
    /// `None` once retired: nothing is counted or removed any more.
    by_status: Mutex<Option<Vec<StatusCounter>>>,
}

/// A counter by (gRPC status or [`NO_GRPC`], HTTP status).
type StatusCounter = ((u16, u16), Counter);

const NO_GRPC: u16 = u16::MAX;
/// Every status over gRPC's last is counted as one.
const OTHER_GRPC: u16 = MAX_GRPC_STATUS + 1;

impl EndpointMetrics {
    fn new(metrics: Arc<Metrics>, service: &str, addr: SocketAddr) -> Self {
        EndpointMetrics {
            metrics,
            service: service.to_owned(),
            endpoint: addr.to_string(),
            by_status: Mutex::new(Some(Vec::new())),
        }
    }

    fn count(&self, grpc_status: Option<u16>, http_status: u16) {
        let grpc_status = grpc_status.map(|s| s.min(OTHER_GRPC));
        let key = (grpc_status.unwrap_or(NO_GRPC), http_status);
        let mut cache = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cache) = cache.as_mut() else {
            return;
        };
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            c.inc();
            return;
        }
        let counter = request_counter(
            &self.metrics,
            &self.service,
            &self.endpoint,
            grpc_status,
            http_status,
        );
        counter.inc();
        cache.push((key, counter));
    }

    fn counts(&self) -> Vec<(Option<u16>, u16, u64)> {
        let cache = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .flatten()
            .map(|((grpc, http), c)| ((*grpc != NO_GRPC).then_some(*grpc), *http, c.get()))
            .collect()
    }

    /// Removes every series of the endpoint, once.
    fn retire(&self) {
        let Some(cache) = self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        for ((grpc, http), _) in cache {
            self.metrics.requests.remove(&RequestLabels {
                service: self.service.clone(),
                endpoint: self.endpoint.clone(),
                grpc_status: grpc_status_label((grpc != NO_GRPC).then_some(grpc)),
                http_status: http.to_string(),
            });
        }
        self.metrics.remove_endpoint(&EndpointLabels {
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
        });
    }
}

impl Drop for EndpointMetrics {
    fn drop(&mut self) {
        self.retire();
    }
}

/// The request counter for one label set.
pub(crate) fn request_counter(
    metrics: &Metrics,
    service: &str,
    endpoint: &str,
    grpc_status: Option<u16>,
    http_status: u16,
) -> Counter {
    metrics
        .requests
        .get_or_create(&RequestLabels {
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
            grpc_status: grpc_status_label(grpc_status),
            http_status: http_status.to_string(),
        })
        .clone()
}
