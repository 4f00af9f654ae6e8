//! From the port an app asks for to the port each pod listens on.
//!
//! An app names a *Service* port (`greeter.default:50051` or `:grpc`), but the
//! proxy connects to pods, which listen on the Service port's `targetPort` —
//! often a different number, sometimes a container port *name* that each pod
//! resolves on its own. The Service alone cannot say which number a pod
//! uses; the EndpointSlice controller has already resolved it per pod and
//! writes it into each slice's ports, under the Service port's **name**
//! (empty for a Service's single unnamed port). So the mapping is two steps:
//! the requested port → the Service's port entry (by number or by name), then
//! that entry's name (and protocol) → each slice's port number.

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sidelb_config::PortRef;

/// The Service port entry `wanted` refers to, or why there is none (naming the
/// port asked for and the ports the Service has).
pub(crate) fn service_port<'a>(
    service: &'a Service,
    display_name: &str,
    wanted: &PortRef,
) -> Result<&'a ServicePort, String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let found = ports.iter().find(|p| match wanted {
        PortRef::Number(n) => p.port == i32::from(*n),
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    found.ok_or_else(|| {
        let asked = match wanted {
            PortRef::Number(n) => format!("port {n}"),
            PortRef::Name(name) => format!("port named `{name}`"),
        };
        format!(
            "service {display_name} has no {asked}; its ports are {}; use one of them in SIDELB_UPSTREAMS or in the address the app dials",
            describe_ports(ports)
        )
    })
}

/// Whether `service` is headless (`clusterIP: None`) and lists no ports: its
/// pods are dialled on whatever port the app asks for, as its DNS name is.
pub(crate) fn headless_without_ports(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.cluster_ip.as_deref() == Some("None")
            && spec.ports.as_deref().unwrap_or_default().is_empty()
    })
}

/// `50051 (grpc → 8080/TCP), 9090 (metrics)`: a Service's ports for messages.
pub(crate) fn describe_ports(ports: &[ServicePort]) -> String {
    if ports.is_empty() {
        return "none".to_owned();
    }
    let described: Vec<String> = ports
        .iter()
        .map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty());
            let target = match &p.target_port {
                Some(IntOrString::Int(t)) if *t != p.port => Some(t.to_string()),
                Some(IntOrString::String(t)) => Some(t.clone()),
                _ => None,
            };
            let protocol = protocol(p.protocol.as_deref());
            let mut detail: Vec<String> = name.map(str::to_owned).into_iter().collect();
            if let Some(target) = target {
                detail.push(format!("→ {target}"));
            }
            if protocol != "TCP" {
                detail.push(protocol.to_owned());
            }
            if detail.is_empty() {
                p.port.to_string()
            } else {
                format!("{} ({})", p.port, detail.join(" "))
            }
        })
        .collect();
    described.join(", ")
}

/// The port the endpoints of `slice` listen on for `service_port`: the
/// slice's port with the same name and protocol. `None` when the slice has
/// no such port (or a port without a number, which means "all ports" and
/// gives nothing to dial).
pub(crate) fn slice_port(slice: &EndpointSlice, service_port: &ServicePort) -> Option<u16> {
    let name = service_port.name.as_deref().unwrap_or_default();
    let wanted_protocol = protocol(service_port.protocol.as_deref());
    slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p: &&EndpointPort| {
            p.name.as_deref().unwrap_or_default() == name
                && protocol(p.protocol.as_deref()) == wanted_protocol
        })
        .and_then(|p| p.port)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

/// A port's protocol; the API's default is TCP.
fn protocol(p: Option<&str>) -> &str {
    p.filter(|p| !p.is_empty()).unwrap_or("TCP")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sport(name: Option<&str>, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn slice(ports: Vec<(Option<&str>, Option<i32>, &str)>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: name.map(str::to_owned),
                        port,
                        protocol: Some(protocol.into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_service_port_by_number_or_name() {
        let svc = service(vec![
            sport(Some("grpc"), 50051, Some(IntOrString::Int(8080))),
            sport(Some("metrics"), 9090, None),
        ]);
        let by_number = service_port(&svc, "greeter.default", &PortRef::Number(50051));
        assert_eq!(by_number.map(|p| p.name.clone()), Ok(Some("grpc".into())));
        let by_name = service_port(&svc, "greeter.default", &PortRef::Name("metrics".into()));
        assert_eq!(by_name.map(|p| p.port), Ok(9090));
    }

    #[test]
    fn a_missing_port_names_the_port_and_the_ports_there_are() {
        let svc = service(vec![
            sport(Some("grpc"), 50051, Some(IntOrString::Int(8080))),
            sport(Some("http"), 80, Some(IntOrString::String("web".into()))),
            sport(Some("metrics"), 9090, Some(IntOrString::Int(9090))),
        ]);
        let err = service_port(&svc, "greeter.default", &PortRef::Number(50052)).unwrap_err();
        assert!(
            err.contains("service greeter.default has no port 50052"),
            "{err}"
        );
        assert!(
            err.contains("50051 (grpc → 8080), 80 (http → web), 9090 (metrics)"),
            "{err}"
        );
        let err = service_port(&svc, "greeter.default", &PortRef::Name("grcp".into())).unwrap_err();
        assert!(err.contains("no port named `grcp`"), "{err}");
        let err = service_port(&service(vec![]), "x.y", &PortRef::Number(1)).unwrap_err();
        assert!(err.contains("its ports are none"), "{err}");
    }

    #[test]
    fn slice_ports_are_matched_by_the_service_port_name() {
        let grpc = sport(
            Some("grpc"),
            50051,
            Some(IntOrString::String("grpc-port".into())),
        );
        let s = slice(vec![
            (Some("metrics"), Some(9090), "TCP"),
            (Some("grpc"), Some(8080), "TCP"),
        ]);
        assert_eq!(slice_port(&s, &grpc), Some(8080));
        // Same name, other protocol: not the port.
        assert_eq!(
            slice_port(&slice(vec![(Some("grpc"), Some(8080), "UDP")]), &grpc),
            None
        );
        // No number means "all ports": nothing to dial.
        assert_eq!(
            slice_port(&slice(vec![(Some("grpc"), None, "TCP")]), &grpc),
            None
        );
        assert_eq!(slice_port(&slice(vec![]), &grpc), None);
    }

    #[test]
    fn only_a_headless_service_without_ports_takes_any_port() {
        let mut headless = service(vec![]);
        if let Some(spec) = headless.spec.as_mut() {
            spec.cluster_ip = Some("None".into());
        }
        assert!(headless_without_ports(&headless));
        let mut with_ports = headless.clone();
        if let Some(spec) = with_ports.spec.as_mut() {
            spec.ports = Some(vec![sport(Some("grpc"), 50051, None)]);
        }
        assert!(!headless_without_ports(&with_ports));
        assert!(
            !headless_without_ports(&service(vec![])),
            "a ClusterIP Service"
        );
    }

    #[test]
    fn a_single_unnamed_port_matches_the_unnamed_slice_port() {
        let only = sport(None, 80, Some(IntOrString::Int(8080)));
        assert_eq!(
            slice_port(&slice(vec![(None, Some(8080), "TCP")]), &only),
            Some(8080)
        );
        assert_eq!(
            slice_port(&slice(vec![(Some(""), Some(8080), "TCP")]), &only),
            Some(8080)
        );
        assert_eq!(
            slice_port(&slice(vec![(Some("grpc"), Some(8080), "TCP")]), &only),
            None
        );
    }
}
