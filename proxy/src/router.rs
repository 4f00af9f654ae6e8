//! From a request to the service it is for.
//!
//! An upstream listener sends everything to one service. The authority
//! listener reads the `:authority` (or `Host`) and accepts the names
//! Kubernetes DNS would: `svc`, `svc.ns`, `svc.ns.svc` and
//! `svc.ns.svc.<cluster domain>`, each with the Service port.

use crate::balancer::{Balancers, Pool};
use crate::forward::error::ProxyError;
use sidelb_config::service::is_dns_label;
use sidelb_config::{PortRef, ServiceKey};
use std::sync::Arc;

/// Where a listener's requests go.
#[derive(Clone)]
pub(crate) enum Route {
    /// Every request to one service (an upstream listener).
    Fixed(Arc<Pool>),
    /// By authority, with names relative to `namespace`.
    ByAuthority(Arc<AuthorityRouter>),
}

pub(crate) struct AuthorityRouter {
    pub(crate) balancers: Arc<Balancers>,
    pub(crate) namespace: String,
    pub(crate) cluster_domain: String,
    pub(crate) listen: std::net::SocketAddr,
}

impl AuthorityRouter {
    pub(crate) fn resolve(&self, authority: &str) -> Result<Arc<Pool>, ProxyError> {
        let key = parse_authority(authority, &self.namespace, &self.cluster_domain)
            .map_err(|why| ProxyError::UnknownAuthority(format!(
                "cannot route authority `{authority}` on {}: {why}; dial `service.namespace:port` (e.g. `greeter.default:50051`) or map the service to a local port with SIDELB_UPSTREAMS",
                self.listen
            )))?;
        Ok(self.balancers.get(&key)?)
    }
}

/// Parses an authority into a service port; the error says what is wrong.
pub fn parse_authority(
    authority: &str,
    namespace: &str,
    cluster_domain: &str,
) -> Result<ServiceKey, String> {
    if authority.is_empty() {
        return Err("the request has no authority or Host".into());
    }
    let (host, port) = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(']') || h.starts_with('['))
        .ok_or("it has no port")?;
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
        return Err("it names an address, not a service".into());
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => PortRef::Number(p),
        _ => return Err(format!("`{port}` is not a port number")),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let (name, ns) = match labels.as_slice() {
        [name] => (*name, namespace),
        [name, ns] | [name, ns, "svc"] => (*name, *ns),
        [name, ns, "svc", rest @ ..] if rest.join(".") == cluster_domain => (*name, *ns),
        _ => {
            return Err(format!(
                "`{host}` is not `service[.namespace[.svc[.{cluster_domain}]]]`"
            ));
        }
    };
    if !is_dns_label(name) || !is_dns_label(ns) {
        return Err(format!("`{host}` is not a valid service name"));
    }
    Ok(ServiceKey::new(name, ns, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Result<String, String> {
        parse_authority(s, "default", "cluster.local").map(|k| k.to_string())
    }

    #[test]
    fn every_dns_form() {
        for a in [
            "greeter:50051",
            "greeter.default:50051",
            "greeter.default.svc:50051",
            "greeter.default.svc.cluster.local:50051",
            "Greeter.Default.svc.cluster.local.:50051",
        ] {
            assert_eq!(key(a).unwrap(), "greeter.default:50051", "{a}");
        }
        assert_eq!(key("orders.shop:8080").unwrap(), "orders.shop:8080");
    }

    #[test]
    fn refuses_what_is_not_a_service() {
        for (a, needle) in [
            ("greeter", "no port"),
            ("greeter:http", "not a port"),
            ("127.0.0.1:4140", "address"),
            ("[::1]:4140", "address"),
            ("localhost:4140", "address"),
            ("a.b.c:80", "is not `service"),
            ("a.b.svc.other.domain:80", "is not `service"),
            ("a_b:80", "not a valid"),
            ("", "no authority"),
        ] {
            let err = key(a).unwrap_err();
            assert!(err.contains(needle), "{a}: {err}");
        }
    }
}
