//! Which pods of a Service get requests: all its EndpointSlices merged, then
//! the endpoints the API says are ready.
//!
//! A Service's endpoints are spread over any number of slices (up to 100
//! endpoints each, one per address family, one per distinct set of resolved
//! target ports), so the set is always the union of them all; an address seen
//! in two slices (the controller moving it between them) counts once.
//!
//! Readiness follows the EndpointSlice API: `ready` (nil means ready) is the
//! normal signal. Endpoints that are `serving && terminating` — pods shutting
//! down but still answering — are used only when no endpoint is ready, so a
//! Service whose pods are all rolling over keeps working rather than failing
//! every request (what kube-proxy does since ProxyTerminatingEndpoints). Not
//! serving endpoints are never used. FQDN slices are skipped: sidelb dials
//! IP addresses.

use super::ports::slice_port;
use crate::discovery::EndpointMeta;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// What an endpoint's conditions allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Usable {
    /// Not to be used.
    No,
    /// Only when the Service has no ready endpoint.
    TerminatingButServing,
    Ready,
}

/// How an endpoint's conditions classify it, with the API's nil defaults:
/// `ready` nil is ready, `serving` nil is serving, `terminating` nil is not.
pub(crate) fn usable(endpoint: &Endpoint) -> Usable {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Usable::Ready
    } else if serving && terminating {
        Usable::TerminatingButServing
    } else {
        Usable::No
    }
}

/// The endpoints to balance over for `service_port`, from every slice of the
/// Service: the ready ones, or if there are none, the serving terminating
/// ones. Sorted by address.
pub fn select<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    service_port: &ServicePort,
) -> Vec<EndpointMeta> {
    select_with(slices, |slice| slice_port(slice, service_port))
}

/// [`select`] for a headless Service without ports, whose pods are dialled
/// on the port the app asked for: every slice's endpoints on `port`.
pub(crate) fn select_on_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: u16,
) -> Vec<EndpointMeta> {
    select_with(slices, |_| Some(port))
}

fn select_with<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_of: impl Fn(&EndpointSlice) -> Option<u16>,
) -> Vec<EndpointMeta> {
    let mut best: BTreeMap<SocketAddr, (Usable, EndpointMeta)> = BTreeMap::new();
    for slice in slices {
        let Some(family) = AddressFamily::of(&slice.address_type) else {
            continue;
        };
        let Some(port) = port_of(slice) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let class = usable(endpoint);
            if class == Usable::No {
                continue;
            }
            let Some(ip) = family.first_address(endpoint) else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            let meta = EndpointMeta {
                addr,
                name: endpoint
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .or_else(|| endpoint.hostname.clone()),
                zone: endpoint.zone.clone(),
                for_zones: endpoint
                    .hints
                    .iter()
                    .flat_map(|h| h.for_zones.iter().flatten())
                    .map(|z| z.name.clone())
                    .collect(),
                for_nodes: endpoint
                    .hints
                    .iter()
                    .flat_map(|h| h.for_nodes.iter().flatten())
                    .map(|n| n.name.clone())
                    .collect(),
            };
            match best.get(&addr) {
                Some((seen, _)) if *seen >= class => {}
                _ => {
                    best.insert(addr, (class, meta));
                }
            }
        }
    }
    let any_ready = best.values().any(|(class, _)| *class == Usable::Ready);
    let wanted = if any_ready {
        Usable::Ready
    } else {
        Usable::TerminatingButServing
    };
    best.into_values()
        .filter(|(class, _)| *class == wanted)
        .map(|(_, meta)| meta)
        .collect()
}

#[derive(Clone, Copy)]
enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    /// The family of an EndpointSlice `addressType`; `None` for `FQDN` (or
    /// anything else a future API adds).
    fn of(address_type: &str) -> Option<Self> {
        match address_type {
            "IPv4" => Some(AddressFamily::V4),
            "IPv6" => Some(AddressFamily::V6),
            _ => None,
        }
    }

    /// The endpoint's address: the first one, the only one the API gives a
    /// meaning to, if it is an IP of this family.
    fn first_address(self, endpoint: &Endpoint) -> Option<IpAddr> {
        let ip: IpAddr = endpoint.addresses.first()?.trim().parse().ok()?;
        match (self, ip) {
            (AddressFamily::V4, IpAddr::V4(_)) | (AddressFamily::V6, IpAddr::V6(_)) => Some(ip),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};

    fn grpc() -> ServicePort {
        ServicePort {
            name: Some("grpc".into()),
            port: 50051,
            ..Default::default()
        }
    }

    fn endpoint(
        ip: &str,
        pod: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ready(ip: &str, pod: &str) -> Endpoint {
        endpoint(ip, pod, Some(true), Some(true), Some(false))
    }

    fn terminating(ip: &str, pod: &str, serving: bool) -> Endpoint {
        endpoint(ip, pod, Some(false), Some(serving), Some(true))
    }

    fn slice(address_type: &str, port: i32, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("grpc".into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn addrs(endpoints: &[EndpointMeta]) -> Vec<String> {
        endpoints.iter().map(|e| e.addr.to_string()).collect()
    }

    #[test]
    fn nil_conditions_follow_the_api_defaults() {
        let mut e = ready("10.0.0.1", "a");
        e.conditions = None;
        assert_eq!(usable(&e), Usable::Ready);
        assert_eq!(
            usable(&endpoint("10.0.0.1", "a", None, None, None)),
            Usable::Ready
        );
        assert_eq!(
            usable(&endpoint("10.0.0.1", "a", Some(false), None, Some(true))),
            Usable::TerminatingButServing
        );
        assert_eq!(
            usable(&endpoint("10.0.0.1", "a", Some(false), None, None)),
            Usable::No
        );
        assert_eq!(usable(&terminating("10.0.0.1", "a", false)), Usable::No);
    }

    #[test]
    fn merges_every_slice_with_each_slices_own_target_port() {
        let slices = [
            slice(
                "IPv4",
                8080,
                vec![ready("10.0.0.1", "a"), ready("10.0.0.2", "b")],
            ),
            // Another slice, pods whose named target port resolved to 9000.
            slice("IPv4", 9000, vec![ready("10.0.0.3", "c")]),
            slice("IPv6", 8080, vec![ready("fd00::1", "d")]),
        ];
        let selected = select(&slices, &grpc());
        assert_eq!(
            addrs(&selected),
            [
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.3:9000",
                "[fd00::1]:8080"
            ]
        );
        assert_eq!(selected[0].name.as_deref(), Some("a"));
    }

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let slices = [slice(
            "IPv4",
            8080,
            vec![
                ready("10.0.0.1", "a"),
                terminating("10.0.0.2", "b", true),
                endpoint("10.0.0.3", "c", Some(false), Some(false), Some(false)),
            ],
        )];
        assert_eq!(addrs(&select(&slices, &grpc())), ["10.0.0.1:8080"]);
    }

    #[test]
    fn serving_terminating_endpoints_are_used_when_none_is_ready() {
        let slices = [
            slice("IPv4", 8080, vec![terminating("10.0.0.1", "a", true)]),
            slice(
                "IPv4",
                8080,
                vec![
                    terminating("10.0.0.2", "b", false),
                    terminating("10.0.0.3", "c", true),
                ],
            ),
        ];
        assert_eq!(
            addrs(&select(&slices, &grpc())),
            ["10.0.0.1:8080", "10.0.0.3:8080"]
        );
    }

    #[test]
    fn an_address_in_two_slices_counts_once_at_its_best() {
        let slices = [
            slice("IPv4", 8080, vec![terminating("10.0.0.1", "a", true)]),
            slice("IPv4", 8080, vec![ready("10.0.0.1", "a")]),
        ];
        assert_eq!(addrs(&select(&slices, &grpc())), ["10.0.0.1:8080"]);
    }

    #[test]
    fn skips_fqdn_slices_wrong_families_bad_addresses_and_slices_without_the_port() {
        let mut other_port = slice("IPv4", 8080, vec![ready("10.0.0.9", "z")]);
        if let Some(ports) = other_port.ports.as_mut() {
            ports[0].name = Some("metrics".into());
        }
        let slices = [
            slice("FQDN", 8080, vec![ready("pod.example.com", "f")]),
            slice(
                "IPv4",
                8080,
                vec![ready("fd00::1", "v6-in-v4"), ready("not-an-ip", "x")],
            ),
            slice("IPv4", 8080, vec![Endpoint::default()]),
            other_port,
            slice("IPv4", 8080, vec![ready("10.0.0.1", "a")]),
        ];
        assert_eq!(addrs(&select(&slices, &grpc())), ["10.0.0.1:8080"]);
    }

    #[test]
    fn no_slices_no_endpoints() {
        assert!(select(std::iter::empty(), &grpc()).is_empty());
    }

    #[test]
    fn a_headless_service_without_ports_is_dialled_on_the_port_asked_for() {
        let mut portless = slice("IPv4", 0, vec![ready("10.0.0.1", "a")]);
        portless.ports = None;
        let unready = endpoint("10.0.0.2", "b", Some(false), None, None);
        let mut empty = slice("IPv4", 0, vec![unready]);
        empty.ports = Some(Vec::new());
        let slices = [portless, empty];
        assert_eq!(addrs(&select_on_port(&slices, 7000)), ["10.0.0.1:7000"]);
        assert!(select(&slices, &grpc()).is_empty(), "no port to map");
    }
}
