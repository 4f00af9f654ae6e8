//! A stand-in for kube-proxy in front of a ClusterIP Service, on a real
//! control plane: it follows the Service's EndpointSlices (polled, as
//! kube-proxy follows them, within a fraction of a second) and gives each new
//! TCP connection the next ready endpoint, then only copies bytes. A
//! connection keeps its endpoint for its whole life, as conntrack keeps a
//! flow: that is what pins every call of one HTTP/2 connection to one pod.

use super::wait::wait_until;
use anyhow::{Context, Result};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How often the endpoints are read again.
const POLL: Duration = Duration::from_millis(200);

pub struct ClusterIpStandIn {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterIpStandIn {
    /// Listens on a free loopback port for Service `service` of `namespace`,
    /// once its slices list at least one ready endpoint (bounded by `within`).
    pub async fn start(
        client: Client,
        namespace: &str,
        service: &str,
        within: Duration,
    ) -> Result<ClusterIpStandIn> {
        let slices: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let selector =
            ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let ready = Arc::new(Mutex::new(Vec::new()));
        let first = wait_until("the Service's first ready endpoint", within, || async {
            let found = ready_endpoints(&slices, &selector).await.ok()?;
            (!found.is_empty()).then_some(found)
        })
        .await?;
        if let Ok(mut current) = ready.lock() {
            *current = first;
        }
        let follow = {
            let ready = ready.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(POLL).await;
                    if let Ok(found) = ready_endpoints(&slices, &selector).await
                        && let Ok(mut current) = ready.lock()
                    {
                        *current = found;
                    }
                }
            })
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the stand-in's port")?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = ready.lock().ok().and_then(|current| {
                    (!current.is_empty()).then(|| current[next % current.len()])
                });
                next = next.wrapping_add(1);
                let Some(target) = target else { continue };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(ClusterIpStandIn {
            addr,
            tasks: vec![follow, accept],
        })
    }

    /// Where clients connect, in place of the ClusterIP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ClusterIpStandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every ready endpoint's address and port, over all slices, in a stable order.
async fn ready_endpoints(
    slices: &Api<EndpointSlice>,
    selector: &ListParams,
) -> Result<Vec<SocketAddr>> {
    let mut found = Vec::new();
    for slice in slices.list(selector).await?.items {
        let Some(port) = slice.ports.iter().flatten().find_map(|p| p.port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    found.push(SocketAddr::new(ip, port as u16));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}
