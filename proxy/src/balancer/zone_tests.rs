use super::*;
use crate::balancer::pick::tests::{Fixture, load};
use sidelb_config::Balancer;

fn placed(zone: &str, hints: &[&str]) -> Placement {
    Placement {
        zone: Some(zone.to_owned()),
        for_zones: hints.iter().map(|z| (*z).to_owned()).collect(),
        for_nodes: Vec::new(),
    }
}

fn on_node(zone: &str, node: &str) -> Placement {
    Placement {
        for_nodes: vec![node.to_owned()],
        ..placed(zone, &[zone])
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[test]
fn without_hints_no_endpoint_is_preferred() {
    let placements = HashMap::from([(addr(1), placed("a", &[])), (addr(2), placed("b", &[]))]);
    assert!(local_addrs(Some("a"), None, &placements).is_empty());
}

#[test]
fn the_hints_for_the_zone_decide_when_every_endpoint_has_them() {
    let hinted = HashMap::from([
        (addr(1), placed("a", &["a"])),
        (addr(2), placed("b", &["a"])),
        (addr(3), placed("b", &["b"])),
    ]);
    assert_eq!(
        local_addrs(Some("a"), None, &hinted),
        [addr(1), addr(2)],
        "b's pod hinted to a"
    );
    assert!(local_addrs(Some("c"), None, &hinted).is_empty());
    let partly = HashMap::from([(addr(1), placed("a", &["a"])), (addr(2), placed("b", &[]))]);
    assert!(
        local_addrs(Some("a"), None, &partly).is_empty(),
        "hints ignored unless complete"
    );
}

#[test]
fn node_hints_come_first_and_the_zone_when_the_node_has_none() {
    let placements = HashMap::from([
        (addr(1), on_node("a", "n1")),
        (addr(2), on_node("a", "n2")),
        (addr(3), on_node("b", "n3")),
    ]);
    assert_eq!(local_addrs(Some("a"), Some("n1"), &placements), [addr(1)]);
    assert_eq!(
        local_addrs(Some("a"), Some("n9"), &placements),
        [addr(1), addr(2)],
        "no endpoint on n9: its zone's"
    );
    assert_eq!(local_addrs(None, Some("n3"), &placements), [addr(3)]);
    assert!(local_addrs(None, Some("n9"), &placements).is_empty());
}

#[test]
fn calls_stay_local_until_the_zone_is_busier_than_the_others() {
    let f = Fixture::new();
    let eps: Vec<_> = (0..4).map(|i| f.endpoint(i, 1000.0)).collect();
    let (local, remote) = (eps[..1].to_vec(), eps[1..].to_vec());
    let cx = f.cx(Balancer::P2cEwma);
    let mut rng = fastrand::Rng::with_seed(1);
    assert!(keep_local(&local, &remote, &cx, &mut rng), "idle");
    let _held = load(&eps[0], 3);
    assert!(
        keep_local(&local, &remote, &cx, &mut rng),
        "3 in flight: under the margin"
    );
    let _more = load(&eps[0], 1);
    assert!(
        !keep_local(&local, &remote, &cx, &mut rng),
        "4 in flight, others idle: spill"
    );
    let _others: Vec<_> = eps[1..].iter().flat_map(|ep| load(ep, 1)).collect();
    assert!(
        keep_local(&local, &remote, &cx, &mut rng),
        "the others busy too: local again"
    );
}

#[test]
fn a_zone_with_half_its_endpoints_out_spills() {
    let f = Fixture::new();
    let eps: Vec<_> = (0..4).map(|i| f.endpoint(i, 1000.0)).collect();
    let (local, remote) = (eps[..3].to_vec(), eps[3..].to_vec());
    let cx = f.cx(Balancer::P2cEwma);
    let mut rng = fastrand::Rng::with_seed(1);
    f.eject(&eps[0]);
    assert!(
        keep_local(&local, &remote, &cx, &mut rng),
        "two of three usable"
    );
    f.eject(&eps[1]);
    assert!(
        !keep_local(&local, &remote, &cx, &mut rng),
        "one of three usable"
    );
}

#[test]
fn without_other_zones_calls_stay_local() {
    let f = Fixture::new();
    let eps: Vec<_> = (0..2).map(|i| f.endpoint(i, 1000.0)).collect();
    let _held: Vec<_> = eps.iter().flat_map(|ep| load(ep, 50)).collect();
    let mut rng = fastrand::Rng::with_seed(1);
    assert!(keep_local(&eps, &[], &f.cx(Balancer::P2cEwma), &mut rng));
}
