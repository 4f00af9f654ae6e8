//! A small real cluster for end-to-end tests: a private control plane
//! ([`ControlPlane::private`]), a node agent running its pods as local
//! processes ([`NodeAgent`]), and an admin client, with what tests do to it
//! in Kubernetes' own terms: apply objects, scale and restart Deployments,
//! delete pods, wait for pods the way `kubectl rollout status` does.
//!
//! Pods of [`backend_deployment`] are `sidelb-test-backend` processes named
//! after their pod (so a call's reply says which pod served it), each on its
//! own pod IP, ready while their readiness probe passes: the real
//! EndpointSlice controller turns that into slices. The probe is an `exec`
//! of `test ! -e FLAG` with a flag file per pod ([`Kube::fail_readiness`]),
//! so a test makes a pod fail readiness without touching its process.
//!
//! [`Kube::proxy_kubeconfig`] is what a sidecar gets in a pod: a
//! service-account token issued by the API server (TokenRequest), allowed by
//! RBAC exactly what the chart grants the proxies of a namespace where it
//! injected a pod. A proxy run with it as a binary is checked by the real
//! authenticator and authorizer on every request.

use super::chart;
use super::control_plane::ControlPlane;
use super::http_get::get_https;
use super::metrics::{self, Sample};
use super::node_agent::{BACKEND_IMAGE, NodeAgent};
use super::process::Process;
use super::scratch::ScratchDir;
use super::wait::wait_until;
use anyhow::{Context, Result, bail};
use base64::Engine;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on what the controllers and the agent bring about on a busy
/// machine (a pod started and probed, a slice written, a rollout step).
pub const KUBE_WAIT: Duration = Duration::from_secs(90);
/// The field manager of the tests' server-side applies.
const MANAGER: &str = "sidelb-tests";
/// The node the agent runs, and its zone.
pub const NODE: &str = "node-a:zone-1";
/// The chart's ClusterRole (and binding) for the proxies: read Services,
/// EndpointSlices and Nodes.
const PROXY_ROLE: &str = "sidelb-proxy";
/// The chart's injector: its Deployment, Service and ServiceAccount.
const INJECTOR: &str = "sidelb-injector";
/// The chart's Secret with the injector's certificate and its CA.
const INJECTOR_TLS_SECRET: &str = "sidelb-injector-tls";
/// Life of the proxy's token: longer than any test.
const TOKEN_SECONDS: i64 = 3600;

/// Kinds that live outside namespaces, among those tests apply.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
];

/// A pod as the API server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub ready: bool,
    pub deleting: bool,
    /// The node it is bound to.
    pub node: Option<String>,
}

pub struct Kube {
    pub client: Client,
    namespace: String,
    files: ScratchDir,
    // Dropped in this order: the agent stops its pods while the API server
    // still answers, then the control plane goes.
    agent: NodeAgent,
    plane: ControlPlane,
}

impl Kube {
    /// A private control plane, a node agent for [`NODE`], and `namespace`
    /// (made unless it is `default`) with its default ServiceAccount.
    pub async fn start(namespace: &str) -> Result<Kube> {
        Self::start_on(namespace, &[NODE]).await
    }

    /// [`Kube::start`] with a node agent for `nodes` (`NAME:ZONE` each).
    pub async fn start_on(namespace: &str, nodes: &[&str]) -> Result<Kube> {
        let plane = tokio::task::spawn_blocking(ControlPlane::private)
            .await
            .context("starting the control plane")?
            .context("make cluster")?;
        let client = admin_client(&plane.kubeconfig()).await?;
        let agent = NodeAgent::spawn(&plane.kubeconfig(), nodes).await?;
        let kube = Kube {
            client,
            namespace: namespace.to_owned(),
            files: ScratchDir::new("kube")?,
            agent,
            plane,
        };
        if namespace != "default" {
            kube.apply(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace},
            }))
            .await?;
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(kube.client.clone(), namespace);
        wait_until(
            "the namespace's default ServiceAccount",
            KUBE_WAIT,
            || async { accounts.get_opt("default").await.ok().flatten() },
        )
        .await?;
        Ok(kube)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    pub fn agent(&self) -> &NodeAgent {
        &self.agent
    }

    /// Creates or updates an object (server-side apply, forced), in its
    /// `metadata.namespace` or else the test's, unless its kind is
    /// cluster-scoped.
    pub async fn apply(&self, object: Value) -> Result<()> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&self.namespace);
        let api: Api<DynamicObject> = if CLUSTER_SCOPED.contains(&kind) {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        };
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
        Ok(())
    }

    /// Deletes an object of the test's namespace by API version, kind and
    /// name, as `kubectl delete` would.
    pub async fn delete(&self, api_version: &str, kind: &str, name: &str) -> Result<()> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting {kind} {name}"))?;
        Ok(())
    }

    /// Deletes pod `name` with the grace period it asks for.
    pub async fn delete_pod(&self, name: &str) -> Result<()> {
        self.pods_api()
            .delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting pod {name}"))?;
        Ok(())
    }

    /// Sets a Deployment's replicas, as `kubectl scale` does.
    pub async fn scale(&self, deployment: &str, replicas: i32) -> Result<()> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.deployments()
            .patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("scaling {deployment}"))?;
        Ok(())
    }

    /// Sets a StatefulSet's replicas, as `kubectl scale` does.
    pub async fn scale_statefulset(&self, name: &str, replicas: i32) -> Result<()> {
        let patch = json!({"spec": {"replicas": replicas}});
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("scaling {name}"))?;
        Ok(())
    }

    /// A new generation of a Deployment's pods, as `kubectl rollout restart`
    /// does (a changed annotation on the pod template).
    pub async fn restart(&self, deployment: &str, generation: u32) -> Result<()> {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": format!("generation-{generation}"),
        }}}}});
        self.deployments()
            .patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("restarting {deployment}"))?;
        Ok(())
    }

    /// Waits until a Deployment's rollout is done, as `kubectl rollout
    /// status` judges it: every replica updated and available, no old one left.
    pub async fn wait_rollout(&self, deployment: &str) -> Result<()> {
        self.wait_rollout_in(&self.namespace, deployment).await
    }

    /// [`Kube::wait_rollout`] for a Deployment of namespace `namespace`.
    pub async fn wait_rollout_in(&self, namespace: &str, deployment: &str) -> Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("the rollout of {namespace}/{deployment} to finish");
        wait_until(&what, KUBE_WAIT, || async {
            let d = api.get(deployment).await.ok()?;
            let want = d.spec.as_ref()?.replicas.unwrap_or(1);
            let status = d.status.as_ref()?;
            let done = status.observed_generation >= d.metadata.generation
                && status.updated_replicas == Some(want)
                && status.available_replicas == Some(want)
                && status.replicas == Some(want);
            done.then_some(())
        })
        .await
    }

    /// The pods labelled `app=APP`, by name.
    pub async fn pods(&self, app: &str) -> Result<Vec<PodView>> {
        let list = self
            .pods_api()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .with_context(|| format!("listing the pods of {app}"))?;
        let mut pods: Vec<PodView> = list.items.iter().map(view).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Waits until `app` has exactly `n` pods, all ready and none deleting.
    pub async fn wait_ready_pods(&self, app: &str, n: usize) -> Result<Vec<PodView>> {
        let what = format!("{n} ready pods of {app}");
        let found = wait_until(&what, KUBE_WAIT, || async {
            let pods = self.pods(app).await.ok()?;
            (pods.len() == n
                && pods
                    .iter()
                    .all(|p| p.ready && !p.deleting && p.ip.is_some()))
            .then_some(pods)
        })
        .await;
        match found {
            Ok(pods) => Ok(pods),
            Err(e) => bail!("{e:#}; the pods now: {:?}", self.pods(app).await),
        }
    }

    /// Waits until pod `name` is gone from the API server.
    pub async fn wait_pod_gone(&self, name: &str) -> Result<()> {
        let api = self.pods_api();
        wait_until(&format!("pod {name} to be gone"), KUBE_WAIT, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await
    }

    /// The EndpointSlices of Service `service`, by name.
    pub async fn slices(&self, service: &str) -> Result<Vec<EndpointSlice>> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let by_service =
            ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let mut slices = api
            .list(&by_service)
            .await
            .with_context(|| format!("listing the EndpointSlices of {service}"))?
            .items;
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(slices)
    }

    /// Makes pod `name`'s readiness probe fail (`true`) or pass again.
    pub fn fail_readiness(&self, name: &str, fail: bool) -> Result<()> {
        let flag = self.flag(name);
        if fail {
            std::fs::write(&flag, b"").with_context(|| format!("writing {}", flag.display()))
        } else {
            std::fs::remove_file(&flag).with_context(|| format!("removing {}", flag.display()))
        }
    }

    fn flag(&self, pod: &str) -> PathBuf {
        self.files.path().join(format!("unready-{pod}"))
    }

    /// A Deployment of `replicas` test backends labelled `app=APP`, each
    /// listening on `port` under the container port name `grpc`; one pod at
    /// a time is replaced, the new one ready before an old one goes.
    pub fn backend_deployment(&self, app: &str, replicas: i32, port: u16) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": app}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": self.backend_spec(port),
                },
            },
        })
    }

    /// A StatefulSet of `replicas` test backends labelled `app=APP` (pods
    /// `APP-0`, `APP-1`, …) governed by the headless Service `service`, each
    /// listening on `port` under the container port name `grpc`.
    pub fn backend_statefulset(&self, app: &str, replicas: i32, port: u16, service: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": app},
            "spec": {
                "replicas": replicas,
                "serviceName": service,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": self.backend_spec(port),
                },
            },
        })
    }

    /// Pod `name` of `app`: one test backend on `port` (named `grpc`).
    pub fn backend_pod(&self, name: &str, app: &str, port: u16) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": self.backend_spec(port),
        })
    }

    fn backend_spec(&self, port: u16) -> Value {
        let flag = self.files.path().join("unready-$POD_NAME");
        json!({
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "backend",
                "image": format!("{BACKEND_IMAGE}:dev"),
                "args": ["--name=$(POD_NAME)", format!("--addr=0.0.0.0:{port}")],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "grpc", "containerPort": port}],
                "readinessProbe": {
                    "exec": {"command": ["/bin/sh", "-c", format!("test ! -e {}", flag.display())]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }],
        })
    }

    /// The chart installed (or upgraded) as a user does it: rendered by
    /// Helm's engine with `values` (its `lookup` reading this cluster, as in
    /// `helm upgrade --install`), the release namespace made, every object applied, and
    /// the injector's Deployment rolled out by the node agent (its pod
    /// serving the chart's certificate, reached by kube-apiserver through
    /// the Service's endpoints, which list it). Returns the rendered objects.
    pub async fn install_chart(&self, values: &Value) -> Result<Vec<Value>> {
        let docs = chart::render(Some(&self.plane.kubeconfig()), values)?;
        self.apply(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": chart::NAMESPACE},
        }))
        .await?;
        for doc in &docs {
            self.apply(doc.clone()).await?;
        }
        self.wait_rollout_in(chart::NAMESPACE, INJECTOR)
            .await
            .with_context(|| {
                let log = self.agent.process().map(Process::diagnostics);
                format!(
                    "the injector's pod did not get ready; node agent:\n{}",
                    log.unwrap_or_default()
                )
            })?;
        let last_error = std::sync::Mutex::new(String::new());
        let what = "the injector's Service to have a ready endpoint that answers";
        let answered = wait_until(what, KUBE_WAIT, || async {
            let result = self.injector_metrics(&docs).await;
            if let (Err(e), Ok(mut last)) = (&result, last_error.lock()) {
                *last = format!("{e:#}");
            }
            result.ok()
        })
        .await;
        if let Err(e) = answered {
            let last = last_error.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("{e:#}; the last try: {last}");
        }
        Ok(docs)
    }

    /// The injector's `/metrics` from each of its ready pods (where the
    /// Service's EndpointSlice says they are), over TLS verified against the
    /// chart's CA under the Service's DNS name, as kube-apiserver verifies it.
    pub async fn injector_metrics(&self, docs: &[Value]) -> Result<Vec<Sample>> {
        let secret = chart::find(docs, "Secret", INJECTOR_TLS_SECRET)?;
        let ca = secret["data"]["ca.crt"]
            .as_str()
            .context("the chart's Secret has no ca.crt")?;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .context("ca.crt is not base64")?;
        let ca = String::from_utf8(ca).context("ca.crt is not PEM text")?;
        let server_name = format!("{INJECTOR}.{}.svc", chart::NAMESPACE);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), chart::NAMESPACE);
        let by_service =
            ListParams::default().labels(&format!("kubernetes.io/service-name={INJECTOR}"));
        let mut samples = Vec::new();
        let mut answered = 0;
        for slice in slices.list(&by_service).await?.items {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find_map(|p| p.port)
                .context("the injector's EndpointSlice has no port")?;
            for endpoint in &slice.endpoints {
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
                if ready != Some(true) {
                    continue;
                }
                for address in &endpoint.addresses {
                    let ip: IpAddr = address
                        .parse()
                        .with_context(|| format!("endpoint address {address:?}"))?;
                    let addr = SocketAddr::new(ip, port as u16);
                    let (status, body) = get_https(addr, &server_name, &ca, "/metrics").await?;
                    if !status.is_success() {
                        bail!("GET /metrics from the injector at {addr}: {status}: {body}");
                    }
                    samples.extend(metrics::parse(&body));
                    answered += 1;
                }
            }
        }
        if answered == 0 {
            bail!("the injector's Service has no ready endpoint");
        }
        Ok(samples)
    }

    /// A kubeconfig for ServiceAccount `account` of the test's namespace with
    /// a token from the TokenRequest API, and the grant the chart gives the
    /// proxies of a namespace where a pod was injected
    /// ([`Kube::grant_proxy_access`]).
    pub async fn proxy_kubeconfig(&self, account: &str) -> Result<PathBuf> {
        self.grant_proxy_access().await?;
        self.token_kubeconfig(account).await
    }

    /// The chart's `sidelb-proxy` ClusterRole (read Services, EndpointSlices
    /// and Nodes) bound to the group of the test namespace's service accounts.
    pub async fn grant_proxy_access(&self) -> Result<()> {
        self.apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": PROXY_ROLE},
            "rules": [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            ],
        }))
        .await?;
        self.apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": PROXY_ROLE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PROXY_ROLE},
            "subjects": [{
                "kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                "name": format!("system:serviceaccounts:{}", self.namespace),
            }],
        }))
        .await
    }

    /// A kubeconfig for ServiceAccount `account` of the test's namespace
    /// (made if missing) with a token from the TokenRequest API, and only
    /// what RBAC already grants it.
    pub async fn token_kubeconfig(&self, account: &str) -> Result<PathBuf> {
        self.apply(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account},
        }))
        .await?;
        let token = self.token(account).await?;
        let path = self.files.path().join(format!("kubeconfig-{account}"));
        write_token_kubeconfig(&self.plane.kubeconfig(), &token, &self.namespace, &path)?;
        Ok(path)
    }

    /// A token of ServiceAccount `account`, from the TokenRequest API.
    pub async fn token(&self, account: &str) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token for ServiceAccount {account}"))?;
        Ok(issued.status.context("TokenRequest without status")?.token)
    }

    /// Stops kube-apiserver (SIGKILL: no goodbye to its clients) and waits
    /// until it is gone.
    pub async fn kill_apiserver(&self) -> Result<()> {
        let pid = self
            .plane
            .pid("kube-apiserver")
            .context("kube-apiserver is not running")?;
        // SAFETY: kill(2) on a pid this test's control plane started.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        wait_until("kube-apiserver to exit", KUBE_WAIT, || async {
            let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
            (!proc.exists()
                || status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z')))
            .then_some(())
        })
        .await
    }

    /// `cluster/cluster.sh up`: starts what is not running (on the same
    /// port when it is free) and waits until it is ready.
    pub async fn up(&mut self) -> Result<()> {
        let dir = self.plane.dir().to_path_buf();
        let before = self
            .plane
            .get("SIDELB_CLUSTER_SERVER")
            .ok()
            .map(str::to_owned);
        tokio::task::spawn_blocking(move || ControlPlane::read(&dir)?.script(&["up"]).map(drop))
            .await
            .context("cluster.sh up")??;
        self.plane.reread()?;
        let after = self
            .plane
            .get("SIDELB_CLUSTER_SERVER")
            .ok()
            .map(str::to_owned);
        if before != after {
            bail!("the API server came back on another address ({before:?} → {after:?})");
        }
        Ok(())
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// A client with the admin kubeconfig at `path`.
pub async fn admin_client(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path).context("reading the admin kubeconfig")?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the admin kubeconfig")?;
    Client::try_from(config).context("an admin client")
}

/// The admin kubeconfig at `admin` with its user replaced by `token` and
/// `namespace` as the context's, written to `path`.
fn write_token_kubeconfig(admin: &Path, token: &str, namespace: &str, path: &Path) -> Result<()> {
    let mut kubeconfig = Kubeconfig::read_from(admin).context("reading the admin kubeconfig")?;
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        });
    }
    for context in &mut kubeconfig.contexts {
        if let Some(context) = context.context.as_mut() {
            context.namespace = Some(namespace.to_owned());
        }
    }
    let text = serde_saphyr::to_string(&kubeconfig).context("writing a kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn view(pod: &Pod) -> PodView {
    let status = pod.status.as_ref();
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ip: status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    }
}
