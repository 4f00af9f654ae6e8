//! From EndpointSlices to endpoints (`discovery/kubernetes/endpoints.rs` and
//! `ports.rs`): which addresses and ports a Service port's requests may go to.
//!
//! Slices are generated with any address type, any ports (negative, zero,
//! above 65535, unnamed, other protocols), any addresses (IPv4, IPv6, names,
//! garbage, with spaces) and any conditions (each of ready, serving,
//! terminating set, unset or absent). The selection must never panic and
//! must equal a plain model of the API's rules: the union of all slices
//! whose address type is an IP family and that have the Service port's name
//! and protocol with a port in 1-65535; per endpoint, its first address if
//! it is an IP of that family; ready endpoints (unset ready counts as
//! ready), or when there are none, the serving-and-terminating ones; each
//! address once, at its best; sorted.

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use proptest::prelude::*;
use sidelb_fuzz::{config, corpus};
use sidelb_proxy::discovery::kubernetes::endpoints::select;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

const TARGET: &str = "endpoint_slices";

/// The API's rules, written out plainly.
fn model(slices: &[EndpointSlice], service: &ServicePort) -> Vec<SocketAddr> {
    let name = service.name.clone().unwrap_or_default();
    let protocol = |p: &Option<String>| {
        p.clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "TCP".into())
    };
    let mut best: BTreeMap<SocketAddr, u8> = BTreeMap::new();
    for slice in slices {
        let v4 = match slice.address_type.as_str() {
            "IPv4" => true,
            "IPv6" => false,
            _ => continue,
        };
        let port = slice
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|p| {
                p.name.clone().unwrap_or_default() == name
                    && protocol(&p.protocol) == protocol(&service.protocol)
            })
            .and_then(|p| p.port)
            .filter(|p| (1..=65535).contains(p));
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            let c = endpoint.conditions.clone().unwrap_or_default();
            let class = if c.ready.unwrap_or(true) {
                2
            } else if c.serving.unwrap_or(true) && c.terminating.unwrap_or(false) {
                1
            } else {
                continue;
            };
            let Some(Ok(ip)) = endpoint
                .addresses
                .first()
                .map(|a| a.trim().parse::<IpAddr>())
            else {
                continue;
            };
            if ip.is_ipv4() != v4 {
                continue;
            }
            let addr = SocketAddr::new(ip, port as u16);
            let seen = best.entry(addr).or_insert(class);
            *seen = (*seen).max(class);
        }
    }
    let wanted = if best.values().any(|c| *c == 2) { 2 } else { 1 };
    best.into_iter()
        .filter(|(_, c)| *c == wanted)
        .map(|(a, _)| a)
        .collect()
}

fn check(slices: &[EndpointSlice], service: &ServicePort) {
    let selected: Vec<SocketAddr> = select(slices, service).iter().map(|e| e.addr).collect();
    assert_eq!(selected, model(slices, service), "{slices:?}");
}

#[test]
fn corpus_replays() {
    for (name, bytes) in corpus(TARGET) {
        let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let service: ServicePort =
            serde_json::from_value(doc["servicePort"].clone()).expect("servicePort");
        let slices: Vec<EndpointSlice> =
            serde_json::from_value(doc["slices"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&slices, &service);
        if let Some(expected) = doc.get("expect") {
            let got: Vec<String> = select(&slices, &service)
                .iter()
                .map(|e| e.addr.to_string())
                .collect();
            let expected: Vec<String> = serde_json::from_value(expected.clone()).expect("expect");
            assert_eq!(got, expected, "{name}");
        }
    }
}

fn maybe_bool() -> impl Strategy<Value = Option<bool>> {
    proptest::option::of(any::<bool>())
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|ip| IpAddr::from(ip).to_string()),
        any::<[u16; 8]>().prop_map(|ip| IpAddr::from(ip).to_string()),
        Just("127.0.0.1".to_owned()),
        Just(" 10.0.0.1 ".to_owned()),
        Just("10.0.0.1:80".to_owned()),
        Just("pod.example.com".to_owned()),
        Just("".to_owned()),
        ".{0,12}",
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        proptest::collection::vec(address(), 0..3),
        proptest::option::of((maybe_bool(), maybe_bool(), maybe_bool())),
    )
        .prop_map(|(addresses, conditions)| Endpoint {
            addresses,
            conditions: conditions.map(|(ready, serving, terminating)| EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            ..Endpoint::default()
        })
}

fn port_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(Some("grpc".to_owned())),
        Just(Some(String::new())),
        Just(Some("metrics".to_owned())),
        Just(None),
    ]
}

fn protocol() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("TCP".to_owned())),
        Just(Some("UDP".to_owned())),
        Just(Some(String::new())),
    ]
}

fn slice() -> impl Strategy<Value = EndpointSlice> {
    let port = prop_oneof![
        Just(None),
        (1i32..70000).prop_map(Some),
        any::<i32>().prop_map(Some)
    ];
    (
        prop_oneof![Just("IPv4"), Just("IPv6"), Just("FQDN"), Just("IPv5")],
        proptest::option::of(proptest::collection::vec(
            (port_name(), port, protocol()),
            0..3,
        )),
        proptest::collection::vec(endpoint(), 0..5),
    )
        .prop_map(|(address_type, ports, endpoints)| EndpointSlice {
            address_type: address_type.to_owned(),
            ports: ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name,
                        port,
                        protocol,
                        ..EndpointPort::default()
                    })
                    .collect()
            }),
            endpoints,
            ..EndpointSlice::default()
        })
}

proptest! {
    #![proptest_config(config(TARGET, 1000))]

    #[test]
    fn the_selection_follows_the_api_rules(
        slices in proptest::collection::vec(slice(), 0..4),
        named in any::<bool>(),
        protocol in protocol(),
    ) {
        let service = ServicePort {
            name: named.then(|| "grpc".to_owned()),
            port: 50051,
            protocol,
            ..ServicePort::default()
        };
        check(&slices, &service);
    }
}
