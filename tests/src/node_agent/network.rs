//! Pod networking without a container runtime: each pod gets its own network
//! namespace, so its `localhost` is its own (the proxy's loopback listeners,
//! the app dialling `localhost:15001`), and an address on a bridge that the
//! agent owns, so pods reach each other and the host (the kubelet's probes,
//! kube-apiserver calling a webhook) reaches every pod by its IP.
//!
//! The pod's `kubernetes` Service address is made to work inside the pod as
//! kube-proxy would make it work: the ClusterIP is on the pod's loopback, and
//! a relay of the agent forwards each connection to it to the API server's
//! real address. The relay's socket is opened inside the pod's namespace (a
//! socket stays in the namespace it was made in). Pods get no default route:
//! an address other than a pod's, the host's bridge address or the API
//! server's ClusterIP is unreachable, never sent anywhere else.
//!
//! Names carry the agent's pid (`sl<pid>br`, `sidelb-<pid>-<n>`), so an agent
//! that was killed leaves nothing that the next one does not sweep away.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// Pod subnets are `10.244.<n>.0/24`, one per agent, `<n>` the first free.
const SUBNET_PREFIX: [u8; 2] = [10, 244];
/// Serialises subnet choice between agents on one host.
const LOCK_FILE: &str = "/run/lock/sidelb-node-agent.lock";

/// The agent's bridge and its pod subnet.
pub struct Network {
    bridge: String,
    subnet: u8,
    free: Mutex<BTreeSet<u8>>,
    /// The last address given: the next is the first free one above it
    /// (wrapping), as host-local IPAM does, so a pod's address is not reused
    /// at once while the host still has the old pod's MAC for it (its
    /// neighbour entry), which would keep probes from the new pod for a minute.
    last_host: Mutex<u8>,
    next_sandbox: Mutex<u32>,
    /// Where the pod's `kubernetes` Service address leads.
    api_server: SocketAddr,
    api_cluster_ip: Ipv4Addr,
    api_port: u16,
}

/// One pod's network namespace and address.
pub struct Sandbox {
    pub netns: String,
    pub ip: Ipv4Addr,
    host_link: String,
    relay: JoinHandle<()>,
}

impl Network {
    /// Creates the bridge on a free subnet, after removing what dead agents left.
    pub async fn create(
        api_server: SocketAddr,
        api_cluster_ip: Ipv4Addr,
        api_port: u16,
    ) -> Result<Network> {
        let pid = std::process::id();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .with_context(|| format!("opening {LOCK_FILE}"))?;
        let fd = lock.as_raw_fd();
        tokio::task::spawn_blocking(move || {
            // SAFETY: flock on an fd we own; released when `lock` closes.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
        .await??;
        sweep_stale().await?;
        let taken = ip_output(&["-4", "-o", "addr", "show"]).await?;
        let subnet = (1..=254u8)
            .find(|n| {
                let gateway = format!(" {}.{}.{n}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
                !taken.contains(&gateway)
            })
            .context("no free 10.244.<n>.0/24 subnet for pods on this host")?;
        let bridge = format!("sl{pid:x}br");
        ip(&["link", "add", &bridge, "type", "bridge"]).await?;
        let gateway = format!("{}.{}.{subnet}.1/24", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
        ip(&["addr", "add", &gateway, "dev", &bridge]).await?;
        ip(&["link", "set", &bridge, "up"]).await?;
        drop(lock);
        Ok(Network {
            bridge,
            subnet,
            free: Mutex::new((2..=254).collect()),
            last_host: Mutex::new(1),
            next_sandbox: Mutex::new(0),
            api_server,
            api_cluster_ip,
            api_port,
        })
    }

    /// The host's address on the pod network (the node's InternalIP).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.subnet, 1)
    }

    /// A new network namespace with an address, loopback up, and the API
    /// server's ClusterIP relayed.
    pub async fn sandbox(&self) -> Result<Sandbox> {
        let host = {
            let mut free = self.free.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let mut last = (self.last_host.lock()).map_err(|_| anyhow::anyhow!("poisoned"))?;
            let host = *(free.range(last.saturating_add(1)..).next())
                .or_else(|| free.iter().next())
                .context("the node's pod subnet is full (253 pods)")?;
            free.remove(&host);
            *last = host;
            host
        };
        let n = {
            let mut next = self
                .next_sandbox
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
            *next += 1;
            *next
        };
        let addr = Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.subnet, host);
        let pid = std::process::id();
        let netns = format!("sidelb-{pid}-{n}");
        let host_link = format!("sl{pid:x}.{n:x}");
        let made = self.wire(&netns, &host_link, addr).await;
        if let Err(err) = made {
            let _ = ip(&["netns", "del", &netns]).await;
            self.release(addr);
            return Err(err);
        }
        let listener = match listen_in(
            &netns,
            SocketAddrV4::new(self.api_cluster_ip, self.api_port),
        )
        .await
        {
            Ok(listener) => listener,
            Err(err) => {
                let _ = ip(&["netns", "del", &netns]).await;
                self.release(addr);
                return Err(err);
            }
        };
        let relay = tokio::spawn(relay(listener, self.api_server));
        Ok(Sandbox {
            netns,
            ip: addr,
            host_link,
            relay,
        })
    }

    async fn wire(&self, netns: &str, host_link: &str, addr: Ipv4Addr) -> Result<()> {
        ip(&["netns", "add", netns]).await?;
        ip(&[
            "link", "add", host_link, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])
        .await?;
        ip(&["link", "set", host_link, "master", &self.bridge, "up"]).await?;
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])
        .await?;
        ip(&["-n", netns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", netns, "link", "set", "lo", "up"]).await?;
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{}/32", self.api_cluster_ip),
            "dev",
            "lo",
        ])
        .await?;
        Ok(())
    }

    /// Removes the pod's namespace and frees its address.
    pub async fn remove(&self, sandbox: Sandbox) {
        sandbox.relay.abort();
        let _ = ip(&["link", "del", &sandbox.host_link]).await;
        if let Err(err) = ip(&["netns", "del", &sandbox.netns]).await {
            tracing::warn!(netns = %sandbox.netns, "removing the pod's network namespace: {err:#}");
        }
        self.release(sandbox.ip);
    }

    fn release(&self, addr: Ipv4Addr) {
        if let Ok(mut free) = self.free.lock() {
            free.insert(addr.octets()[3]);
        }
    }

    /// Removes the bridge (pods' namespaces must be gone first).
    pub async fn close(&self) {
        if let Err(err) = ip(&["link", "del", &self.bridge]).await {
            tracing::warn!(bridge = %self.bridge, "removing the pod bridge: {err:#}");
        }
    }
}

/// Binds `addr` inside network namespace `netns`.
async fn listen_in(netns: &str, addr: SocketAddrV4) -> Result<TcpListener> {
    let path = format!("/run/netns/{netns}");
    let std_listener = tokio::task::spawn_blocking(move || -> Result<std::net::TcpListener> {
        // A thread of its own: setns changes only the calling thread, which
        // then ends; the socket stays in the pod's namespace.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns =
                        std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                    // SAFETY: setns on an fd we own, affecting only this thread.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error()).context("setns");
                    }
                    let listener = std::net::TcpListener::bind(addr)
                        .with_context(|| format!("binding {addr} in {path}"))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
        })
    })
    .await??;
    Ok(TcpListener::from_std(std_listener)?)
}

async fn relay(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match TcpStream::connect(upstream).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(err) => tracing::debug!(%upstream, "relaying to the API server: {err}"),
            }
        });
    }
}

/// Deletes bridges and namespaces named after agents that no longer run.
async fn sweep_stale() -> Result<()> {
    let alive = |pid: &str| {
        u32::from_str_radix(pid, 16)
            .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let alive_dec = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let namespaces = ip_output(&["netns", "list"]).await?;
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if let Some(rest) = name.strip_prefix("sidelb-")
            && let Some((pid, _)) = rest.split_once('-')
            && !alive_dec(pid)
        {
            let _ = ip(&["netns", "del", name]).await;
        }
    }
    let links = ip_output(&["-o", "link", "show", "type", "bridge"]).await?;
    for line in links.lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if let Some(pid) = name.strip_prefix("sl").and_then(|n| n.strip_suffix("br"))
            && !alive(pid)
        {
            let _ = ip(&["link", "del", name]).await;
        }
    }
    Ok(())
}

async fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).await.map(drop)
}

async fn ip_output(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .context("running `ip` (iproute2; apt-get install iproute2)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
