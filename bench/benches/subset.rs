//! The cost of the subset choice (`SIDELB_SUBSET_SIZE`, 64 of 100, 1,000
//! and 10,000 endpoints): a reset ranks every endpoint (O(n log n)); one
//! endpoint removed and added back costs two lookups and hands the 64
//! members over, whatever the service's size.

use sidelb_proxy::balancer::subset::{Subset, client};
use sidelb_proxy::discovery::{EndpointMeta, Update};
use std::net::SocketAddr;

const SIZE: usize = 64;

fn main() {
    divan::main();
}

fn endpoints(n: usize) -> Vec<EndpointMeta> {
    (0..n)
        .map(|i| EndpointMeta {
            addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 50051)),
            name: Some(format!("pod-{i}")),
            zone: None,
            for_zones: Vec::new(),
            for_nodes: Vec::new(),
        })
        .collect()
}

#[divan::bench(args = [100, 1000, 10_000])]
fn reset(bencher: divan::Bencher, n: usize) {
    let list = endpoints(n);
    let mut subset = Subset::new(SIZE, client("default/client-0"));
    bencher
        .with_inputs(|| Update::Reset(list.clone()))
        .bench_local_values(|update| divan::black_box(subset.apply(update)));
}

#[divan::bench(args = [100, 1000, 10_000])]
fn one_endpoint_removed_and_added_back(bencher: divan::Bencher, n: usize) {
    let list = endpoints(n);
    let mut subset = Subset::new(SIZE, client("default/client-0"));
    subset.apply(Update::Reset(list.clone()));
    let mut next = 0;
    bencher.bench_local(|| {
        let one = list[next % n].clone();
        next += 1;
        divan::black_box(subset.apply(Update::Remove(vec![one.addr])));
        divan::black_box(subset.apply(Update::Add(vec![one])))
    });
}
