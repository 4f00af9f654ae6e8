//! `sidelb-compare` (`make compare`): the workarounds people use for gRPC
//! balancing in Kubernetes, each run for real beside sidelb on the same
//! scenario, and one table of what each showed.
//!
//! On a control plane with CoreDNS (`cluster/cluster.sh dns`) and the node
//! agent, every system gets a namespace of its own with the same app: a
//! Deployment of three Go servers (`go-compare -mode=server`, grpc-go) behind
//! a Service, and ONE Go client (`go-compare -mode=client`, one ClientConn,
//! round_robin in its service config) that differs only in its target. The
//! Deployment is scaled to five; the new pods' share of calls is read in the
//! client's one-second windows that end 1 s, 10 s and 60 s after the
//! EndpointSlices first list all five ready. Then a rolling restart (one new
//! pod ready before an old one goes), and the calls that failed from its start
//! until two windows after it finished. Every figure is counted by the
//! client from replies that name their pod.
//!
//! The clients of the seed systems run on the node (in the host's network,
//! where pod IPs and CoreDNS's loopback address are reachable); sidelb's
//! client is a pod injected by the chart's webhook, dialling its sidecar.
//! Each step is bounded (`--step-timeout-s`), and so is the whole run by the
//! make target.

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use sidelb_tests::harness::chart::{self, NAMESPACE};
use sidelb_tests::harness::cluster_ip::ClusterIpStandIn;
use sidelb_tests::harness::node_agent::GO_COMPARE_APP;
use sidelb_tests::harness::node_agent::GO_COMPARE_IMAGE;
use sidelb_tests::harness::{ControlPlane, Kubectl, NodeAgent, Process, ScratchDir, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug, Clone)]
#[command(version)]
struct Flags {
    /// The directory of the running control plane (`cluster/cluster.sh dns`).
    #[arg(long, default_value = "target/compare")]
    cluster_dir: PathBuf,
    /// Shares at 1 s and 10 s only (not 60 s).
    #[arg(long)]
    quick: bool,
    /// The systems to run, in this order (default: all).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<System>,
    /// Unary calls per second of each client.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Bound on each step (a rollout, a pod getting ready, a window).
    #[arg(long, default_value_t = 180)]
    step_timeout_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    /// A ClusterIP Service through a stand-in for kube-proxy.
    ClusterIp,
    /// A headless Service, grpc-go's dns resolver and round_robin.
    RoundRobin,
    /// Servers with keepalive MaxConnectionAge, behind the ClusterIP stand-in.
    MaxConnectionAge,
    /// kuberesolver in the client, watching EndpointSlices with its pod's token.
    Kuberesolver,
    /// HAProxy in front (HTTP/2 both sides), finding the pods through CoreDNS.
    Haproxy,
    /// sidelb: the client's pod injected, the client dialling its sidecar.
    Sidelb,
}

/// What a row says that is not measured.
struct Facts {
    name: &'static str,
    change: &'static str,
    hop: &'static str,
    needs: &'static str,
}

impl System {
    const ALL: [System; 6] = [
        System::ClusterIp,
        System::RoundRobin,
        System::Kuberesolver,
        System::MaxConnectionAge,
        System::Haproxy,
        System::Sidelb,
    ];

    fn slug(self) -> &'static str {
        match self {
            System::ClusterIp => "clusterip",
            System::RoundRobin => "round-robin",
            System::MaxConnectionAge => "max-age",
            System::Haproxy => "haproxy",
            System::Kuberesolver => "kuberesolver",
            System::Sidelb => "sidelb",
        }
    }

    fn facts(self) -> Facts {
        match self {
            System::ClusterIp => Facts {
                name: "ClusterIP (kube-proxy)",
                change: "none",
                hop: "none (kernel NAT)",
                needs: "nothing",
            },
            System::RoundRobin => Facts {
                name: "headless + grpc-go round_robin",
                change: "client: dns:/// target + round_robin config",
                hop: "none",
                needs: "a headless Service, cluster DNS",
            },
            System::MaxConnectionAge => Facts {
                name: "server MaxConnectionAge 30 s (ClusterIP)",
                change: "server: keepalive MaxConnectionAge",
                hop: "none (kernel NAT)",
                needs: "nothing",
            },
            System::Kuberesolver => Facts {
                name: "kuberesolver v6.0.1 (grpc-go)",
                change: "client: kuberesolver registered, kubernetes:/// target (Go only)",
                hop: "none",
                needs: "RBAC for every app: a Role to get/list/watch endpointslices, its RoleBinding; a watch per client",
            },
            System::Haproxy => Facts {
                name: "front proxy (HAProxy 2.6)",
                change: "client: the proxy's address",
                hop: "one: client → proxy → pod",
                needs: "a proxy Deployment and its config; a headless Service, cluster DNS",
            },
            System::Sidelb => Facts {
                name: "sidelb",
                change: "none (dial localhost)",
                hop: "loopback, in the pod",
                needs: "the chart; namespace label",
            },
        }
    }

    fn headless(self) -> bool {
        matches!(self, System::RoundRobin | System::Haproxy)
    }

    /// What the servers are started with beyond their name and address.
    fn server_args(self) -> Vec<String> {
        match self {
            System::MaxConnectionAge => vec![format!("-max-connection-age={MAX_AGE_S}s")],
            _ => Vec::new(),
        }
    }
}

const APP: &str = "echo";
const PORT: u16 = 50051;
const LOCAL_PORT: u16 = 15001;
const FIRST: usize = 3;
const ALL: usize = 5;
const CLIENT: &str = "client";
/// The MaxConnectionAge row's setting.
const MAX_AGE_S: u64 = 30;
/// Seconds of calls counted after the roll finished.
const AFTER_ROLL: u64 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    match run(&flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidelb-compare: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Compare {
    kubectl: Kubectl,
    client: Client,
    agent: NodeAgent,
    dns: String,
    go: PathBuf,
    flags: Flags,
    step: Duration,
    started: Instant,
}

/// One client window (`go-compare -mode=client`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
struct Window {
    t_ms: u64,
    pods: BTreeMap<String, u64>,
    failed: u64,
    #[serde(default)]
    codes: BTreeMap<String, u64>,
    dials: u64,
}

impl Window {
    fn calls(&self) -> u64 {
        self.pods.values().sum::<u64>() + self.failed
    }

    /// Percent of the calls that pods not in `old` answered.
    fn share_outside(&self, old: &BTreeSet<String>) -> Option<u64> {
        let total = self.calls();
        let new: u64 = (self.pods.iter())
            .filter(|(pod, _)| !old.contains(*pod))
            .map(|(_, n)| n)
            .sum();
        (total > 0).then(|| (new * 100 + total / 2) / total)
    }
}

/// What one system showed.
struct Row {
    system: System,
    /// The new pods' share at each mark, percent.
    shares: Vec<(u64, Option<u64>)>,
    roll_failed: u64,
    roll_calls: u64,
    /// The roll's failed calls by status.
    roll_codes: BTreeMap<String, u64>,
    dials: u64,
    calls: u64,
    seconds: f64,
}

impl Row {
    fn json(&self) -> Value {
        let shares: serde_json::Map<String, Value> = (self.shares.iter())
            .map(|(mark, share)| (format!("{mark}s"), json!(share)))
            .collect();
        json!({
            "system": self.system.slug(),
            "new_pods_share_percent": shares,
            "roll_failed": self.roll_failed,
            "roll_calls": self.roll_calls,
            "roll_codes": self.roll_codes,
            "dials": self.dials,
            "calls": self.calls,
            "seconds": self.seconds,
        })
    }
}

impl Compare {
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl.output(args)
    }

    fn apply(&self, name: &str, objects: Vec<Value>) -> Result<String> {
        self.kubectl.apply_list(name, objects)
    }

    fn rollout(&self, ns: &str, deployment: &str) -> Result<()> {
        self.kubectl.rollout_status(ns, deployment, self.step)
    }

    fn say(&self, text: &str) {
        println!("[{:6.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    fn marks(&self) -> &'static [u64] {
        if self.flags.quick {
            &[1, 10]
        } else {
            &[1, 10, 60]
        }
    }

    /// Names of the app's pods that are not being deleted.
    async fn pod_names(&self, ns: &str) -> Result<BTreeSet<String>> {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let pods = api
            .list(&ListParams::default().labels(&format!("app={APP}")))
            .await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect())
    }

    /// Ready endpoints in the Service's EndpointSlices.
    async fn ready_endpoints(&self, ns: &str) -> Result<usize> {
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), ns);
        let by_service = ListParams::default().labels(&format!("kubernetes.io/service-name={APP}"));
        let slices = api.list(&by_service).await?.items;
        Ok(slices
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count())
    }

    async fn scenario(&self, system: System) -> Result<Row> {
        let started = Instant::now();
        let ns = format!("compare-{}", system.slug());
        let facts = system.facts();
        println!("\n== {} ==", facts.name);
        self.kubectl(&["create", "namespace", &ns])?;
        if system == System::Sidelb {
            self.kubectl(&["label", "namespace", &ns, "sidelb.io/inject=enabled"])?;
        }
        self.apply("app.json", app_objects(&ns, system))?;
        self.rollout(&ns, APP)
            .context("the app's pods did not get ready")?;
        let old = self.pod_names(&ns).await?;
        self.say(&format!("{FIRST} pods ready in namespace {ns}"));

        let (mut windows, guards) = self.start_client(system, &ns).await?;
        let first = windows
            .next_where(self.step, |w| !w.pods.is_empty())
            .await
            .context("the client's first answered call")?;
        self.say(&format!(
            "client up: {} (first window: {:?})",
            windows.target, first.pods
        ));
        windows.next(self.step).await?;

        self.kubectl(&[
            "-n",
            &ns,
            "scale",
            "deployment",
            APP,
            &format!("--replicas={ALL}"),
        ])?;
        wait_until("5 ready endpoints in the slices", self.step, || async {
            (self.ready_endpoints(&ns).await.ok()? >= ALL).then_some(())
        })
        .await?;
        let ready_ms = now_ms();
        self.say("scaled to 5: the EndpointSlices list 5 ready endpoints");
        let mut shares = Vec::new();
        for &mark in self.marks() {
            let due = ready_ms + mark * 1000;
            let window = windows.next_where(self.step, |w| w.t_ms >= due).await?;
            let share = window.share_outside(&old);
            self.say(&format!(
                "  {mark:>2} s after: new pods' share {} of {} calls ({:?})",
                percent(share),
                window.calls(),
                window.pods
            ));
            shares.push((mark, share));
        }

        let roll_ms = now_ms();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": format!("compare-{roll_ms}"),
        }}}}});
        self.kubectl(&[
            "-n",
            &ns,
            "patch",
            "deployment",
            APP,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])?;
        self.rollout(&ns, APP).context("the rolling restart")?;
        let due = now_ms() + AFTER_ROLL * 1000;
        windows.next_where(self.step, |w| w.t_ms >= due).await?;
        let (mut roll_failed, mut roll_calls) = (0, 0);
        let mut roll_codes = BTreeMap::new();
        for w in windows.seen.iter().filter(|w| w.t_ms > roll_ms) {
            roll_failed += w.failed;
            roll_calls += w.calls();
            for (code, n) in &w.codes {
                *roll_codes.entry(code.clone()).or_default() += n;
            }
        }
        self.say(&format!(
            "rolling restart done: {roll_failed} of {roll_calls} calls failed"
        ));
        let dials = windows.seen.iter().map(|w| w.dials).sum();
        let calls = windows.seen.iter().map(Window::calls).sum();
        drop(guards);
        self.kubectl(&[
            "delete",
            "namespace",
            &ns,
            &format!("--timeout={}s", self.step.as_secs()),
        ])?;
        Ok(Row {
            system,
            shares,
            roll_failed,
            roll_calls,
            roll_codes,
            dials,
            calls,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// HAProxy on a free loopback port, one thread, round robin per request
    /// over the Service's pods as CoreDNS lists them (re-resolved every
    /// second), each checked every second, HTTP/2 on both sides.
    async fn front_proxy(&self, ns: &str) -> Result<((ScratchDir, Process), SocketAddr)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = ScratchDir::new("haproxy")?;
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, haproxy_conf(port, &self.dns, ns))?;
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&conf);
        let process = Process::spawn("haproxy", command).context("is haproxy installed?")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("HAProxy to listen", self.step, || async {
            tokio::net::TcpStream::connect(addr).await.ok()
        })
        .await?;
        Ok(((dir, process), addr))
    }

    /// Starts the system's client; its windows, and what must live while it runs.
    async fn start_client(&self, system: System, ns: &str) -> Result<(Windows, Guards)> {
        let on_node = |target: String, guards: Guards| -> Result<(Windows, Guards)> {
            let mut command = Command::new(&self.go);
            command
                .arg("-mode=client")
                .arg(format!("-target={target}"))
                .arg(format!("-rate={}", self.flags.rate))
                .env_clear();
            let process = Process::spawn(&format!("client-{}", system.slug()), command)?;
            let log = process.log_dir().join("stdout.log");
            let mut guards = guards;
            guards.process = Some(process);
            Ok((Windows::new(log, target), guards))
        };
        match system {
            System::ClusterIp | System::MaxConnectionAge => {
                let stand_in =
                    ClusterIpStandIn::start(self.client.clone(), ns, APP, self.step).await?;
                let target = stand_in.addr().to_string();
                on_node(
                    target,
                    Guards {
                        _stand_in: Some(stand_in),
                        ..Guards::default()
                    },
                )
            }
            System::RoundRobin => {
                let target = format!("dns://{}/{APP}.{ns}.svc.cluster.local:{PORT}", self.dns);
                on_node(target, Guards::default())
            }
            System::Haproxy => {
                let front = self.front_proxy(ns).await?;
                let target = front.1.to_string();
                on_node(
                    target,
                    Guards {
                        _front: Some(front.0),
                        ..Guards::default()
                    },
                )
            }
            System::Kuberesolver => {
                self.apply("rbac.json", kuberesolver_rbac(ns))?;
                let target = format!("kubernetes:///{APP}.{ns}:{PORT}");
                let args = vec!["-kuberesolver".to_owned(), format!("-target={target}")];
                let windows = self.client_pod(ns, args, json!({}), &target).await?;
                Ok((windows, Guards::default()))
            }
            System::Sidelb => {
                let target = format!("127.0.0.1:{LOCAL_PORT}");
                let args = vec![format!("-target={target}")];
                let annotations =
                    json!({"sidelb.io/upstreams": format!("{APP}:{PORT}={LOCAL_PORT}")});
                let shown = format!("{target} (its sidecar)");
                let windows = self.client_pod(ns, args, annotations, &shown).await?;
                Ok((windows, Guards::default()))
            }
        }
    }

    /// The client as pod `client` of `ns`, once Ready.
    async fn client_pod(
        &self,
        ns: &str,
        args: Vec<String>,
        annotations: Value,
        shown: &str,
    ) -> Result<Windows> {
        let mut args = args;
        args.push(format!("-rate={}", self.flags.rate));
        self.apply("client.json", vec![client_pod(ns, args, annotations)])?;
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        let pod = wait_until("the client pod to be Ready", self.step, || async {
            pods.get(CLIENT).await.ok().filter(ready)
        })
        .await?;
        let uid = pod.metadata.uid.clone().context("client pod uid")?;
        let log = self.agent.container_log(&uid, CLIENT);
        Ok(Windows::new(log, shown.to_owned()))
    }
}

/// What a client needs kept alive.
#[derive(Default)]
struct Guards {
    _stand_in: Option<ClusterIpStandIn>,
    _front: Option<(ScratchDir, Process)>,
    process: Option<Process>,
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn percent(share: Option<u64>) -> String {
    share.map_or_else(|| "-".to_owned(), |s| format!("{s}%"))
}

/// The client's window lines, read from its log as they come.
struct Windows {
    log: PathBuf,
    target: String,
    seen: Vec<Window>,
}

impl Windows {
    fn new(log: PathBuf, target: String) -> Self {
        Windows {
            log,
            target,
            seen: Vec::new(),
        }
    }

    async fn next(&mut self, within: Duration) -> Result<Window> {
        self.next_where(within, |_| true).await
    }

    /// The first window from now on that `wanted`; those before it are kept too.
    async fn next_where(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Window) -> bool,
    ) -> Result<Window> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log.clone();
            let seen = self.seen.len();
            let what = format!("window {} of the client", seen + 1);
            let left = deadline.saturating_duration_since(Instant::now());
            let line = wait_until(&what, left, || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let line = (text.lines())
                    .filter(|l| l.starts_with('{') && l.ends_with('}'))
                    .nth(seen)
                    .map(str::to_owned);
                std::future::ready(line)
            })
            .await
            .with_context(|| format!("reading {}", self.log.display()))?;
            let window: Window = serde_json::from_str(&line).context("the client's window line")?;
            self.seen.push(window.clone());
            if wanted(&window) {
                return Ok(window);
            }
        }
    }
}

fn app_objects(ns: &str, system: System) -> Vec<Value> {
    let labels = json!({"app": APP});
    let mut server_args = vec![
        "-mode=server".to_owned(),
        "-name=$(POD_NAME)".to_owned(),
        format!("-addr=0.0.0.0:{PORT}"),
    ];
    server_args.extend(system.server_args());
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": APP, "namespace": ns},
        "spec": {"selector": labels, "ports": [{"name": "grpc", "port": PORT, "targetPort": "grpc"}]},
    });
    if system.headless() {
        service["spec"]["clusterIP"] = json!("None");
    }
    vec![
        service,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "namespace": ns},
            "spec": {
                "replicas": FIRST,
                "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 10,
                        "containers": [{
                            "name": APP,
                            "image": format!("{GO_COMPARE_IMAGE}:dev"),
                            "args": server_args,
                            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "ports": [{"name": "grpc", "containerPort": PORT}],
                            "readinessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 1},
                        }],
                    },
                },
            },
        }),
    ]
}

fn haproxy_conf(port: u16, dns: &str, ns: &str) -> String {
    format!(
        "global\n  nbthread 1\n\
         resolvers cluster\n  nameserver coredns {dns}\n  accepted_payload_size 8192\n  hold valid 1s\n  timeout resolve 1s\n  timeout retry 1s\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
         frontend grpc\n  bind 127.0.0.1:{port} proto h2\n  default_backend pods\n\
         backend pods\n  balance roundrobin\n  \
         server-template pod {slots} {APP}.{ns}.svc.cluster.local:{PORT} proto h2 check inter 1s resolvers cluster resolve-prefer ipv4 init-addr none\n",
        slots = ALL + 2
    )
}

/// What kuberesolver's README asks for: reading the namespace's EndpointSlices.
fn kuberesolver_rbac(ns: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "kuberesolver", "namespace": ns},
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "kuberesolver", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kuberesolver"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
        }),
    ]
}

fn client_pod(ns: &str, args: Vec<String>, annotations: Value) -> Value {
    let mut all = vec!["-mode=client".to_owned()];
    all.extend(args);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": CLIENT, "namespace": ns, "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": CLIENT,
                "image": format!("{GO_COMPARE_IMAGE}:dev"),
                "args": all,
            }],
        },
    })
}

async fn run(flags: &Flags) -> Result<()> {
    let started = Instant::now();
    let systems = if flags.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        flags.systems.clone()
    };
    let go = sidelb_test_env::app("Go", GO_COMPARE_APP).context("`make deps-apps` builds it")?;
    let cluster = ControlPlane::read(&flags.cluster_dir)?;
    let dns = cluster.get("SIDELB_CLUSTER_DNS")?.to_owned();
    if dns.is_empty() && systems.contains(&System::RoundRobin) {
        bail!("the control plane has no CoreDNS: start it with `cluster/cluster.sh dns`");
    }
    let kubeconfig = cluster.kubeconfig();
    let client = admin(&kubeconfig).await?;
    let kubectl = Kubectl::new(&kubeconfig)?;
    println!("sidelb compare: the workarounds for gRPC balancing, run beside sidelb\n");
    let values = json!({
        "injector": {"replicas": 1, "podDisruptionBudget": {"enabled": false}},
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10},
    });
    let docs = chart::render(None, &values)?;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let file = kubectl.file("chart.json", &list.to_string());
    let output = kubectl.run(&["create", "namespace", NAMESPACE]);
    if !output.status.success() {
        bail!("kubectl create namespace {NAMESPACE}: {output:?}");
    }
    let output = kubectl.run(&["apply", "-f", &file.display().to_string()]);
    if !output.status.success() {
        bail!("applying the chart: {output:?}");
    }
    let agent = NodeAgent::spawn(&kubeconfig, &["node-a:zone-a"]).await?;
    let compare = Compare {
        kubectl,
        client,
        agent,
        dns,
        go,
        flags: Flags {
            systems: systems.clone(),
            ..flags.clone()
        },
        step: Duration::from_secs(flags.step_timeout_s),
        started,
    };
    compare
        .rollout(NAMESPACE, "sidelb-injector")
        .context("the injector did not get ready")?;
    compare.say(&format!(
        "control plane, CoreDNS ({}), node agent and the sidelb chart up",
        compare.dns
    ));
    let mut rows = Vec::new();
    for system in systems {
        let row = compare
            .scenario(system)
            .await
            .with_context(|| format!("the {} scenario", system.facts().name))?;
        rows.push(row);
    }
    print_table(&compare, &rows);
    if let Some(path) = &flags.json {
        let figures: Vec<Value> = rows.iter().map(Row::json).collect();
        let text = serde_json::to_string_pretty(&figures)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn admin(kubeconfig: &Path) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

fn print_table(compare: &Compare, rows: &[Row]) {
    let marks: Vec<String> = compare.marks().iter().map(|m| format!("{m} s")).collect();
    println!(
        "\nResults ({:.0} s in all; {} calls/s per client; a fair share for the 2 new pods of 5 is 40%)\n",
        compare.started.elapsed().as_secs_f64(),
        compare.flags.rate
    );
    println!(
        "| system | code or server change needed | new pods' share {} after scale-up | failed calls through the rolling restart | extra network hop | needs from the cluster |",
        marks.join(" / ")
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let facts = row.system.facts();
        let shares: Vec<String> = row.shares.iter().map(|(_, s)| percent(*s)).collect();
        println!(
            "| {} | {} | {} | {} of {} | {} | {} |",
            facts.name,
            facts.change,
            shares.join(" / "),
            row.roll_failed,
            row.roll_calls,
            facts.hop,
            facts.needs
        );
    }
    println!();
    for row in rows {
        let codes: Vec<String> = (row.roll_codes.iter())
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        let codes = match codes.is_empty() {
            true => String::new(),
            false => format!("; failed in the roll: {}", codes.join(", ")),
        };
        println!(
            "  {}: {} calls, {} connections dialled by the client, {:.0} s{codes}",
            row.system.facts().name,
            row.calls,
            row.dials,
            row.seconds
        );
    }
}
