//! The proxy under test: `sidelb-proxy` as a real process, configured only
//! through its environment, exactly as the injector configures it in a pod.
//!
//! The harness picks free loopback ports for the authority listener, the
//! admin server and every upstream listener, passes nothing of the test's own
//! environment that could change the proxy's behaviour (`SIDELB_*`,
//! `KUBECONFIG`, `POD_*`, `KUBERNETES_SERVICE_*` are removed unless the test
//! sets them), and returns once `GET /ready` answers 200. The proxy's stdout
//! and stderr are kept in log files and printed when a test fails.

use super::binary::{PROXY_BIN, binary_path};
use super::client::{self, Echo};
use super::endpoints_file::EndpointsFile;
use super::netns::{PodNet, Side};
use super::ports::free_local_addr;
use super::process::Process;
use super::{http_get, wait};
use anyhow::{Context, Result, anyhow, bail};
use sidelb_config::names::{ENDPOINTS_PATH, METRICS_PATH, READY_PATH};
use sidelb_config::settings;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

/// Bound on the proxy becoming ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the proxy's exit after SIGTERM (its drain timeout is 30 s by default;
/// tests that drain set `SIDELB_DRAIN_TIMEOUT` lower).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// Starts of a proxy whose port was taken meanwhile, before the test fails.
const PORT_ATTEMPTS: usize = 3;
/// What the proxy's error says when a listener's port is taken (the OS's words).
const PORT_TAKEN: &str = "Address already in use";

/// Variables of the test's environment never passed on to the proxy.
const SCRUBBED_PREFIXES: &[&str] = &["SIDELB_", "KUBECONFIG", "POD_", "KUBERNETES_SERVICE_"];

/// How to start a proxy: its environment, and the upstream listeners wanted.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    env: BTreeMap<String, String>,
    upstreams: Vec<String>,
    /// [`Proxy::spawn`] returns once the admin server answers, ready or not.
    unready: bool,
    /// The pod network the proxy runs in, if not the test's own.
    pod: Option<Arc<PodNet>>,
}

impl ProxyOptions {
    pub fn new() -> Self {
        ProxyOptions::default()
    }

    /// Discovery from `file` (`SIDELB_DISCOVERY=file:PATH`).
    pub fn file_discovery(file: &EndpointsFile) -> Self {
        ProxyOptions::new().env(settings::DISCOVERY, file.discovery())
    }

    /// Sets one variable (a `sidelb_config::settings` name, or any other).
    /// The harness's own choices (`SIDELB_OUTBOUND_ADDR`, `SIDELB_ADMIN_ADDR`)
    /// are only made when the test has not set them.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_string(), value.into());
        self
    }

    /// Asks for an upstream listener for `target` (`svc.ns:port`, as in
    /// `SIDELB_UPSTREAMS`) on a free local port; see [`Proxy::upstream_addr`].
    pub fn upstream(mut self, target: &str) -> Self {
        self.upstreams.push(target.to_string());
        self
    }

    /// [`Proxy::spawn`] waits only for the admin server to answer, for tests
    /// of what makes the proxy ready.
    pub fn unready(mut self) -> Self {
        self.unready = true;
        self
    }

    /// Runs the proxy inside `pod`'s network namespace; the harness then
    /// reaches its admin server as the pod's own containers do, on loopback
    /// ([`Proxy::admin_get`]).
    pub fn in_pod(mut self, pod: Arc<PodNet>) -> Self {
        self.pod = Some(pod);
        self
    }
}

/// A running, ready `sidelb-proxy`; killed when dropped.
#[derive(Debug)]
pub struct Proxy {
    process: Process,
    outbound: SocketAddr,
    admin: SocketAddr,
    upstreams: BTreeMap<String, SocketAddr>,
    pod: Option<Arc<PodNet>>,
}

impl Proxy {
    /// Starts the proxy and waits, at most [`READY_TIMEOUT`], until it is ready
    /// (or only until its admin server answers, see [`ProxyOptions::unready`]).
    ///
    /// A port found free can be taken by another test before the proxy binds
    /// it ([`super::ports`]); a proxy that exits because of that is started
    /// again on fresh ports, up to [`PORT_ATTEMPTS`] times.
    pub async fn spawn(options: ProxyOptions) -> Result<Proxy> {
        let mut attempt = 1;
        loop {
            match Self::spawn_once(options.clone()).await {
                Err(e) if attempt < PORT_ATTEMPTS && format!("{e:#}").contains(PORT_TAKEN) => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn spawn_once(options: ProxyOptions) -> Result<Proxy> {
        let unready = options.unready;
        let pod = options.pod.clone();
        let Prepared {
            command,
            env,
            outbound,
            admin,
            upstreams,
        } = prepare(options)?;
        let mut process = Process::spawn("sidelb-proxy", command)?;

        let wanted = if unready {
            "GET /ready to answer"
        } else {
            "GET /ready to answer 200"
        };
        let readiness = wait::wait_until(wanted, READY_TIMEOUT, || {
            let exited = process.try_wait().ok().flatten();
            let pod = pod.clone();
            async move {
                if let Some(status) = exited {
                    return Some(Err(anyhow!(
                        "the proxy exited before it was ready: {status}"
                    )));
                }
                match admin_get(pod.as_deref(), admin, READY_PATH).await {
                    Ok((status, _)) if status.is_success() || unready => Some(Ok(())),
                    _ => None,
                }
            }
        })
        .await;
        if let Err(e) = readiness.and_then(|ready| ready) {
            bail!("{e:#}\nenvironment: {env:?}\n{}", process.diagnostics());
        }
        Ok(Proxy {
            process,
            outbound,
            admin,
            upstreams,
            pod,
        })
    }

    /// The authority-routed listener (`SIDELB_OUTBOUND_ADDR`).
    pub fn outbound_addr(&self) -> SocketAddr {
        self.outbound
    }

    /// The admin server (`SIDELB_ADMIN_ADDR`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The upstream listener asked for with [`ProxyOptions::upstream`].
    pub fn upstream_addr(&self, target: &str) -> Result<SocketAddr> {
        self.upstreams
            .get(target)
            .copied()
            .with_context(|| format!("no upstream listener for {target} was asked for"))
    }

    /// A client of `target` (`svc.ns:port`) through the proxy, on one
    /// connection: to its upstream listener if one was asked for, else to the
    /// authority listener with `:authority` `target`.
    pub async fn connect(&self, target: &str) -> Result<Echo> {
        match self.upstreams.get(target) {
            Some(addr) => client::connect(*addr).await,
            None => client::connect_with_authority(self.outbound, target).await,
        }
    }

    /// GETs `path` from the admin server, from loopback (inside the pod
    /// for a proxy started [`ProxyOptions::in_pod`]).
    pub async fn admin_get(&self, path: &str) -> Result<(::http::StatusCode, String)> {
        admin_get(self.pod.as_deref(), self.admin, path).await
    }

    /// `/endpoints`, parsed.
    pub async fn endpoints(&self) -> Result<serde_json::Value> {
        let (status, body) = self.admin_get(ENDPOINTS_PATH).await?;
        if !status.is_success() {
            bail!("GET {ENDPOINTS_PATH}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("{ENDPOINTS_PATH} is not JSON: {body}"))
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = self.admin_get(METRICS_PATH).await?;
        if !status.is_success() {
            bail!("GET {METRICS_PATH}: {status}: {body}");
        }
        Ok(body)
    }

    /// Sends SIGTERM; the proxy starts draining.
    pub fn terminate(&self) -> Result<()> {
        self.process.terminate()
    }

    /// Waits, at most [`STOP_TIMEOUT`], for the proxy to exit.
    pub async fn wait_exit(&mut self) -> Result<ExitStatus> {
        self.process.wait(STOP_TIMEOUT).await
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(mut self) -> Result<ExitStatus> {
        self.terminate()?;
        self.wait_exit().await
    }

    /// The process, for its logs ([`Process::diagnostics`]), its stdout lines
    /// or other signals.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Everything the proxy logged so far (its logs go to stderr).
    pub fn logs(&self) -> String {
        self.process.stderr()
    }

    /// The proxy's resident memory, from `/proc/PID/status` (`VmRSS`).
    pub fn rss_bytes(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.process.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS in {path}"))?;
        Ok(kib * 1024)
    }

    /// How many file descriptors the proxy has open (`/proc/PID/fd`): its
    /// sockets, listeners and files, for tests that check nothing leaks.
    pub fn open_fds(&self) -> Result<usize> {
        let path = format!("/proc/{}/fd", self.process.pid());
        Ok(std::fs::read_dir(&path)
            .with_context(|| format!("reading {path}"))?
            .count())
    }

    /// `/endpoints`' entry for `service` (`svc.ns:port`), if the proxy has one.
    pub async fn service_view(&self, service: &str) -> Result<Option<serde_json::Value>> {
        let view = self.endpoints().await?;
        let services = view["services"]
            .as_array()
            .with_context(|| format!("{ENDPOINTS_PATH} has no `services` list: {view}"))?;
        Ok(services
            .iter()
            .find(|s| s["service"].as_str() == Some(service))
            .cloned())
    }

    /// `/endpoints`' entry for endpoint `addr` of `service`, if listed.
    pub async fn endpoint_view(
        &self,
        service: &str,
        addr: SocketAddr,
    ) -> Result<Option<serde_json::Value>> {
        let addr = addr.to_string();
        Ok(self.service_view(service).await?.and_then(|view| {
            view["endpoints"]
                .as_array()
                .and_then(|eps| eps.iter().find(|e| e["address"] == addr.as_str()))
                .cloned()
        }))
    }

    /// Waits until `/endpoints` shows `service` with exactly `addrs` as its
    /// endpoints, every one `ready` (connected): then every pick can use
    /// them all, and a test's counts do not depend on connection timing.
    pub async fn wait_ready(&self, service: &str, addrs: &[SocketAddr]) -> Result<()> {
        let mut wanted: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        wanted.sort();
        let what = format!("{service} to have exactly {wanted:?} ready");
        wait::wait_until(&what, READY_TIMEOUT, || {
            let wanted = wanted.clone();
            async move {
                let view = self.service_view(service).await.ok()??;
                let mut ready: Vec<String> = view["endpoints"]
                    .as_array()?
                    .iter()
                    .filter(|e| e["state"] == "ready")
                    .filter_map(|e| e["address"].as_str().map(str::to_string))
                    .collect();
                let all = view["endpoints"].as_array()?.len();
                ready.sort();
                (ready == wanted && all == wanted.len()).then_some(())
            }
        })
        .await
    }
}

/// GETs `path` from the admin server at `admin`, from the pod's loopback
/// when the proxy runs in `pod`.
async fn admin_get(
    pod: Option<&PodNet>,
    admin: SocketAddr,
    path: &str,
) -> Result<(::http::StatusCode, String)> {
    let Some(pod) = pod else {
        return http_get::get(admin, path).await;
    };
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), admin.port());
    let exchange = async {
        let stream = pod.connect(Side::Pod, loopback).await?;
        let url = format!("http://{loopback}{path} (in the pod)");
        http_get::get_on(stream, &url, loopback, path, &[]).await
    };
    let (status, _, body) = tokio::time::timeout(http_get::GET_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {path} in the pod: no answer"))??;
    Ok((status, body))
}

/// The command that starts a proxy with `options`, and the addresses it will use.
struct Prepared {
    command: Command,
    env: BTreeMap<String, String>,
    outbound: SocketAddr,
    admin: SocketAddr,
    upstreams: BTreeMap<String, SocketAddr>,
}

fn prepare(options: ProxyOptions) -> Result<Prepared> {
    let mut env = options.env;
    let mut taken = Vec::new();
    let outbound = chosen_addr(&mut env, settings::OUTBOUND_ADDR, &mut taken)?;
    let admin = chosen_addr(&mut env, settings::ADMIN_ADDR, &mut taken)?;
    let mut upstreams = BTreeMap::new();
    for target in options.upstreams {
        upstreams.insert(target, distinct_free_addr(&mut taken)?);
    }
    if !upstreams.is_empty() {
        let listed: Vec<String> = upstreams
            .iter()
            .map(|(target, addr)| format!("{target}={}", addr.port()))
            .collect();
        env.insert(settings::UPSTREAMS.to_string(), listed.join(","));
    }

    let mut command = match &options.pod {
        Some(pod) => pod.command(binary_path(PROXY_BIN)?),
        None => Command::new(binary_path(PROXY_BIN)?),
    };
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if SCRUBBED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            command.env_remove(name.as_ref());
        }
    }
    command.envs(&env);
    Ok(Prepared {
        command,
        env,
        outbound,
        admin,
        upstreams,
    })
}

/// How a proxy that was expected to stop by itself ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Starts a proxy that should refuse to run (bad configuration) and waits,
/// at most [`READY_TIMEOUT`], for it to exit.
pub async fn run_to_exit(options: ProxyOptions) -> Result<Exited> {
    let Prepared { command, .. } = prepare(options)?;
    let mut process = Process::spawn("sidelb-proxy", command)?;
    let status = process.wait(READY_TIMEOUT).await?;
    // stdout is read on a thread: wait for its end so that no line is missed.
    let _ = process
        .wait_for_line("the end of stdout", READY_TIMEOUT, |_| false)
        .await;
    Ok(Exited {
        status,
        stdout: process.lines().join("\n"),
        stderr: process.stderr(),
    })
}

/// The address the test set for `variable`, or a free one, now set.
fn chosen_addr(
    env: &mut BTreeMap<String, String>,
    variable: &str,
    taken: &mut Vec<u16>,
) -> Result<SocketAddr> {
    if let Some(value) = env.get(variable) {
        let addr: SocketAddr = value
            .parse()
            .with_context(|| format!("{variable}={value} is not an address"))?;
        taken.push(addr.port());
        return Ok(addr);
    }
    let addr = distinct_free_addr(taken)?;
    env.insert(variable.to_string(), addr.to_string());
    Ok(addr)
}

/// A free port none of this proxy's other listeners was given: the system
/// can hand out a port again as soon as the probe socket closes.
fn distinct_free_addr(taken: &mut Vec<u16>) -> Result<SocketAddr> {
    for _ in 0..100 {
        let addr = free_local_addr()?;
        if !taken.contains(&addr.port()) {
            taken.push(addr.port());
            return Ok(addr);
        }
    }
    bail!("no free port distinct from {taken:?} in 100 tries")
}
