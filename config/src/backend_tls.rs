//! The backend TLS list: `svc[.ns][:port][=server-name],…`, the services
//! whose pods serve gRPC over TLS.
//!
//! The same text is accepted in `SIDELB_BACKEND_TLS` and the
//! `sidelb.io/backend-tls` annotation. Without a port every port of the
//! service is meant; without a server name the certificate must be valid for
//! the Service's DNS name `svc.ns.svc` (one name, so what a certificate must
//! carry is plain; the override is for certificates issued otherwise).

use crate::service::{
    PortError, PortRef, ServiceKey, ServiceNameError, is_dns_label, service_and_namespace,
};

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTls {
    pub name: String,
    pub namespace: String,
    /// `None`: every port of the service.
    pub port: Option<PortRef>,
    /// `None`: `name.namespace.svc`.
    pub server_name: Option<String>,
}

impl BackendTls {
    /// Whether this entry covers the service port `key`.
    pub fn covers(&self, key: &ServiceKey) -> bool {
        self.name == key.name
            && self.namespace == key.namespace
            && self.port.as_ref().is_none_or(|p| *p == key.port)
    }

    /// The name the backend's certificate must be valid for.
    pub fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| format!("{}.{}.svc", self.name, self.namespace))
    }
}

/// The index of the entry of `list` that covers `key`, if any: the first
/// with that port, else the first for every port.
pub fn find(list: &[BackendTls], key: &ServiceKey) -> Option<usize> {
    list.iter()
        .position(|e| e.port.is_some() && e.covers(key))
        .or_else(|| list.iter().position(|e| e.covers(key)))
}

const FORMAT: &str = "expected `service[.namespace][:port][=server-name]`, e.g. `greeter.shop:50051=greeter.example.com`";

/// Parses a comma-separated list; `default_namespace` fills in entries that
/// name only the service. An empty text is an empty list (plaintext to all).
pub fn parse(text: &str, default_namespace: &str) -> Result<Vec<BackendTls>, BackendTlsError> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            parse_entry(entry, default_namespace).map_err(|why| BackendTlsError {
                entry: entry.to_owned(),
                why,
            })
        })
        .collect()
}

fn parse_entry(entry: &str, default_namespace: &str) -> Result<BackendTls, EntryError> {
    let (target, server_name) = match entry.split_once('=') {
        Some((t, n)) => (t.trim(), Some(n.trim())),
        None => (entry, None),
    };
    let server_name = match server_name {
        None => None,
        Some(n) if !n.is_empty() && n.len() <= 253 && n.split('.').all(is_dns_label) => {
            Some(n.to_owned())
        }
        Some(n) => return Err(EntryError::ServerName(n.to_owned())),
    };
    let (host, port) = match target.split_once(':') {
        Some((h, p)) => (h.trim(), Some(PortRef::parse(p.trim())?)),
        None => (target, None),
    };
    let (name, namespace) = service_and_namespace(host, default_namespace)?;
    Ok(BackendTls {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        port,
        server_name,
    })
}

/// A list entry that is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry `{entry}`: {why}; {FORMAT}")]
pub struct BackendTlsError {
    pub entry: String,
    pub why: EntryError,
}

/// What is wrong with one entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Service(#[from] ServiceNameError),
    #[error("server name `{0}` is not a DNS name")]
    ServerName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, ns: &str, port: u16) -> ServiceKey {
        ServiceKey::new(name, ns, PortRef::Number(port))
    }

    #[test]
    fn entries_with_and_without_port_and_name() {
        let list = parse(
            " greeter , orders.shop:50051=orders.example.com,pay:grpc",
            "default",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].server_name(), "greeter.default.svc");
        assert_eq!(list[1].server_name(), "orders.example.com");
        assert_eq!(list[1].port, Some(PortRef::Number(50051)));
        assert_eq!(list[2].port, Some(PortRef::Name("grpc".into())));
        assert!(list[0].covers(&key("greeter", "default", 1)));
        assert!(!list[0].covers(&key("greeter", "shop", 1)));
        assert!(list[1].covers(&key("orders", "shop", 50051)));
        assert!(!list[1].covers(&key("orders", "shop", 50052)));
        assert_eq!(parse("", "default").unwrap(), []);
    }

    #[test]
    fn a_port_entry_wins_over_an_every_port_one() {
        let list = parse("a=every.example,a:7=seven.example", "default").unwrap();
        assert_eq!(find(&list, &key("a", "default", 7)), Some(1));
        assert_eq!(find(&list, &key("a", "default", 8)), Some(0));
        assert!(find(&list, &key("b", "default", 7)).is_none());
    }

    #[test]
    fn bad_entries_are_named() {
        for (bad, why) in [
            ("a.b.c", "more than two parts"),
            ("A", "not a valid service name"),
            ("a:0", "not in 1-65535"),
            ("a=", "not a DNS name"),
            ("a=x_y", "not a DNS name"),
            ("a.B", "not a valid namespace"),
        ] {
            let err = parse(bad, "default").unwrap_err().to_string();
            assert!(err.contains(&format!("entry `{bad}`")), "{err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
