//! The upstreams list: `svc[.ns]:port=localport,…`.
//!
//! Each entry opens a loopback listener on `localport` whose every request
//! goes to the named Service port. The same text is accepted in the
//! `SIDELB_UPSTREAMS` variable and the `sidelb.io/upstreams` annotation.

use crate::service::{PortError, PortRef, ServiceKey, ServiceNameError, service_and_namespace};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One `svc.ns:port=localport` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub service: ServiceKey,
    pub listen: SocketAddr,
}

const FORMAT: &str =
    "expected `service[.namespace]:port=localport`, e.g. `greeter.default:50051=15001`";

/// Parses a comma-separated list. `default_namespace` fills in entries that
/// name only the Service. Whitespace around entries is ignored; an empty text
/// is an empty list.
pub fn parse(text: &str, default_namespace: &str) -> Result<Vec<Upstream>, UpstreamsError> {
    let mut out: Vec<Upstream> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let upstream =
            parse_entry(entry, default_namespace).map_err(|why| UpstreamsError::Entry {
                entry: entry.to_owned(),
                why,
            })?;
        if let Some(prev) = out.iter().find(|u| overlap(u.listen, upstream.listen)) {
            return Err(UpstreamsError::PortTaken {
                entry: entry.to_owned(),
                port: upstream.listen.port(),
                by: prev.service.clone(),
            });
        }
        out.push(upstream);
    }
    Ok(out)
}

/// Refuses an upstream listener that would take the outbound or admin
/// listener's port. The proxy checks its own settings with it; the injector
/// checks an annotation against the addresses the sidecar will have.
pub fn check_listeners(
    upstreams: &[Upstream],
    outbound: SocketAddr,
    admin: SocketAddr,
) -> Result<(), UpstreamsError> {
    match upstreams
        .iter()
        .find(|u| overlap(u.listen, outbound) || overlap(u.listen, admin))
    {
        Some(u) => Err(UpstreamsError::ListenerClash {
            upstream: Box::new(u.clone()),
            outbound,
            admin,
        }),
        None => Ok(()),
    }
}

/// An upstreams list that is not accepted; each names the entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamsError {
    #[error("entry `{entry}`: {why}; {FORMAT}")]
    Entry { entry: String, why: EntryError },
    #[error(
        "entry `{entry}`: local port {port} is already used by `{by}`; give each upstream its own port"
    )]
    PortTaken {
        entry: String,
        port: u16,
        by: ServiceKey,
    },
    #[error(
        "local port {} of `{}` ({}) is also the outbound or admin address ({outbound}, {admin}); pick another port",
        .upstream.listen.port(),
        .upstream.service,
        .upstream.listen
    )]
    ListenerClash {
        upstream: Box<Upstream>,
        outbound: SocketAddr,
        admin: SocketAddr,
    },
}

/// What is wrong with one entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("there is no `=localport`")]
    NoLocalPort,
    #[error("there is no `:port` after the service")]
    NoPort,
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Service(#[from] ServiceNameError),
    #[error("local port 0 is not allowed")]
    PortZero,
    #[error("`{0}` is not a local port (1-65535)")]
    LocalPort(String),
    #[error(
        "listen address {0} is not loopback: an upstream listener on another address \
         would let anyone who reaches it call the cluster as this pod; \
         give only the port (`=15001`) or a loopback address (`=127.0.0.1:15001`, `=[::1]:15001`)"
    )]
    NotLoopback(SocketAddr),
}

/// Whether two listen addresses would take the same port: the same address,
/// the same port where one of them is a wildcard (`0.0.0.0`, `[::]`), or
/// `127.0.0.1` and `::1`, since the proxy binds `127.0.0.1:P` on `[::1]:P`
/// as well.
pub fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let paired = |ip: IpAddr| match ip {
        IpAddr::V4(v4) if v4 == Ipv4Addr::LOCALHOST => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    a.port() == b.port()
        && (paired(a.ip()) == paired(b.ip()) || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Whether `ip` is loopback: `127.0.0.0/8`, `::1`, or an IPv4-mapped IPv6
/// address of the former (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn parse_entry(entry: &str, default_namespace: &str) -> Result<Upstream, EntryError> {
    let (target, local) = entry.split_once('=').ok_or(EntryError::NoLocalPort)?;
    let (host, port) = target.trim().rsplit_once(':').ok_or(EntryError::NoPort)?;
    let port = PortRef::parse(port.trim())?;
    let (name, namespace) = service_and_namespace(host.trim(), default_namespace)?;
    let local = local.trim();
    let listen = match local.parse::<u16>() {
        Ok(0) => return Err(EntryError::PortZero),
        Ok(p) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p),
        Err(_) => local
            .parse::<SocketAddr>()
            .map_err(|_| EntryError::LocalPort(local.to_owned()))?,
    };
    if !is_loopback(listen.ip()) {
        return Err(EntryError::NotLoopback(listen));
    }
    Ok(Upstream {
        service: ServiceKey::new(name, namespace, port),
        listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_may_not_take_the_outbound_or_admin_port() {
        let outbound: SocketAddr = "127.0.0.1:4140".parse().unwrap();
        let admin: SocketAddr = "0.0.0.0:4191".parse().unwrap();
        let ok = parse("a:1=15001", "default").unwrap();
        assert_eq!(check_listeners(&ok, outbound, admin), Ok(()));
        for port in [4140, 4191] {
            let list = parse(&format!("a:1=15001,b.ns:grpc={port}"), "default").unwrap();
            let why = check_listeners(&list, outbound, admin)
                .unwrap_err()
                .to_string();
            assert!(
                why.contains(&format!("local port {port} of `b.ns:grpc`")),
                "{why}"
            );
        }
    }

    #[test]
    fn wildcards_overlap_every_address_on_their_port() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlap(addr("127.0.0.1:4191"), addr("0.0.0.0:4191")));
        assert!(overlap(addr("[::]:4191"), addr("127.0.0.1:4191")));
        assert!(overlap(addr("127.0.0.1:15001"), addr("127.0.0.1:15001")));
        assert!(!overlap(addr("127.0.0.1:15001"), addr("127.0.0.2:15001")));
        assert!(!overlap(addr("0.0.0.0:4191"), addr("0.0.0.0:4140")));
        assert!(overlap(addr("127.0.0.1:4140"), addr("[::1]:4140")));
        assert!(overlap(addr("[::1]:4140"), addr("127.0.0.1:4140")));
        assert!(!overlap(addr("127.0.0.2:4140"), addr("[::1]:4140")));
        assert!(!overlap(addr("127.0.0.1:4140"), addr("[::1]:4141")));
    }

    #[test]
    fn listen_addresses_must_be_loopback() {
        for ok in [
            "127.0.0.1:15001",
            "127.0.0.2:15001",
            "[::1]:15001",
            "[::ffff:127.0.0.1]:15001",
        ] {
            let ups = parse(&format!("a:1={ok}"), "default").unwrap();
            assert_eq!(ups[0].listen, ok.parse().unwrap());
        }
        for bad in [
            "0.0.0.0:15001",
            "[::]:15001",
            "10.0.0.5:15001",
            "[::ffff:10.0.0.5]:15001",
        ] {
            let err = parse(&format!("a:1=15002,b.ns:grpc={bad}"), "default").unwrap_err();
            assert!(
                matches!(&err, UpstreamsError::Entry { why: EntryError::NotLoopback(a), .. } if a.to_string() == bad),
                "{err:?}"
            );
            let err = err.to_string();
            assert!(err.contains(&format!("entry `b.ns:grpc={bad}`")), "{err}");
            assert!(err.contains("not loopback"), "{err}");
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let ups = parse("greeter.default:50051=15001,orders.shop:grpc=15002", "x").unwrap();
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].service.to_string(), "greeter.default:50051");
        assert_eq!(ups[0].listen, "127.0.0.1:15001".parse().unwrap());
        assert_eq!(ups[1].service.port, PortRef::Name("grpc".into()));
    }

    #[test]
    fn short_names_take_the_default_namespace() {
        let ups = parse(" greeter:50051=15001 ,", "shop").unwrap();
        assert_eq!(ups[0].service.namespace, "shop");
    }

    #[test]
    fn empty_is_empty() {
        assert!(parse("", "d").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry() {
        for bad in [
            "greeter",
            "greeter:50051",
            "greeter=15001",
            "greeter:0=15001",
            "greeter:50051=0",
            "greeter:50051=http",
            "Greeter:50051=15001",
            "a.b.c:1=2",
            "greeter:50051=15001,orders:1=15001",
            "greeter:50051=15001,orders:1=[::1]:15001",
        ] {
            let err = parse(bad, "default").unwrap_err().to_string();
            assert!(err.contains("entry `"), "{bad}: {err}");
        }
    }
}
