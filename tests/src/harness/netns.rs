//! A pod's network, made by the test: two network namespaces joined by a
//! veth pair, so that a test can tell a client on the pod's loopback from
//! one that reaches the pod IP, as the kubelet and every other pod do.
//!
//! ```text
//!   pod namespace                      outside namespace
//!   lo 127.0.0.1, ::1                  lo
//!   veth POD_IP 10.250.0.2/30  <────>  veth OUTSIDE_IP 10.250.0.1/30
//!        POD_IP6 fd00:250::2/64           OUTSIDE_IP6 fd00:250::1/64
//! ```
//!
//! Dual-stack, as a pod on a dual-stack cluster: the IPv6 addresses skip
//! duplicate address detection (`nodad`), so they work at once.
//!
//! Both namespaces are the test's own, so the fixed addresses collide with
//! nothing and no traffic touches the host's network. Processes run in the
//! pod with [`PodNet::command`] (`ip netns exec`); the test's own sockets
//! are opened on a short-lived thread that entered the namespace, and work
//! from any thread afterwards. Dropping the guard deletes both namespaces
//! (and the veth pair with them). Needs root and `ip netns`;
//! [`PodNet::create`] says why when they are missing.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const PREFIX: u8 = 30;
pub const POD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 2);
pub const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 1);
const PREFIX6: u8 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a test's socket is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// In the pod: its loopback and its own IP.
    Pod,
    /// Another host on the pod's network: reaches only [`POD_IP`].
    Outside,
}

#[derive(Debug)]
pub struct PodNet {
    pod: String,
    outside: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl PodNet {
    /// Makes the two namespaces and the veth pair. `Err` says why it is not
    /// possible here (not root, no `ip`), for the test to skip with.
    pub fn create() -> Result<PodNet> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("network namespaces need root (ip netns add)");
        }
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{seq}", std::process::id());
        let net = PodNet {
            pod: format!("sl-pod-{tag}"),
            outside: format!("sl-out-{tag}"),
        };
        ip(&["netns", "add", &net.pod])?;
        ip(&["netns", "add", &net.outside])?;
        // veth names are at most 15 bytes; they live only inside the namespaces.
        let veth_pod = format!("slp{tag}");
        let veth_out = format!("slo{tag}");
        let (veth_pod, veth_out) = (
            &veth_pod[..veth_pod.len().min(15)],
            &veth_out[..veth_out.len().min(15)],
        );
        ip(&[
            "link",
            "add",
            veth_pod,
            "netns",
            &net.pod,
            "type",
            "veth",
            "peer",
            "name",
            veth_out,
            "netns",
            &net.outside,
        ])?;
        for (ns, dev, addr, addr6) in [
            (&net.pod, veth_pod, POD_IP, POD_IP6),
            (&net.outside, veth_out, OUTSIDE_IP, OUTSIDE_IP6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/{PREFIX}"),
                "dev",
                dev,
            ])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{addr6}/{PREFIX6}"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(net)
    }

    /// `program` run inside the pod's namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.pod]).arg(program);
        command
    }

    fn namespace(&self, side: Side) -> &str {
        match side {
            Side::Pod => &self.pod,
            Side::Outside => &self.outside,
        }
    }

    /// Runs `f` on a new thread that entered `side`'s namespace; sockets
    /// it opens stay in that namespace.
    pub fn run_in<T: Send + 'static>(
        &self,
        side: Side,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        run_in_namespace(self.namespace(side).to_owned(), f)
    }

    /// `n` TCP connections to `addr` from `side`, for tokio.
    pub async fn connect_many(
        &self,
        side: Side,
        addr: SocketAddr,
        n: usize,
    ) -> Result<Vec<tokio::net::TcpStream>> {
        let connect = move || {
            (0..n)
                .map(|i| {
                    let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                        .with_context(|| format!("connection {i} to {addr}"))?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .collect::<Result<Vec<_>>>()
        };
        let ns = self.namespace(side).to_owned();
        let opened = tokio::task::spawn_blocking(move || run_in_namespace(ns, connect)).await??;
        opened
            .into_iter()
            .map(|s| Ok(tokio::net::TcpStream::from_std(s)?))
            .collect()
    }

    /// One TCP connection to `addr` from `side`.
    pub async fn connect(&self, side: Side, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
        let mut one = self.connect_many(side, addr, 1).await?;
        one.pop().context("one connection")
    }

    /// `addr` with the pod IP, as other pods and the kubelet reach it.
    pub fn pod_addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(POD_IP), port)
    }

    /// `addr` with the pod's IPv6 address.
    pub fn pod_addr6(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(POD_IP6), port)
    }
}

/// Runs `f` on a new thread that entered namespace `ns`.
fn run_in_namespace<T: Send + 'static>(
    ns: String,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns affects this thread only, with a namespace fd we
        // own; the thread ends when `f` returns.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        f()
    });
    match thread.join() {
        Ok(result) => result.with_context(|| format!("in network namespace {ns}")),
        Err(_) => bail!("the thread in network namespace {ns} panicked"),
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.outside] {
            if let Err(e) = ip(&["netns", "delete", ns]) {
                eprintln!("could not delete network namespace {ns}: {e:#}");
            }
        }
    }
}
