//! The cost of choosing an endpoint, with 3, 100 and 1000 endpoints: it
//! must stay flat (two random samples, never a scan of the list).

use sidelb_config::{Balancer, PortRef, ProxyConfig, ServiceKey};
use sidelb_proxy::balancer::PoolShared;
use sidelb_proxy::balancer::outlier::Outlier;
use sidelb_proxy::balancer::pick::{PickContext, pick};
use sidelb_proxy::endpoint::{ConnState, Endpoint};
use sidelb_proxy::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

fn main() {
    divan::main();
}

fn pool_shared(config: Arc<ProxyConfig>) -> Arc<PoolShared> {
    let metrics = Arc::new(Metrics::new());
    Arc::new(PoolShared {
        key: ServiceKey::new("bench", "default", PortRef::Number(50051)),
        name: "bench.default:50051".into(),
        changed: Default::default(),
        outlier: Outlier::new(&config),
        source_name: "bench".into(),
        duration: prometheus_client::metrics::histogram::Histogram::new([1.0]),
        retries: Default::default(),
        retries_over_budget: Default::default(),
        overloaded: Default::default(),
        discovery_updates: Default::default(),
        metrics,
        config,
    })
}

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    let shared = pool_shared(Arc::new(ProxyConfig::defaults()));
    (0..n)
        .map(|i| {
            let addr =
                std::net::SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 50051));
            let ep = Endpoint::new(addr, None, 1000.0 + i as f64, shared.clone(), false);
            ep.set_state(ConnState::Ready, None);
            ep
        })
        .collect()
}

#[divan::bench(args = [3, 100, 1000], consts = [0, 1, 2])]
fn pick_endpoint<const KIND: usize>(bencher: divan::Bencher, n: usize) {
    let kind = [
        Balancer::P2cEwma,
        Balancer::LeastRequest,
        Balancer::RoundRobin,
    ][KIND];
    let eps = endpoints(n);
    let outlier = Outlier::new(&ProxyConfig::defaults());
    let next = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let cx = PickContext {
            kind,
            now_us: sidelb_proxy::time::now_us(),
            exclude: None,
            outlier: &outlier,
            slow_start_us: None,
            next: &next,
            allow_ejected: false,
        };
        divan::black_box(pick(&eps, &cx))
    });
}
