//! `sidelb-demo-cluster` (`make demo-cluster`): the whole product path on the
//! local control plane of `make cluster`, no Docker.
//!
//! The chart, rendered by Helm's engine, is applied with `kubectl`; the node
//! agent runs its pods as local processes (the injector from the chart's
//! Deployment, serving the chart's certificate). A namespace is labelled for
//! injection, an app Deployment of three gRPC backends and a client pod are
//! created with `kubectl`, and kube-apiserver calls the webhook (over TLS,
//! verified against the chart's caBundle) to inject them. The client's app
//! keeps calls going on ONE connection to its sidecar; `kubectl scale` takes
//! the backends from 3 to 5 and the new pods take their share. Every figure is
//! counted by the client from replies that name the pod that served them.
//!
//! The control plane is started and stopped around it by the make target; the
//! node agent, and so every pod process, stops when this program ends. Exit
//! code 0 only if it showed: every pod injected, no failed call, every pod
//! serving in the last window.

use anyhow::{Context, Result, ensure};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use sidelb_tests::harness::chart::{self, NAMESPACE};
use sidelb_tests::harness::node_agent::{BACKEND_IMAGE, CLIENT_IMAGE};
use sidelb_tests::harness::{ControlPlane, Kubectl, NodeAgent, Tally, wait_until};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// The directory of the running control plane (`cluster/cluster.sh up`).
    #[arg(long, default_value = "target/cluster")]
    cluster_dir: PathBuf,
    /// Windows (one per second) shown before the scale-up.
    #[arg(long, default_value_t = 4)]
    windows_before: usize,
    /// Windows shown after the new pods are ready.
    #[arg(long, default_value_t = 5)]
    windows_after: usize,
    /// Bound on each step (a rollout, a pod getting ready).
    #[arg(long, default_value_t = 180)]
    step_timeout_s: u64,
}

const DEMO_NS: &str = "demo";
const APP: &str = "echo";
const PORT: u16 = 50051;
const LOCAL_PORT: u16 = 15001;
const FIRST: usize = 3;
const ALL: usize = 5;
const CLIENT: &str = "client";
const SIDECAR: &str = "sidelb-proxy";
/// The chart's binding of the proxies' ClusterRole (release `sidelb`).
const PROXY_BINDING: &str = "sidelb-proxy";

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    match run(&flags).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sidelb-demo-cluster: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Demo {
    kubectl: Kubectl,
    client: Client,
    step: Duration,
    started: Instant,
}

impl Demo {
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
        println!("[{:5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>> {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let mut pods = api
            .list(&ListParams::default().labels(selector))
            .await?
            .items;
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        Ok(pods)
    }
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Whether the injector added the sidecar, and how.
fn sidecar_of(pod: &Pod) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    let native = spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == SIDECAR);
    let classic = spec.containers.iter().any(|c| c.name == SIDECAR);
    match (native, classic) {
        (true, _) => Some("native sidecar"),
        (false, true) => Some("sidecar container"),
        (false, false) => None,
    }
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn run(flags: &Flags) -> Result<bool> {
    let started = Instant::now();
    let cluster = ControlPlane::read(&flags.cluster_dir)?;
    let kubeconfig = cluster.kubeconfig();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let demo = Demo {
        kubectl: Kubectl::new(&kubeconfig)?,
        client: Client::try_from(config)?,
        step: Duration::from_secs(flags.step_timeout_s),
        started,
    };
    println!("sidelb demo on a real control plane: per-request gRPC balancing of injected pods\n");
    let version = demo.kubectl(&["version", "-o", "json"])?;
    let version: Value = serde_json::from_str(&version).context("kubectl version")?;
    demo.say(&format!(
        "control plane up: kube-apiserver {} ({})",
        version["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap_or("?"),
        kubeconfig.display()
    ));

    // The chart, as Helm renders it, applied with kubectl.
    let values = json!({
        "injector": {"replicas": 1, "podDisruptionBudget": {"enabled": false}},
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10},
    });
    let docs = chart::render(None, &values)?;
    demo.kubectl(&["create", "namespace", NAMESPACE])?;
    let applied = demo.apply("chart.json", docs)?;
    demo.say(&format!(
        "chart applied with kubectl ({} objects), webhook failurePolicy Fail so an uninjected pod cannot slip through",
        applied.lines().count()
    ));

    // The node agent plays the kubelet for two nodes in two zones.
    let agent = NodeAgent::spawn(&kubeconfig, &["node-a:zone-a", "node-b:zone-b"]).await?;
    demo.say("node agent up: nodes node-a (zone-a) and node-b (zone-b)");
    demo.rollout(NAMESPACE, "sidelb-injector")
        .context("the injector from the chart's Deployment did not get ready")?;
    demo.say("injector ready (the chart's Deployment, serving the chart's certificate)");

    demo.kubectl(&["create", "namespace", DEMO_NS])?;
    demo.kubectl(&["label", "namespace", DEMO_NS, "sidelb.io/inject=enabled"])?;
    demo.say(&format!(
        "kubectl label namespace {DEMO_NS} sidelb.io/inject=enabled"
    ));

    demo.apply("app.json", app_objects())?;
    demo.rollout(DEMO_NS, APP)
        .context("the app's pods did not get ready")?;
    let backends = demo.pods(DEMO_NS, &format!("app={APP}")).await?;
    for pod in &backends {
        let how = sidecar_of(pod).with_context(|| format!("{} was not injected", name(pod)))?;
        demo.say(&format!("  {} ready, injected ({how})", name(pod)));
    }

    demo.apply("client.json", vec![client_pod()])?;
    let pods = Api::<Pod>::namespaced(demo.client.clone(), DEMO_NS);
    let client_pod = wait_until("the client pod to be Ready", demo.step, || async {
        pods.get(CLIENT).await.ok().filter(ready)
    })
    .await?;
    let how = sidecar_of(&client_pod).context("the client pod was not injected")?;
    demo.say(&format!(
        "client pod ready, injected ({how}); its app dials localhost:{LOCAL_PORT}, ONE connection"
    ));
    let binding = Api::<ClusterRoleBinding>::all(demo.client.clone())
        .get(PROXY_BINDING)
        .await?;
    let groups: Vec<String> = binding
        .subjects
        .into_iter()
        .flatten()
        .map(|s| s.name)
        .collect();
    demo.say(&format!(
        "the sidecars watch with their pods' own tokens: ClusterRoleBinding {PROXY_BINDING} \
         now binds {} (added by the injector)",
        groups.join(", ")
    ));
    let uid = client_pod.metadata.uid.clone().context("client pod uid")?;
    let log = agent.container_log(&uid, CLIENT);
    let mut windows = Windows::new(log);

    println!();
    let mut labels = Labels::default();
    labels.add(&backends);
    let mut before = Tally::default();
    // Windows begin once the client is connected; the first may be partial.
    windows.next(demo.step).await?;
    print_header();
    for _ in 0..flags.windows_before {
        let tally = windows.next(demo.step).await?;
        print_row(&demo, &tally, &labels);
        before.merge(&tally);
    }

    demo.kubectl(&[
        "-n",
        DEMO_NS,
        "scale",
        "deployment",
        APP,
        &format!("--replicas={ALL}"),
    ])?;
    println!(
        "  ---- kubectl scale deployment {APP} --replicas={ALL} at {:.1}s; same connection ----",
        demo.started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + demo.step;
    loop {
        let tally = windows.next(demo.step).await?;
        let pods = demo.pods(DEMO_NS, &format!("app={APP}")).await?;
        labels.add(&pods);
        print_row(&demo, &tally, &labels);
        let all_ready = pods.len() == ALL && pods.iter().all(ready);
        if all_ready && pods.iter().all(|p| tally.served_by(&name(p)) > 0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the new pods did not serve within {:?}",
            demo.step
        );
    }
    let scaled = demo.pods(DEMO_NS, &format!("app={APP}")).await?;
    for pod in &scaled[FIRST..] {
        let how = sidecar_of(pod).with_context(|| format!("{} was not injected", name(pod)))?;
        demo.say(&format!("  new pod {} ready, injected ({how})", name(pod)));
    }
    let mut last = Tally::default();
    for _ in 0..flags.windows_after {
        last = windows.next(demo.step).await?;
        print_row(&demo, &last, &labels);
    }
    let total = windows.total();
    Ok(summarize(&demo, &labels, &before, &last, &total))
}

fn app_objects() -> Vec<Value> {
    let labels = json!({"app": APP});
    vec![
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": APP, "namespace": DEMO_NS},
            "spec": {"selector": labels, "ports": [{"name": "grpc", "port": PORT, "targetPort": "grpc"}]},
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "namespace": DEMO_NS},
            "spec": {
                "replicas": FIRST,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{
                            "name": APP,
                            "image": format!("{BACKEND_IMAGE}:dev"),
                            "args": ["--name=$(POD_NAME)", format!("--addr=0.0.0.0:{PORT}")],
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

fn client_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": CLIENT, "namespace": DEMO_NS,
            "annotations": {"sidelb.io/upstreams": format!("{APP}:{PORT}={LOCAL_PORT}")},
        },
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": CLIENT,
                "image": format!("{CLIENT_IMAGE}:dev"),
                "args": [format!("--target=127.0.0.1:{LOCAL_PORT}"), "--duration-s=600"],
            }],
        },
    })
}

/// The client's `window {tally}` lines, read from its log as they come.
struct Windows {
    log: PathBuf,
    seen: usize,
    total: Tally,
}

impl Windows {
    fn new(log: PathBuf) -> Self {
        Windows {
            log,
            seen: 0,
            total: Tally::default(),
        }
    }

    /// The next window the client printed.
    async fn next(&mut self, within: Duration) -> Result<Tally> {
        let log = self.log.clone();
        let seen = self.seen;
        let tally = wait_until("the client's next window", within, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let line = text
                .lines()
                .filter_map(|l| l.strip_prefix("window "))
                .nth(seen)
                .map(str::to_owned);
            std::future::ready(line)
        })
        .await
        .with_context(|| format!("reading {}", self.log.display()))?;
        self.seen += 1;
        let tally: Tally = serde_json::from_str(&tally).context("the client's window line")?;
        self.total.merge(&tally);
        Ok(tally)
    }

    /// Every window read so far.
    fn total(&self) -> Tally {
        self.total.clone()
    }
}

/// Short column labels (`pod-1`, …) for the app's pods, in creation order.
#[derive(Default)]
struct Labels {
    pods: BTreeMap<usize, String>,
}

impl Labels {
    fn add(&mut self, pods: &[Pod]) {
        for pod in pods {
            let name = name(pod);
            if !self.pods.values().any(|p| *p == name) {
                self.pods.insert(self.pods.len() + 1, name);
            }
        }
    }
}

fn share(tally: &Tally, pod: &str) -> u64 {
    match tally.total() {
        0 => 0,
        total => (tally.served_by(pod) * 100 + total / 2) / total,
    }
}

fn failed(tally: &Tally) -> u64 {
    tally.total() - tally.ok()
}

fn print_header() {
    let mut line = format!("  {:>7} ", "at");
    for n in 1..=ALL {
        line.push_str(&format!("{:>7}", format!("pod-{n}")));
    }
    println!("{line}{:>10}{:>8}", "calls", "failed");
}

fn print_row(demo: &Demo, tally: &Tally, labels: &Labels) {
    let mut line = format!("  {:>6.1}s ", demo.started.elapsed().as_secs_f64());
    for n in 1..=ALL {
        match labels.pods.get(&n) {
            Some(pod) => line.push_str(&format!("{:>6}%", share(tally, pod))),
            None => line.push_str(&format!("{:>7}", "-")),
        }
    }
    println!("{line}{:>10}{:>8}", tally.total(), failed(tally));
}

fn summarize(demo: &Demo, labels: &Labels, before: &Tally, last: &Tally, total: &Tally) -> bool {
    println!("\nPods:");
    for (n, pod) in &labels.pods {
        println!("  pod-{n} = {pod}");
    }
    let shares = |tally: &Tally| {
        let shares = labels
            .pods
            .iter()
            .filter(|(_, pod)| tally.backends().contains_key(*pod));
        let shares = shares.map(|(n, pod)| format!("pod-{n} {}%", share(tally, pod)));
        shares.collect::<Vec<_>>().join(", ")
    };
    println!("\nSummary ({:.0}s)", demo.started.elapsed().as_secs_f64());
    println!(
        "  {} calls on one client connection through its injected sidecar, {} failed.",
        total.total(),
        failed(total)
    );
    println!("    before scale-up: {}", shares(before));
    println!("    last window:     {}", shares(last));
    let idle: Vec<&str> = labels
        .pods
        .values()
        .filter(|pod| last.served_by(pod) == 0)
        .map(String::as_str)
        .collect();
    let failed = failed(total);
    if idle.is_empty() && failed == 0 {
        println!(
            "  Every pod, the {FIRST} first and the {} added by kubectl scale, served its share of one connection's calls.",
            ALL - FIRST
        );
        true
    } else {
        if !idle.is_empty() {
            println!(
                "  NOT SHOWN: {} served no call in the last window.",
                idle.join(", ")
            );
        }
        if failed > 0 {
            println!("  NOT SHOWN: {failed} calls failed.");
        }
        false
    }
}
