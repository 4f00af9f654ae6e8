//! The cost of choosing an endpoint, with 3, 100 and 1000 endpoints: it
//! must stay flat (two random samples, never a scan of the list).

use sidelb_config::{Balancer, ProxyConfig};
use sidelb_proxy::balancer::outlier::Outlier;
use sidelb_proxy::balancer::pick::{PickContext, Protocol, pick};
use sidelb_proxy::endpoint::{ConnState, Endpoint, ServiceContext};
use sidelb_proxy::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

fn main() {
    divan::main();
}

fn endpoints(n: usize, metrics: &Arc<Metrics>) -> Vec<Arc<Endpoint>> {
    let service = Arc::new(ServiceContext {
        name: "bench.default:50051".into(),
        metrics: metrics.clone(),
        changed: Default::default(),
    });
    let now = sidelb_proxy::time::now_us();
    (0..n)
        .map(|i| {
            let addr =
                std::net::SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 50051));
            let ep = Endpoint::new(addr, None, 1000.0 + i as f64, service.clone(), false, now);
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
    let metrics = Arc::new(Metrics::new());
    let eps = endpoints(n, &metrics);
    let outlier = Outlier::new(&ProxyConfig::defaults(), metrics, Default::default());
    let next = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let cx = PickContext {
            kind,
            now_us: sidelb_proxy::time::now_us(),
            protocol: Protocol::Http2,
            exclude: None,
            outlier: &outlier,
            slow_start_us: None,
            next: &next,
        };
        divan::black_box(pick(&eps, &cx, &mut fastrand::Rng::new()))
    });
}
