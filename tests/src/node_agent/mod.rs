//! `sidelb-node-agent`: the kubelet's part of a cluster without containers.
//!
//! kube-apiserver and kube-controller-manager run for real (`make cluster`);
//! what a kubelet would do for their pods this agent does, with local
//! binaries standing in for images. It registers Node objects and keeps them
//! alive ([`node`]), binds unscheduled pods to them ([`scheduler`]), and runs
//! each pod bound to one of them ([`pod`]): its own network namespace and
//! address ([`network`]), volumes from Secrets, ConfigMaps, the downward API
//! and service-account tokens ([`volumes`]), each container's process in its
//! own mount namespace with the pod's env ([`container`], [`env`]), probes
//! ([`probe`]), and the pod status the EndpointSlice controller reads
//! ([`state`]).
//!
//! Faithful where sidelb depends on it: pod IPs and readiness as the real
//! EndpointSlice controller sees them, in-cluster credentials that the real
//! API server issues and checks, native-sidecar ordering, SIGTERM then
//! SIGKILL on deletion. Not a kubelet: the host's root file system is every
//! container's, there are no cgroups, resource limits or image pulls, and
//! the agent uses the admin credentials it is given rather than a node's.

pub mod container;
pub mod env;
pub mod expand;
pub mod network;
pub mod node;
pub mod objects;
pub mod pod;
pub mod probe;
pub mod scheduler;
pub mod state;
pub mod volumes;

use anyhow::{Context, Result};
use container::Images;
use env::ApiService;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use network::Network;
use node::NodeSpec;
use objects::Objects;
use pod::PodHandle;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The line printed once the nodes are registered and pods are watched.
pub const READY_LINE: &str = "sidelb-node-agent ready";
/// How long the agent waits for the API server's `kubernetes` Service.
const API_SERVICE_WAIT: Duration = Duration::from_secs(60);
/// Grace for pods stopped because the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub kubeconfig: PathBuf,
    pub nodes: Vec<NodeSpec>,
    pub images: Images,
    /// Pods' volumes and logs live under `<state_dir>/pods/<uid>/`.
    pub state_dir: PathBuf,
    /// Bind pods that have no node to one of ours.
    pub schedule: bool,
}

/// What every pod worker shares.
pub struct Host {
    pub client: Client,
    pub objects: Objects,
    pub images: Images,
    pub network: Network,
    pub api_service: ApiService,
    pub state_dir: PathBuf,
}

type Pods = Arc<Mutex<HashMap<String, (String, PodHandle)>>>;

/// Runs the agent until `shutdown` completes; then stops its pods and removes its network.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    anyhow::ensure!(
        !config.nodes.is_empty(),
        "no node to run: give at least one --node NAME"
    );
    let kubeconfig = kube::config::Kubeconfig::read_from(&config.kubeconfig)
        .with_context(|| format!("reading {}", config.kubeconfig.display()))?;
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let api_server = api_server_addr(&kube_config.cluster_url).await?;
    let client = Client::try_from(kube_config)?;
    let (cluster_ip, port) = api_service(&client).await?;
    let network = Network::create(api_server, cluster_ip, port).await?;
    let host = Arc::new(Host {
        objects: Objects::new(client.clone()),
        client: client.clone(),
        images: config.images.clone(),
        api_service: ApiService {
            host: cluster_ip.to_string(),
            port,
        },
        network,
        state_dir: config.state_dir.clone(),
    });
    let outcome = serve(host.clone(), &config, shutdown).await;
    host.network.close().await;
    outcome
}

async fn serve(
    host: Arc<Host>,
    config: &AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let address = host.network.host_ip();
    for node in &config.nodes {
        node::register(&host.client, node, address).await?;
    }
    let pods: Pods = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for node in config.nodes.clone() {
        tasks.spawn(heartbeat(host.client.clone(), node.clone(), address));
        tasks.spawn(watch_pods(host.clone(), node.name.clone(), pods.clone()));
    }
    if config.schedule {
        tasks.spawn(schedule(
            host.client.clone(),
            config.nodes.clone(),
            pods.clone(),
        ));
    }
    let names: Vec<_> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    println!(
        "{READY_LINE}: nodes {}; pods on {address}/24; API server at {}:{} in each pod",
        names.join(","),
        host.api_service.host,
        host.api_service.port
    );
    let failed = tokio::select! {
        () = shutdown => None,
        Some(ended) = tasks.join_next() => Some(ended),
    };
    tasks.abort_all();
    let handles: Vec<_> = pods
        .lock()
        .map(|mut p| p.drain().map(|(_, (_, h))| h).collect())
        .unwrap_or_default();
    futures_util::future::join_all(handles.into_iter().map(|h| h.stop(SHUTDOWN_GRACE))).await;
    match failed {
        Some(Ok(Err(err))) => Err(err),
        Some(Err(err)) => Err(err.into()),
        _ => Ok(()),
    }
}

async fn heartbeat(client: Client, node: NodeSpec, address: Ipv4Addr) -> Result<()> {
    loop {
        tokio::time::sleep(node::HEARTBEAT).await;
        if let Err(err) = node::post_status(&client, &node, address).await {
            tracing::warn!(node = %node.name, "heartbeat: {err:#}");
        }
    }
}

/// Starts, updates and stops pod workers for the pods bound to `node`.
async fn watch_pods(host: Arc<Host>, node: String, pods: Pods) -> Result<()> {
    let api: Api<Pod> = Api::all(host.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(api, config).boxed();
    let mut listed = HashSet::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::debug!(%node, "pod watch: {err}");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(pod) => {
                listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                apply(&host, &node, &pods, pod).await;
            }
            Event::InitDone => {
                let gone: Vec<String> = pods
                    .lock()
                    .map(|p| {
                        p.iter()
                            .filter(|(uid, (n, _))| *n == node && !listed.contains(*uid))
                            .map(|(uid, _)| uid.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for uid in gone {
                    forget(&pods, &uid);
                }
            }
            Event::Apply(pod) => apply(&host, &node, &pods, pod).await,
            Event::Delete(pod) => forget(&pods, pod.metadata.uid.as_deref().unwrap_or_default()),
        }
    }
    Ok(())
}

async fn apply(host: &Arc<Host>, node: &str, pods: &Pods, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let Ok(mut map) = pods.lock() else { return };
    map.retain(|_, (_, handle)| !handle.finished());
    if let Some((_, handle)) = map.get(&uid) {
        handle.update(pod);
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return;
    }
    map.insert(uid, (node.to_owned(), PodHandle::start(host.clone(), pod)));
}

/// The pod is gone from the API: its processes stop at once.
fn forget(pods: &Pods, uid: &str) {
    let handle = pods.lock().ok().and_then(|mut p| p.remove(uid));
    if let Some((_, handle)) = handle {
        tokio::spawn(handle.stop(Duration::ZERO));
    }
}

async fn schedule(client: Client, nodes: Vec<NodeSpec>, pods: Pods) -> Result<()> {
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut events = watcher::watcher(api, config).boxed();
    let mut bound: HashMap<String, usize> = HashMap::new();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(err) => {
                tracing::debug!("scheduler watch: {err}");
                continue;
            }
        };
        let spec = pod.spec.as_ref();
        let scheduler = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        if scheduler != "default-scheduler"
            || pod.metadata.deletion_timestamp.is_some()
            || spec.and_then(|s| s.node_name.as_ref()).is_some()
        {
            continue;
        }
        let running: HashMap<String, usize> = pods
            .lock()
            .map(|p| {
                p.values().fold(HashMap::new(), |mut m, (n, _)| {
                    *m.entry(n.clone()).or_default() += 1;
                    m
                })
            })
            .unwrap_or_default();
        let Some(node) = scheduler::choose(&pod, &nodes, |n| {
            running.get(n).copied().unwrap_or(0) + bound.get(n).copied().unwrap_or(0)
        }) else {
            tracing::info!(pod = ?pod.metadata.name, "no node of this agent matches the pod's nodeSelector");
            continue;
        };
        match scheduler::bind(&client, &pod, &node.name).await {
            Ok(()) => *bound.entry(node.name.clone()).or_default() += 1,
            Err(err) => tracing::debug!("{err:#}"),
        }
        // `bound` only evens out pods that are not running yet.
        bound.retain(|_, n| {
            *n = n.saturating_sub(usize::from(!running.is_empty()));
            *n > 0
        });
    }
    Ok(())
}

/// The API server's address, which every pod's `kubernetes` Service leads to.
async fn api_server_addr(url: &http::Uri) -> Result<SocketAddr> {
    let host = url
        .host()
        .context("the kubeconfig's server URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .with_context(|| format!("{host} does not resolve"))
}

/// ClusterIP and port of Service `default/kubernetes`, which kube-apiserver
/// creates shortly after it starts.
async fn api_service(client: &Client) -> Result<(Ipv4Addr, u16)> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + API_SERVICE_WAIT;
    loop {
        if let Some(service) = api.get_opt("kubernetes").await? {
            let spec = service.spec.unwrap_or_default();
            let ip: Ipv4Addr = spec
                .cluster_ip
                .as_deref()
                .context("Service default/kubernetes has no clusterIP")?
                .parse()
                .context("Service default/kubernetes: an IPv4 clusterIP is needed")?;
            let port = spec
                .ports
                .unwrap_or_default()
                .first()
                .map(|p| p.port)
                .unwrap_or(443);
            return Ok((ip, u16::try_from(port)?));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("Service default/kubernetes did not appear within {API_SERVICE_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
