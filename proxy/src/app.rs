//! Wiring: discovery, balancers, listeners, admin server, and the shutdown
//! sequence (grace, then drain, then the requests still open ended with a
//! reason at the drain deadline, then exit 0).

use crate::admin::{self, Admin};
use crate::balancer::Balancers;
use crate::discovery::Discover;
use crate::discovery::file::{FileDiscovery, FileError};
use crate::discovery::kubernetes::{KubernetesDiscovery, KubernetesError};
use crate::drain::{DEADLINE_FLUSH, DrainController, Drained};
use crate::endpoint::tls::{CaError, TlsServices};
use crate::forward::h1::H1Client;
use crate::listener::{self, Shared};
use crate::logging::LogFilter;
use crate::metrics::Metrics;
use crate::router::{AuthorityRouter, Route};
use sidelb_config::{Discovery, ProxyConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
    Bind {
        addr: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Discovery(String),
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    #[error(transparent)]
    BackendTls(#[from] CaError),
}

/// The listeners of `addr`: see [`listener::bind`] for what one address
/// stands for.
fn bind(addr: SocketAddr, what: &str) -> Result<Vec<TcpListener>, StartError> {
    listener::bind::bind(addr).map_err(|e| StartError::Bind {
        addr: e.addr,
        what: what.to_owned(),
        source: e.source,
    })
}

/// Everything the running proxy holds; dropping it stops nothing by itself.
pub struct Running {
    drain: DrainController,
    draining: Arc<AtomicBool>,
    config: Arc<ProxyConfig>,
}

/// How long the start waits to learn the zone from the pod's Node.
const ZONE_LOOKUP: Duration = Duration::from_secs(5);

/// Starts every part, `log` being the process's log filter; returns once
/// all listeners are bound.
pub async fn start(mut config: ProxyConfig, log: LogFilter) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let tls = TlsServices::from_config(&config)?;
    let discover: Arc<dyn Discover> = match &config.discovery {
        Discovery::File(path) => {
            let file = FileDiscovery::load(path, &config.pod_namespace)?;
            file.spawn_watch();
            Arc::new(file)
        }
        Discovery::Kubernetes => {
            let kubernetes = KubernetesDiscovery::connect().await?;
            if config.zone.is_empty() && !config.node_name.is_empty() {
                match kubernetes.node_zone(&config.node_name, ZONE_LOOKUP).await {
                    Ok(zone) => {
                        tracing::info!(zone = %zone, node = %config.node_name, "zone from the pod's node");
                        config.zone = zone;
                    }
                    Err(why) => tracing::warn!(
                        node = %config.node_name,
                        "zone unknown, calls are balanced over every zone: {why} (set SIDELB_ZONE to name it)"
                    ),
                }
            }
            Arc::new(kubernetes)
        }
    };
    if !config.zone.is_empty() {
        tracing::info!(zone = %config.zone, "calls kept in this zone while its endpoints can take them");
    }
    let config = Arc::new(config);
    let balancers = Balancers::new(discover, config.clone(), metrics.clone(), tls);
    balancers.keep_listed(config.upstreams.iter().map(|u| u.service.clone()).collect());
    let drain = DrainController::new();
    let shared = Shared {
        config: config.clone(),
        metrics: metrics.clone(),
        h1: Arc::new(H1Client::new(&config)),
    };

    let by_authority = Route::ByAuthority(Arc::new(AuthorityRouter {
        balancers: balancers.clone(),
        namespace: config.pod_namespace.clone(),
        cluster_domain: config.cluster_domain.clone(),
        listen: config.outbound_addr,
    }));
    let mut listeners: Vec<(TcpListener, Route)> =
        bind(config.outbound_addr, "SIDELB_OUTBOUND_ADDR")?
            .into_iter()
            .map(|l| (l, by_authority.clone()))
            .collect();
    for upstream in &config.upstreams {
        let what = format!("upstream {}", upstream.service);
        let route = Route::Fixed(balancers.pin(&upstream.service));
        for listener in bind(upstream.listen, &what)? {
            listeners.push((listener, route.clone()));
        }
    }
    let admin_listeners = bind(config.admin_addr, "SIDELB_ADMIN_ADDR")?;

    let draining = Arc::new(AtomicBool::new(false));
    let ready = {
        let balancers = balancers.clone();
        let draining = draining.clone();
        move || {
            if draining.load(Relaxed) {
                return Err("shutting down".to_string());
            }
            balancers.ready()
        }
    };
    let admin = Arc::new(Admin {
        balancers: balancers.clone(),
        metrics: metrics.clone(),
        balancer_name: config.balancer.name(),
        ready: Box::new(ready),
        pod_name: config.pod_name.clone(),
        pod_namespace: config.pod_namespace.clone(),
        header_read_timeout: config.header_read_timeout,
        log,
    });
    for listener in &admin_listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("admin listening on {addr}");
        }
    }
    tokio::spawn(admin::serve(admin_listeners, admin));
    for (listener, route) in listeners {
        let addr = listener.local_addr().ok();
        let what = match &route {
            Route::Fixed(pool) => pool.name().to_owned(),
            Route::ByAuthority(_) => "by authority".to_owned(),
        };
        tracing::info!(
            "listening on {} ({what})",
            addr.map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(listener::serve(
            listener,
            route,
            shared.clone(),
            drain.watch(),
        ));
    }
    tokio::spawn(balancers.clone().run_idle_sweeper());
    tracing::info!(
        admin = %config.admin_addr,
        balancer = config.balancer.name(),
        discovery = %config.discovery,
        "sidelb-proxy {} started",
        env!("CARGO_PKG_VERSION")
    );
    Ok(Running {
        drain,
        draining,
        config,
    })
}

impl Running {
    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        self.shutdown().await;
    }

    /// Keeps serving for the grace period, then drains (bounded).
    pub async fn shutdown(self) {
        let grace = self.config.shutdown_grace;
        if !grace.is_zero() {
            tracing::info!("shutting down: still serving for {grace:?} (SIDELB_SHUTDOWN_GRACE)");
            tokio::time::sleep(grace).await;
        }
        self.draining.store(true, Relaxed);
        let timeout = self.config.drain_timeout;
        tracing::info!(
            "draining: no new connections, waiting up to {timeout:?} for in-flight requests"
        );
        match self.drain.drain(timeout).await {
            Drained::InTime => tracing::info!("drained; exiting"),
            Drained::AtDeadline => tracing::warn!(
                "drain timeout of {timeout:?} (SIDELB_DRAIN_TIMEOUT) reached with requests \
                 still in flight: answered them UNAVAILABLE (HTTP 503) with the reason; exiting"
            ),
            Drained::Cut => tracing::warn!(
                "drain timeout of {timeout:?} (SIDELB_DRAIN_TIMEOUT) reached with requests \
                 still in flight, and some connections took their answers for longer than \
                 {DEADLINE_FLUSH:?}; exiting"
            ),
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("received SIGTERM"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
