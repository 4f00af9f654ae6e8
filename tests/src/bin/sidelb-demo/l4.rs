//! A stand-in for a ClusterIP Service: an L4 balancer that, like kube-proxy,
//! picks a backend per TCP connection and then only copies bytes.
//!
//! It is what an app's gRPC channel meets in a cluster without sidelb, and
//! it shows the problem honestly: every request of one connection goes to
//! the backend that connection was given.

use std::net::SocketAddr;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct ConnectionBalancer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl ConnectionBalancer {
    /// Listens on a free loopback port; connection N goes to `backends[N % len]`.
    pub async fn start(backends: Vec<SocketAddr>) -> std::io::Result<ConnectionBalancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(target) = backends.get(next % backends.len().max(1)).copied() else {
                    return;
                };
                next += 1;
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(ConnectionBalancer { addr, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ConnectionBalancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
