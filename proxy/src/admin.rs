//! The admin server: liveness, readiness, metrics and a view of every
//! service's endpoints.
//!
//! - `/live`: 200 while the process runs.
//! - `/ready`: 200 once discovery has answered for every configured
//!   upstream (and the endpoints file was read), 503 with the reason before.
//! - `/metrics`: Prometheus text.
//! - `/`: the live page (`admin/live.html`, compiled in): each service's
//!   pods, their share of requests, latency and state, redrawn from
//!   `/endpoints` every second by the page's own script. The proxy does no
//!   work for it while nobody looks: shares, rates, errors and recent
//!   percentiles are differences the page takes between two polls of
//!   cumulative counters (the latency buckets, one atomic add per answer,
//!   are the only ones kept for it).
//! - `/endpoints`: JSON, every service and the state of each endpoint.
//! - `/log-level`: `GET` the tracing filter, `PUT` a new one (the body, at
//!   most [`MAX_FILTER_BYTES`]), applied at once; a bad one is refused
//!   with the parser's reason and the old one stays.
//!
//! The injected sidecar's admin port listens on the pod IP so that the
//! kubelet can probe it, which makes it reachable by every pod in the
//! cluster. Only the paths in [`names::ADMIN_PUBLIC_PATHS`] answer
//! everyone; every other path, `/endpoints` and any control path added
//! later, answers only clients on loopback (the pod's own containers, and
//! `kubectl port-forward`), and 403 with the way in to anyone else. The
//! check is on the path before any route, so a new route is loopback-only
//! unless it is added to that list.
//!
//! Connections are bounded as for every server of sidelb's own
//! ([`sidelb_serve`]): a cap that displaces the longest-idle connection,
//! an idle timeout and the header read timeout, so held-open connections
//! neither exhaust the file descriptors the data path shares nor keep the
//! kubelet's probes out.

use crate::balancer::{Balancers, Pool, Resolution};
use crate::discovery::EndpointMeta;
use crate::endpoint::grpc_health::Verdict;
use crate::endpoint::{ConnState, Endpoint};
use crate::logging::LogFilter;
use crate::metrics::{Metrics, OTHER_GRPC_STATUS, StateLabels};
use crate::time::{now_us, us};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use sidelb_config::{HealthCheck, exposition, names};
use sidelb_serve::Connections;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Most connections open on the admin port: the kubelet's probes (a new
/// connection each), a scraper or two and a port-forward need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A connection with no request for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest log filter `PUT /log-level` takes; longer ones get 413.
pub(crate) const MAX_FILTER_BYTES: usize = 4096;

pub(crate) struct Admin {
    pub(crate) balancers: Arc<Balancers>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) balancer_name: &'static str,
    /// `Err(reason)` until the proxy is ready.
    pub(crate) ready: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// For the way to reach a loopback-only path from outside the pod.
    pub(crate) pod_name: String,
    pub(crate) pod_namespace: String,
    /// Also how long a connection may take to send a request head.
    pub(crate) header_read_timeout: Duration,
    pub(crate) log: LogFilter,
}

/// Serves every listener of the admin address, under one connection cap.
pub(crate) async fn serve(listeners: Vec<TcpListener>, admin: Arc<Admin>) {
    let connections = Connections::new(MAX_CONNECTIONS);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(admin.header_read_timeout);
    let builder = Arc::new(builder);
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(
            listener,
            connections.clone(),
            builder.clone(),
            admin.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
}

type AdminBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

async fn accept_loop(
    listener: TcpListener,
    connections: Arc<Connections>,
    builder: Arc<AdminBuilder>,
    admin: Arc<Admin>,
) {
    let admin_port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(names::ADMIN_PORT);
    loop {
        let (stream, peer) = crate::listener::accept(&listener).await;
        let admitted = match connections.admit() {
            Ok(admitted) => admitted,
            Err(busy) => {
                tracing::debug!(%peer, "admin: {busy}");
                continue;
            }
        };
        let admin = admin.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer, admin_port).await) }
            });
            let ended = sidelb_serve::serve_connection(
                &builder,
                stream,
                service,
                admitted,
                IDLE_TIMEOUT,
                std::future::pending(),
            )
            .await;
            tracing::trace!(%peer, "admin connection {ended}");
        });
    }
}

/// Whether `peer` may use `path`: the public paths answer everyone, the
/// rest only loopback clients (an IPv4-mapped IPv6 loopback included).
pub(crate) fn allowed(path: &str, peer: SocketAddr) -> bool {
    names::ADMIN_PUBLIC_PATHS.contains(&path) || sidelb_config::upstreams::is_loopback(peer.ip())
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res
}

const PLAIN: &str = "text/plain; charset=utf-8";

/// The live page, whole: its style and script inline, nothing else fetched
/// but `/endpoints`.
const LIVE_PAGE: &str = include_str!("admin/live.html");

/// Held to by the browser: the page may load nothing from anywhere, and
/// fetch only from the admin server itself.
const LIVE_PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     script-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn live_page() -> Response<Full<Bytes>> {
    let mut res = text(StatusCode::OK, LIVE_PAGE, "text/html; charset=utf-8");
    let headers = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, LIVE_PAGE_POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    res
}

impl Admin {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        admin_port: u16,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        if !allowed(&path, peer) {
            return text(
                StatusCode::FORBIDDEN,
                self.loopback_only(&path, peer.ip().to_canonical(), admin_port),
                PLAIN,
            );
        }
        match path.as_str() {
            names::LIVE_PAGE_PATH => live_page(),
            names::LIVE_PATH => text(StatusCode::OK, "live\n", PLAIN),
            names::READY_PATH => match (self.ready)() {
                Ok(()) => text(StatusCode::OK, "ready\n", PLAIN),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                    PLAIN,
                ),
            },
            names::METRICS_PATH => {
                let accept = req.headers().get(header::ACCEPT);
                let (body, content_type) = exposition::negotiate(
                    self.metrics.encode(|m| self.refresh_gauges(m)),
                    accept.and_then(|v| v.to_str().ok()),
                );
                text(StatusCode::OK, body, content_type)
            }
            names::ENDPOINTS_PATH => {
                let view = self.endpoints_view();
                let body = serde_json::to_vec_pretty(&view).unwrap_or_default();
                text(StatusCode::OK, body, "application/json")
            }
            names::LOG_LEVEL_PATH => self.log_level(req).await,
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try / (the live page), /live, /ready, /metrics, /endpoints or /log-level\n",
                PLAIN,
            ),
        }
    }

    async fn log_level(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match *req.method() {
            Method::GET => text(StatusCode::OK, format!("{}\n", self.log.current()), PLAIN),
            Method::PUT => {
                let filter = match self.read_filter(req).await {
                    Ok(filter) => filter,
                    Err(refused) => return refused,
                };
                match self.log.set(&filter) {
                    Ok(()) => {
                        let now = self.log.current();
                        tracing::info!("log filter set to `{now}` (PUT {})", names::LOG_LEVEL_PATH);
                        text(StatusCode::OK, format!("{now}\n"), PLAIN)
                    }
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n"), PLAIN),
                }
            }
            _ => {
                let mut res = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "{} takes GET (the filter) or PUT (a new filter as the body)\n",
                        names::LOG_LEVEL_PATH
                    ),
                    PLAIN,
                );
                res.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("GET, PUT"));
                res
            }
        }
    }

    /// The body of a `PUT /log-level`, or the answer refusing it.
    async fn read_filter(&self, req: Request<Incoming>) -> Result<String, Response<Full<Bytes>>> {
        let too_long = || {
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a log filter is at most {MAX_FILTER_BYTES} bytes\n"),
                PLAIN,
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_FILTER_BYTES as u64) {
            return Err(too_long());
        }
        let read = Limited::new(req.into_body(), MAX_FILTER_BYTES).collect();
        let body = match tokio::time::timeout(self.header_read_timeout, read).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(too_long());
            }
            Ok(Err(e)) => {
                let why = format!("reading the filter: {e}\n");
                return Err(text(StatusCode::BAD_REQUEST, why, PLAIN));
            }
            Err(_) => {
                let why = format!(
                    "the filter did not arrive within {:?}\n",
                    self.header_read_timeout
                );
                return Err(text(StatusCode::REQUEST_TIMEOUT, why, PLAIN));
            }
        };
        String::from_utf8(body.to_vec()).map_err(|_| {
            let why = format!(
                "the log filter is not UTF-8 text; the filter stays `{}`\n",
                self.log.current()
            );
            text(StatusCode::BAD_REQUEST, why, PLAIN)
        })
    }

    fn loopback_only(&self, path: &str, peer: std::net::IpAddr, port: u16) -> String {
        let pod = if self.pod_name.is_empty() {
            "POD".to_owned()
        } else {
            self.pod_name.clone()
        };
        format!(
            "forbidden: {path} answers only clients on loopback, and this one is {peer}.\n\
             From outside the pod: kubectl port-forward -n {ns} pod/{pod} {port}, then \
             GET http://localhost:{port}{path}\n\
             Open to every client: {public}\n",
            ns = self.pod_namespace,
            public = names::ADMIN_PUBLIC_PATHS.join(", "),
        )
    }

    fn refresh_gauges(&self, m: &Metrics) {
        for pool in self.balancers.pools() {
            pool.sweep_ejections();
            let endpoints = pool.endpoints();
            let mut counts = std::collections::BTreeMap::new();
            for ep in endpoints.iter() {
                *counts.entry(state_of(ep)).or_insert(0i64) += 1;
            }
            *counts.entry("draining").or_insert(0) += pool.draining().len() as i64;
            for state in [
                "ready",
                "connecting",
                "down",
                "no-http2",
                "ejected",
                "not-serving",
                "draining",
            ] {
                m.endpoints
                    .get_or_create(&StateLabels {
                        service: pool.name().to_owned(),
                        state: state.to_owned(),
                    })
                    .set(counts.get(state).copied().unwrap_or(0));
            }
        }
    }

    pub(crate) fn endpoints_view(&self) -> EndpointsView {
        EndpointsView {
            balancer: self.balancer_name,
            services: self
                .balancers
                .pools()
                .iter()
                .map(|p| service_view(p))
                .collect(),
        }
    }
}

fn state_of(ep: &Endpoint) -> &'static str {
    if ep.is_removed() {
        "draining"
    } else if ep.is_ejected() {
        "ejected"
    } else if ep.is_not_serving() && ep.is_ready() {
        "not-serving"
    } else {
        ep.state().name()
    }
}

#[derive(Serialize)]
pub(crate) struct EndpointsView {
    pub(crate) balancer: &'static str,
    pub(crate) services: Vec<ServiceView>,
}

#[derive(Serialize)]
pub(crate) struct ServiceView {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) port: String,
    /// `resolved`, `pending` or `no-service`.
    pub(crate) resolution: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    pub(crate) in_flight: usize,
    pub(crate) ejected: usize,
    /// `SIDELB_HASH_HEADER`, when requests carrying it are placed by its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hash_header: Option<String>,
    /// `SIDELB_BACKEND_TLS`: the name its pods' certificates must carry,
    /// when they serve TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_server_name: Option<String>,
    /// `SIDELB_SUBSET_SIZE`: most endpoints in use, `0` for all; the
    /// others are listed as `outside-subset`.
    pub(crate) subset_size: usize,
    /// `SIDELB_HEALTH_CHECK`: `off` or `grpc`.
    pub(crate) health_check: &'static str,
    /// This pod's zone, whose endpoints get its calls while they can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) zone: Option<String>,
    pub(crate) endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
pub(crate) struct EndpointView {
    pub(crate) address: String,
    pub(crate) name: Option<String>,
    /// `ready`, `connecting`, `down`, `no-http2`, `ejected`, `not-serving`
    /// (connected, its health check says NOT_SERVING), `draining`, or
    /// `outside-subset` (no connection, no requests).
    pub(crate) state: &'static str,
    pub(crate) connection: &'static str,
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) ewma_ms: f64,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    /// Finished requests by status since the endpoint appeared: a gRPC
    /// status by its name (`OK`, `UNAVAILABLE`, `other` past the last
    /// one), an answer without one as `HTTP 503`.
    pub(crate) statuses: BTreeMap<String, u64>,
    /// Answers by latency (to the response head) since the endpoint
    /// appeared, in buckets at most a quarter wide: each bucket that has
    /// any, keyed by its upper bound in µs (exclusive), and its count.
    /// Percentiles over a recent window are the difference of two reads.
    pub(crate) latency_us: BTreeMap<u64, u64>,
    pub(crate) consecutive_failures: u32,
    pub(crate) ejections: u32,
    /// Time left in the current ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ejected_for_ms: Option<u64>,
    /// Length of the current ejection (the base time, doubled per repeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ejection_ms: Option<u64>,
    /// Time left in the endpoint's slow start (`SIDELB_SLOW_START`), while
    /// it takes less than a full share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow_start_ms: Option<u64>,
    /// The rate-limit penalty, while it lowers the endpoint's share: each
    /// RESOURCE_EXHAUSTED or 429 adds one, and it fades over seconds; the
    /// share is divided by one more than it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limit_penalty: Option<f64>,
    /// With `SIDELB_HEALTH_CHECK=grpc`: `serving`, `not-serving`, `unknown`
    /// (no answer yet: used) or `unimplemented` (no Health service: used
    /// unchecked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health: Option<&'static str>,
    /// How the health is learnt: `watch`, or `polling` (`Check` every 5 s,
    /// the server having no `Watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health_via: Option<&'static str>,
    /// The weight of its last ORCA load report (rate over utilisation),
    /// while that report stands: see `endpoint::load_report`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) load_weight: Option<f64>,
    /// Its zone, and whether it is in this pod's (when the pod has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) local: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

fn service_view(pool: &Pool) -> ServiceView {
    pool.sweep_ejections();
    let endpoints = pool.endpoints();
    let (resolution, message) = match pool.resolution() {
        Resolution::Pending => ("pending", None),
        Resolution::Resolved => ("resolved", None),
        Resolution::NoService(why) => ("no-service", Some(why)),
    };
    let key = pool.key();
    let now = now_us();
    let slow_start = pool.config().slow_start.map(us);
    let draining = pool.draining();
    let checked = pool.config().health_check == HealthCheck::Grpc;
    ServiceView {
        service: pool.name().to_owned(),
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        port: key.port.to_string(),
        resolution,
        message,
        in_flight: pool.in_flight(),
        ejected: pool.ejected(),
        hash_header: pool.hash_header().map(str::to_owned),
        tls_server_name: pool.tls_server_name(),
        subset_size: pool.config().subset_size,
        health_check: pool.config().health_check.name(),
        zone: pool.zone().map(str::to_owned),
        endpoints: endpoints
            .iter()
            .chain(draining.iter())
            .map(|ep| {
                let mut view = endpoint_view(ep, now, slow_start, checked);
                if pool.has_locality() {
                    let (zone, local) = pool.placement(ep.addr);
                    view.zone = zone;
                    view.local = Some(local);
                }
                view
            })
            .chain(
                pool.outside_subset()
                    .into_iter()
                    .filter(|m| !draining.iter().any(|ep| ep.addr == m.addr))
                    .map(outside_view),
            )
            .collect(),
    }
}

/// An endpoint of the service outside this proxy's subset.
fn outside_view(meta: EndpointMeta) -> EndpointView {
    EndpointView {
        address: meta.addr.to_string(),
        name: meta.name,
        state: "outside-subset",
        connection: "none",
        connections: 0,
        in_flight: 0,
        ewma_ms: 0.0,
        requests: 0,
        failures: 0,
        statuses: BTreeMap::new(),
        latency_us: BTreeMap::new(),
        consecutive_failures: 0,
        ejections: 0,
        ejected_for_ms: None,
        ejection_ms: None,
        slow_start_ms: None,
        rate_limit_penalty: None,
        health: None,
        health_via: None,
        load_weight: None,
        zone: None,
        local: None,
        last_error: None,
    }
}

fn endpoint_view(
    ep: &Endpoint,
    now: u64,
    slow_start_us: Option<u64>,
    health_checked: bool,
) -> EndpointView {
    let grpc_health = ep.grpc_health();
    let verdict = grpc_health.verdict();
    let health = ep.health_view(now);
    let slow_start_ends = match (slow_start_us, ep.slow_start_from_us()) {
        (Some(window), from) if from != 0 => from + window,
        _ => 0,
    };
    EndpointView {
        address: ep.addr.to_string(),
        name: ep.name(),
        state: state_of(ep),
        connection: ep.state().name(),
        connections: ep.connections(),
        in_flight: ep.in_flight(),
        ewma_ms: (ep.latency_estimate(now) / 1000.0 * 1000.0).round() / 1000.0,
        requests: ep.requests(),
        failures: ep.failures(),
        statuses: statuses(ep),
        latency_us: ep
            .latency_buckets()
            .into_iter()
            .map(|b| (b.high_us, b.count))
            .collect(),
        consecutive_failures: health.consecutive_failures,
        ejections: health.ejections,
        ejected_for_ms: health.ejected_for_us.map(|us| us / 1000),
        ejection_ms: health.ejection_us.map(|us| us / 1000),
        slow_start_ms: (slow_start_ends > now).then(|| (slow_start_ends - now) / 1000),
        rate_limit_penalty: Some(ep.rate_limit_penalty(now))
            .filter(|p| *p >= 0.01)
            .map(|p| (p * 100.0).round() / 100.0),
        health: health_checked.then(|| verdict.name()),
        health_via: (health_checked && verdict != Verdict::Unimplemented).then(|| {
            if grpc_health.is_polling() {
                "polling"
            } else {
                "watch"
            }
        }),
        load_weight: ep.load_weight(now).map(|w| (w * 100.0).round() / 100.0),
        zone: None,
        local: None,
        last_error: (ep.state() != ConnState::Ready)
            .then(|| ep.last_error())
            .flatten(),
    }
}

/// gRPC's status codes by number, as `/endpoints` names them.
const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn statuses(ep: &Endpoint) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for (grpc, http, count) in ep.status_counts() {
        let name = match grpc {
            Some(code) => GRPC_STATUS_NAMES
                .get(usize::from(code))
                .map_or_else(|| OTHER_GRPC_STATUS.to_owned(), |n| (*n).to_owned()),
            None => format!("HTTP {http}"),
        };
        *by_name.entry(name).or_insert(0) += count;
    }
    by_name
}
