//! The injector as a user meets it, on the real control plane: the chart
//! rendered by Helm's engine and applied, its injector run by the node agent
//! from the chart's Deployment (serving the chart's certificate), and pods
//! created with `kubectl create -f` and read back with `kubectl get -o json`.
//! kube-apiserver decides everything the fake API server used to imitate: its
//! admission chain calls the chart's two webhooks at the injector Service's
//! endpoints over TLS verified against the chart's caBundle, ServiceAccount
//! admission runs before and after them, `reinvocationPolicy: IfNeeded` and
//! `failurePolicy` are its own.
//!
//! - The webhooks' selectors: every pod of a namespace labelled
//!   `sidelb.io/inject=enabled`, pods labelled so elsewhere, never a pod or
//!   namespace labelled `disabled`, nor the release's namespace. Pods the
//!   webhooks do not select never reach the injector (its `/metrics` say so).
//! - An injected pod carries the native sidecar once, its annotations' values
//!   in the sidecar's env and its app containers exactly as where nothing is
//!   injected; when admission calls the injector again it adds nothing.
//! - Pods a ReplicaSet controller creates from a Deployment are injected too.
//! - An invalid annotation is refused with the injector's message.
//! - With the injector scaled to zero, `failurePolicy: Ignore` lets pods in
//!   without the sidecar and `Fail` refuses them with kube-apiserver's message;
//!   scaled back, pods are injected again.
//!
//! The test pods ask for a node no agent has (`nodeSelector`), so they stay
//! Pending: what is judged here is admission; `demo_cluster` runs injected pods.

use serde_json::{Value, json};
use sidelb_tests::harness::kube_cluster::{KUBE_WAIT, Kube};
use sidelb_tests::harness::metrics::{Sample, sum};
use sidelb_tests::harness::{Kubectl, wait_until};

const NAMESPACE_WEBHOOK: &str = "namespace.inject.sidelb.io";
const REQUESTS: &str = "sidelb_injector_admission_requests_total";
/// The chart's default proxy image.
const PROXY_IMAGE: &str = "sidelb/proxy:0.1.0";
const INJECTOR: &str = "sidelb-injector";
/// The chart's release namespace.
const RELEASE_NS: &str = sidelb_tests::harness::chart::NAMESPACE;

/// Keeps a pod Pending: no node of the agent carries this label.
const NOT_SCHEDULED: &str = r#"{"sidelb.test/node": "none"}"#;

/// A named pod with per-pod proxy settings.
fn client_pod() -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {{app: client}}
  annotations:
    sidelb.io/upstreams: "greeter.shop:50051=15001,billing:9000=15002"
    sidelb.io/balancer: round-robin
    sidelb.io/log-level: debug
    team.example/owner: orders
spec:
  nodeSelector: {NOT_SCHEDULED}
  containers:
  - name: app
    image: example/client:1
    args: ["--greeter", "127.0.0.1:15001"]
    ports: [{{containerPort: 8080, name: http}}]
    env: [{{name: GREETER_ADDR, value: "127.0.0.1:15001"}}]
"#
    )
}

/// A pod without a name, as a ReplicaSet creates them, with `labels`.
fn worker_pod(labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  generateName: worker-
  labels: {labels}
spec:
  nodeSelector: {NOT_SCHEDULED}
  containers:
  - name: app
    image: example/worker:1
"#
    )
}

fn bad_pod() -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations:
    sidelb.io/balancer: random
spec:
  nodeSelector: {NOT_SCHEDULED}
  containers:
  - name: app
    image: example/app:1
"#
    )
}

fn deployment() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-api
spec:
  replicas: 2
  selector: {{matchLabels: {{app: shop-api}}}}
  template:
    metadata:
      labels: {{app: shop-api}}
    spec:
      nodeSelector: {NOT_SCHEDULED}
      containers:
      - name: app
        image: example/shop-api:1
"#
    )
}

/// A private control plane and node agent with the chart installed, the
/// namespaces of the scenarios (`shop` enabled, `plain` unlabelled, `optout`
/// disabled) and kubectl pointed at it.
struct Cluster {
    kube: Kube,
    kubectl: Kubectl,
    docs: Vec<Value>,
}

impl Cluster {
    async fn start(failure_policy: &str) -> Cluster {
        let kube = Kube::start("shop")
            .await
            .unwrap_or_else(|e| panic!("a real cluster: {e:#}"));
        let values = json!({
            "injector": {"replicas": 1, "podDisruptionBudget": {"enabled": false}},
            "webhook": {"failurePolicy": failure_policy},
        });
        let docs = kube
            .install_chart(&values)
            .await
            .unwrap_or_else(|e| panic!("installing the chart: {e:#}"));
        let kubectl = Kubectl::new(&kube.plane().kubeconfig()).expect("kubectl scratch dir");
        let cluster = Cluster {
            kube,
            kubectl,
            docs,
        };
        cluster
            .kubectl
            .ok(&["label", "namespace", "shop", "sidelb.io/inject=enabled"]);
        cluster.kubectl.ok(&["create", "namespace", "plain"]);
        cluster.kubectl.ok(&["create", "namespace", "optout"]);
        cluster
            .kubectl
            .ok(&["label", "namespace", "optout", "sidelb.io/inject=disabled"]);
        for ns in ["plain", "optout"] {
            let what = format!("the default ServiceAccount of {ns}");
            wait_until(&what, KUBE_WAIT, || async {
                let out = cluster
                    .kubectl
                    .run(&["get", "serviceaccount", "default", "-n", ns]);
                out.status.success().then_some(())
            })
            .await
            .unwrap();
        }
        cluster
    }

    fn create_args<'a>(path: &'a str, namespace: &'a str) -> Vec<&'a str> {
        vec!["create", "-f", path, "-n", namespace]
    }

    /// `kubectl create -f FILE -n NS` for one pod, which must succeed; the
    /// pod's name as kubectl printed it.
    fn create_pod(&self, file: &str, manifest: &str, namespace: &str) -> String {
        let path = self.kubectl.file(file, manifest);
        let path = path.to_str().expect("utf-8 path");
        let out = self.kubectl.ok(&Self::create_args(path, namespace));
        out.trim()
            .strip_prefix("pod/")
            .and_then(|l| l.strip_suffix(" created"))
            .unwrap_or_else(|| panic!("unexpected kubectl output {out:?}"))
            .to_owned()
    }

    /// `kubectl create -f FILE -n NS`, which must fail; the path and stderr.
    fn create_fails(&self, file: &str, manifest: &str, namespace: &str) -> (String, String) {
        let path = self.kubectl.file(file, manifest);
        let path = path.to_str().expect("utf-8 path").to_owned();
        let err = self.kubectl.fails(&Self::create_args(&path, namespace));
        (path, err)
    }

    /// Creates a pod from `manifest` in `namespace` and reads it back.
    fn created(&self, manifest: &str, namespace: &str) -> Value {
        let name = self.create_pod("pod.yaml", manifest, namespace);
        self.get_pod(namespace, &name)
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Value {
        self.kubectl.json(&["get", "pod", name, "-n", namespace])
    }

    fn pod_is_absent(&self, namespace: &str, name: &str) {
        let err = self.kubectl.fails(&["get", "pod", name, "-n", namespace]);
        assert_eq!(
            err.trim(),
            format!("Error from server (NotFound): pods \"{name}\" not found")
        );
    }

    async fn metrics(&self) -> Vec<Sample> {
        self.kube
            .injector_metrics(&self.docs)
            .await
            .unwrap_or_else(|e| panic!("the injector's /metrics: {e:#}"))
    }

    /// `kubectl scale` of the injector's Deployment, waited for: with 0, no
    /// endpoint of its Service is left; with more, they are all ready.
    async fn scale_injector(&self, replicas: u32) {
        let replicas_arg = format!("--replicas={replicas}");
        self.kubectl.ok(&[
            "scale",
            "deployment",
            INJECTOR,
            "-n",
            RELEASE_NS,
            &replicas_arg,
        ]);
        if replicas > 0 {
            self.kube
                .wait_rollout_in(RELEASE_NS, INJECTOR)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            return;
        }
        wait_until("the injector's pods to be gone", KUBE_WAIT, || async {
            let pods = self.kubectl.json(&[
                "get",
                "pods",
                "-n",
                RELEASE_NS,
                "-l",
                "app.kubernetes.io/component=injector",
            ]);
            pods["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
                .then_some(())
        })
        .await
        .unwrap();
    }
}

/// Every container of the pod named `sidelb-proxy`, regular or init.
fn proxies(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|list| pod["spec"][list].as_array())
        .flatten()
        .filter(|c| c["name"] == "sidelb-proxy")
        .collect()
}

/// The value of `name` in a container's env: a literal or a downward-API field path.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    let var = container["env"]
        .as_array()
        .and_then(|vars| vars.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in the proxy's env: {container}"));
    var.get("value")
        .unwrap_or(&var["valueFrom"]["fieldRef"]["fieldPath"])
}

/// The pod carries the native sidecar exactly once, first among its init containers.
fn assert_injected_once(pod: &Value) -> &Value {
    let found = proxies(pod);
    assert_eq!(found.len(), 1, "one sidelb-proxy: {pod:#}");
    let proxy = &pod["spec"]["initContainers"][0];
    assert_eq!(proxy["name"], "sidelb-proxy", "first init container");
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(proxy["image"], PROXY_IMAGE);
    assert!(proxy["startupProbe"].is_object(), "{proxy:#}");
    assert_eq!(env(proxy, "POD_NAME"), "metadata.name");
    assert_eq!(env(proxy, "POD_NAMESPACE"), "metadata.namespace");
    assert!(
        pod["metadata"]["annotations"]["sidelb.io/injected"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{pod:#}"
    );
    proxy
}

fn assert_not_injected(pod: &Value) {
    assert!(proxies(pod).is_empty(), "{pod:#}");
    assert!(pod["spec"].get("initContainers").is_none(), "{pod:#}");
    assert!(
        pod["metadata"]["annotations"]
            .get("sidelb.io/injected")
            .is_none(),
        "{pod:#}"
    );
}

/// The pod's containers, with the random suffix of the ServiceAccount token
/// volume's name (`kube-api-access-xxxxx`) left out, so that two pods compare.
fn app_containers(pod: &Value) -> Value {
    let mut containers = pod["spec"]["containers"].clone();
    for container in containers.as_array_mut().expect("containers") {
        for mount in container["volumeMounts"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if mount["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
            {
                mount["name"] = json!("kube-api-access-*");
            }
        }
    }
    containers
}

fn requests(samples: &[Sample], result: &str, reason: &str) -> f64 {
    sum(samples, REQUESTS, &[("result", result), ("reason", reason)]).unwrap_or(0.0)
}

fn all_requests(samples: &[Sample]) -> f64 {
    sum(samples, REQUESTS, &[]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_injected_once_where_the_charts_webhooks_select_them() {
    let cluster = Cluster::start("Fail").await;

    // The same pod where nothing is injected: the API server's own defaults,
    // nothing else, and the injector is not called at all.
    let plain = cluster.created(&client_pod(), "plain");
    assert_not_injected(&plain);
    assert_eq!(all_requests(&cluster.metrics().await), 0.0);

    let pod = cluster.created(&client_pod(), "shop");
    let proxy = assert_injected_once(&pod);
    assert_eq!(
        env(proxy, "SIDELB_UPSTREAMS"),
        "greeter.shop:50051=15001,billing:9000=15002"
    );
    assert_eq!(env(proxy, "SIDELB_BALANCER"), "round-robin");
    assert_eq!(env(proxy, "SIDELB_LOG"), "debug");
    assert_eq!(
        app_containers(&pod),
        app_containers(&plain),
        "the app container is untouched"
    );
    for (key, value) in plain["metadata"]["annotations"].as_object().expect("map") {
        assert_eq!(&pod["metadata"]["annotations"][key], value, "{key} kept");
    }
    assert_eq!(pod["metadata"]["labels"], plain["metadata"]["labels"]);
    assert!(
        proxy["volumeMounts"]
            .to_string()
            .contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "ServiceAccount admission, run again after the webhook, mounted the token into the proxy: {proxy:#}"
    );
    let samples = cluster.metrics().await;
    assert_eq!(requests(&samples, "injected", "native-sidecar"), 1.0);
    let reinvoked = requests(&samples, "skipped", "already-injected");
    assert_eq!(
        all_requests(&samples),
        1.0 + reinvoked,
        "a second call, if any, is a reinvocation that adds nothing"
    );

    let worker = cluster.created(&worker_pod("{app: worker}"), "shop");
    let name = worker["metadata"]["name"].as_str().expect("name");
    assert!(
        name.strip_prefix("worker-")
            .is_some_and(|suffix| suffix.len() == 5),
        "{name}"
    );
    let proxy = assert_injected_once(&worker);
    assert_eq!(
        worker["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        proxy["env"]
            .as_array()
            .expect("env")
            .iter()
            .all(|v| v["name"] != "SIDELB_UPSTREAMS"),
        "no annotations, no upstreams: {proxy:#}"
    );
    assert_eq!(
        env(proxy, "SIDELB_BALANCER"),
        "p2c-ewma",
        "the chart's proxy.balancer, where no annotation says otherwise"
    );

    // The pod webhook: labelled pods outside enabled namespaces; opt-outs win.
    let enabled = "{sidelb.io/inject: enabled}";
    let disabled = "{sidelb.io/inject: disabled}";
    assert_injected_once(&cluster.created(&worker_pod(enabled), "plain"));
    let before = all_requests(&cluster.metrics().await);
    for (labels, ns) in [
        (disabled, "shop"),
        ("{}", "optout"),
        (enabled, "optout"),
        (enabled, RELEASE_NS),
        (enabled, "kube-system"),
    ] {
        let pod = cluster.created(&worker_pod(labels), ns);
        assert_not_injected(&pod);
    }
    assert_eq!(
        all_requests(&cluster.metrics().await),
        before,
        "pods the webhooks do not select never reach the injector"
    );

    // Pods made by the ReplicaSet controller go through the same admission.
    let path = cluster.kubectl.file("deployment.yaml", &deployment());
    let path = path.to_str().expect("utf-8 path");
    cluster.kubectl.ok(&["create", "-f", path, "-n", "shop"]);
    let pods = wait_until("the Deployment's 2 pods", KUBE_WAIT, || async {
        let pods = cluster
            .kubectl
            .json(&["get", "pods", "-n", "shop", "-l", "app=shop-api"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    })
    .await
    .unwrap();
    for pod in &pods {
        assert_injected_once(pod);
    }

    let listed = cluster.kubectl.json(&["get", "pods", "-n", "shop"]);
    let counts: Vec<usize> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| proxies(p).len())
        .collect();
    assert!(counts.iter().all(|&n| n <= 1), "{counts:?}");
    let samples = cluster.metrics().await;
    assert_eq!(
        requests(&samples, "injected", "native-sidecar"),
        5.0,
        "client, worker, the labelled pod in plain and the Deployment's two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_annotation_is_refused_with_the_injectors_message() {
    let cluster = Cluster::start("Fail").await;

    let (path, err) = cluster.create_fails("bad.yaml", &bad_pod(), "shop");
    let prefix = format!(
        "Error from server (BadRequest): error when creating \"{path}\": admission webhook \"{NAMESPACE_WEBHOOK}\" denied the request: sidelb-injector: "
    );
    let message = err
        .trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not the injector's refusal: {err}"));
    assert!(message.contains("sidelb.io/balancer"), "{message}");
    assert!(message.contains("random"), "{message}");
    for accepted in ["p2c-ewma", "round-robin", "least-request"] {
        assert!(message.contains(accepted), "{message}");
    }
    cluster.pod_is_absent("shop", "bad");
    let samples = cluster.metrics().await;
    assert_eq!(requests(&samples, "refused", "invalid-annotation"), 1.0);

    // Where the webhooks do not select the pod, its annotations are nobody's business.
    cluster.create_pod("bad.yaml", &bad_pod(), "plain");
    assert_not_injected(&cluster.get_pod("plain", "bad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_injector_down_the_failure_policy_decides() {
    let cluster = Cluster::start("Ignore").await;
    assert_injected_once(&cluster.created(&worker_pod("{}"), "shop"));

    cluster.scale_injector(0).await;
    // Ignore: the pod is let in without the proxy.
    assert_not_injected(&cluster.created(&worker_pod("{}"), "shop"));

    // Fail (`helm upgrade --set webhook.failurePolicy=Fail`): refused, with
    // kube-apiserver's message naming the webhook and why.
    for hook in 0..2 {
        let patch = format!(
            r#"[{{"op":"replace","path":"/webhooks/{hook}/failurePolicy","value":"Fail"}}]"#
        );
        cluster.kubectl.ok(&[
            "patch",
            "mutatingwebhookconfiguration",
            "sidelb",
            "--type=json",
            "-p",
            &patch,
        ]);
    }
    let (path, err) = cluster.create_fails("client.yaml", &client_pod(), "shop");
    let expected = format!(
        "Error from server (InternalError): error when creating \"{path}\": Internal error occurred: failed calling webhook \"{NAMESPACE_WEBHOOK}\": failed to call webhook: Post \"https://{INJECTOR}.{RELEASE_NS}.svc:443/mutate?timeout=5s\": "
    );
    assert!(err.trim().starts_with(&expected), "{err}");
    cluster.pod_is_absent("shop", "client");
    // Unselected namespaces do not depend on the injector at all.
    assert_not_injected(&cluster.created(&client_pod(), "plain"));

    // Back up: injected again.
    cluster.scale_injector(1).await;
    let pod = wait_until("a pod injected again", KUBE_WAIT, || async {
        let path = cluster.kubectl.file("client.yaml", &client_pod());
        let out = cluster
            .kubectl
            .run(&["create", "-f", path.to_str()?, "-n", "shop"]);
        out.status
            .success()
            .then(|| cluster.get_pod("shop", "client"))
    })
    .await
    .unwrap();
    assert_injected_once(&pod);
}
