//! Which sockets one configured listen address becomes.
//!
//! An app whose `localhost` resolves to `::1` must reach the proxy, and on
//! an IPv6 (or dual-stack) cluster the kubelet probes the pod's IPv6
//! address. So:
//!
//! - `127.0.0.1:P` (the default of every app-side listener) is also bound
//!   on `[::1]:P`, where the host has IPv6 loopback;
//! - an unspecified address (`0.0.0.0:P`, `[::]:P`, what the injector gives
//!   the admin server) is one dual-stack socket on `[::]:P` with
//!   `IPV6_V6ONLY` off, so IPv4 clients arrive as `::ffff:a.b.c.d`; where
//!   the host has no IPv6 it is `0.0.0.0:P`;
//! - any other address is bound as given.
//!
//! IPv6 missing shows as `EADDRNOTAVAIL` or `EAFNOSUPPORT`: that socket is
//! skipped (logged at debug); every other error is the caller's.
//! `IPV6_V6ONLY` needs `socket2`: neither std nor tokio set it, and the
//! system default (`net.ipv6.bindv6only`) is the host's choice, not ours.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::TcpListener;

/// As tokio's own `TcpListener::bind`.
const BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub(crate) struct BindError {
    pub(crate) addr: SocketAddr,
    pub(crate) source: io::Error,
}

/// The listeners `addr` stands for (see the module docs); at least one.
pub(crate) fn bind(addr: SocketAddr) -> Result<Vec<TcpListener>, BindError> {
    match addr.ip() {
        IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST => {
            let v4 = socket(addr, false)?;
            // A port chosen by the system for IPv4 is asked of IPv6 too.
            let port = v4.local_addr().map_or(addr.port(), |a| a.port());
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
            let mut out = vec![v4];
            out.extend(unless_no_ipv6(socket(v6, true))?);
            Ok(out)
        }
        ip if ip.is_unspecified() => {
            let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), addr.port());
            match unless_no_ipv6(socket(any, false))? {
                Some(dual) => Ok(vec![dual]),
                None => Ok(vec![socket(
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()),
                    false,
                )?]),
            }
        }
        _ => Ok(vec![socket(addr, addr.is_ipv6())?]),
    }
}

/// `None` for the errors that mean the host has no IPv6 (loopback).
fn unless_no_ipv6(bound: Result<TcpListener, BindError>) -> Result<Option<TcpListener>, BindError> {
    match bound {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if no_ipv6(&e.source) => {
            tracing::debug!("not listening on {}: no IPv6 here ({})", e.addr, e.source);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
    )
}

/// One listening socket on `addr`; an IPv6 one takes IPv6 only when
/// `v6_only`, both families otherwise.
fn socket(addr: SocketAddr, v6_only: bool) -> Result<TcpListener, BindError> {
    let open = || -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(v6_only)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        TcpListener::from_std(socket.into())
    };
    open().map_err(|source| BindError { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
        listeners.iter().map(|l| l.local_addr().unwrap()).collect()
    }

    fn has_ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[tokio::test]
    async fn ipv4_loopback_is_paired_with_ipv6_loopback_on_the_same_port() {
        let bound = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = addrs(&bound);
        assert!(got[0].ip().is_loopback() && got[0].is_ipv4(), "{got:?}");
        if has_ipv6_loopback() {
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(
                got[1],
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), got[0].port())
            );
        } else {
            assert_eq!(got.len(), 1, "{got:?}");
        }
    }

    #[tokio::test]
    async fn an_unspecified_address_takes_both_families() {
        let bound = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let got = addrs(&bound);
        assert_eq!(got.len(), 1, "{got:?}");
        let port = got[0].port();
        let v4 = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(v4.is_ok(), "IPv4 reaches it: {v4:?}");
        let (_, peer) = bound[0].accept().await.unwrap();
        assert!(peer.ip().to_canonical().is_loopback(), "{peer}");
        if has_ipv6_loopback() {
            assert!(got[0].is_ipv6(), "{got:?}");
            let v6 = tokio::net::TcpStream::connect(("::1", port)).await;
            assert!(v6.is_ok(), "IPv6 reaches it: {v6:?}");
        }
    }

    #[tokio::test]
    async fn other_addresses_are_bound_as_given_and_errors_name_them() {
        let got = addrs(&bind("127.0.0.2:0".parse().unwrap()).unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        let taken = bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let addr = taken[0].local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        assert_eq!(err.addr, addr);
        assert_eq!(err.source.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn only_missing_ipv6_is_skipped() {
        for (errno, skipped) in [
            (libc::EADDRNOTAVAIL, true),
            (libc::EAFNOSUPPORT, true),
            (libc::EADDRINUSE, false),
            (libc::EACCES, false),
        ] {
            assert_eq!(
                no_ipv6(&io::Error::from_raw_os_error(errno)),
                skipped,
                "{errno}"
            );
        }
    }
}
