//! The injector end to end as a user meets it: the real `sidelb-injector`
//! (with a certificate from a test CA) registered in a
//! MutatingWebhookConfiguration whose `caBundle` is that CA, pods created with
//! `kubectl create -f` and read back with `kubectl get -o json`, all through
//! the fake API server, which calls the webhook over HTTPS as kube-apiserver
//! does (ServiceAccount admission first, `reinvocationPolicy: IfNeeded`,
//! `failurePolicy`).
//!
//! - In a namespace labelled `sidelb.io/inject=enabled`, a named pod with
//!   `sidelb.io/` annotations and a `generateName` pod get the `sidelb-proxy`
//!   native sidecar exactly once, the annotations' values in its env, and the
//!   app container exactly as in the same pod created where nothing is
//!   injected; the injector is called a second time (reinvocation after the
//!   ServiceAccount plugin mounted its token into the sidecar) and adds
//!   nothing then. In an unlabelled namespace the injector is not even called.
//! - A pod with an invalid annotation is refused, and kubectl prints the
//!   injector's message naming the annotation and the accepted values.
//! - With the injector stopped, `failurePolicy: Ignore` lets pods in without
//!   the sidecar, and `Fail` refuses them with the API server's message.
//!
//! Needs the binaries built (`cargo build --workspace --bins`); skipped,
//! saying so, when kubectl is not installed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_fake_apiserver::tls::TestCa;
use sidelb_tests::harness::metrics::{Sample, sum};
use sidelb_tests::harness::{Injector, Kubectl, kubectl_present};

const WEBHOOK: &str = "inject.sidelb.io";
const PROXY_IMAGE: &str = "registry.test/sidelb/proxy:e2e";
const REQUESTS: &str = "sidelb_injector_admission_requests_total";

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {sidelb.io/inject: enabled}
---
apiVersion: v1
kind: Namespace
metadata:
  name: plain
"#;

/// A named pod with per-pod proxy settings; created with `-n`.
const CLIENT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {app: client}
  annotations:
    sidelb.io/upstreams: "greeter.shop:50051=15001,billing:9000=15002"
    sidelb.io/balancer: round-robin
    sidelb.io/log-level: debug
    team.example/owner: orders
spec:
  containers:
  - name: app
    image: example/client:1
    args: ["--greeter", "127.0.0.1:15001"]
    ports: [{containerPort: 8080, name: http}]
    env: [{name: GREETER_ADDR, value: "127.0.0.1:15001"}]
"#;

/// A pod without a name, as a ReplicaSet creates them.
const WORKER_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  generateName: worker-
  labels: {app: worker}
spec:
  containers:
  - name: app
    image: example/worker:1
"#;

const BAD_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations:
    sidelb.io/balancer: random
spec:
  containers:
  - name: app
    image: example/app:1
"#;

fn webhook_manifest(url: &str, ca_pem: &str, failure_policy: &str) -> String {
    let ca_bundle = STANDARD.encode(ca_pem);
    format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: sidelb
webhooks:
- name: {WEBHOOK}
  clientConfig:
    url: "{url}"
    caBundle: {ca_bundle}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
  namespaceSelector:
    matchLabels: {{sidelb.io/inject: enabled}}
  failurePolicy: {failure_policy}
  reinvocationPolicy: IfNeeded
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
"#
    )
}

/// The fake API server, kubectl pointed at it, namespaces `shop` (labelled)
/// and `plain`, and the injector registered with `failure_policy`.
struct Cluster {
    _server: FakeApiServer,
    kubectl: Kubectl,
    injector: Injector,
}

impl Cluster {
    async fn start(failure_policy: &str) -> Cluster {
        let server = FakeApiServer::start().expect("fake API server");
        let kubectl = Kubectl::new(server.kubeconfig_path()).expect("kubectl scratch dir");
        let ca = TestCa::new("sidelb-injector e2e CA").expect("CA");
        let injector = Injector::spawn_with_ca(&ca, [("SIDELB_PROXY_IMAGE", PROXY_IMAGE)])
            .await
            .expect("sidelb-injector starts");
        let cluster = Cluster {
            _server: server,
            kubectl,
            injector,
        };
        assert_eq!(
            cluster.create_ok("namespaces.yaml", NAMESPACES, None),
            ["namespace/shop created", "namespace/plain created"]
        );
        let webhook = webhook_manifest(&cluster.injector.url("/mutate"), ca.pem(), failure_policy);
        assert_eq!(
            cluster.create_ok("webhook.yaml", &webhook, None),
            ["mutatingwebhookconfiguration.admissionregistration.k8s.io/sidelb created"]
        );
        cluster
    }

    fn create_args<'a>(path: &'a str, namespace: Option<&'a str>) -> Vec<&'a str> {
        let mut args = vec!["create", "--validate=false", "-f", path];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        args
    }

    /// `kubectl create -f FILE [-n NS]`, which must succeed; its output lines.
    fn create_ok(&self, file: &str, manifest: &str, namespace: Option<&str>) -> Vec<String> {
        let path = self.kubectl.file(file, manifest);
        let path = path.to_str().expect("utf-8 path");
        let out = self.kubectl.ok(&Self::create_args(path, namespace));
        out.lines().map(str::to_owned).collect()
    }

    /// `kubectl create -f FILE -n NS`, which must fail; the path and stderr.
    fn create_fails(&self, file: &str, manifest: &str, namespace: &str) -> (String, String) {
        let path = self.kubectl.file(file, manifest);
        let path = path.to_str().expect("utf-8 path").to_owned();
        let err = self
            .kubectl
            .fails(&Self::create_args(&path, Some(namespace)));
        (path, err)
    }

    /// Creates one pod; returns its name as kubectl printed it.
    fn create_pod(&self, file: &str, manifest: &str, namespace: &str) -> String {
        let lines = self.create_ok(file, manifest, Some(namespace));
        match lines.as_slice() {
            [line] => line
                .strip_prefix("pod/")
                .and_then(|l| l.strip_suffix(" created"))
                .unwrap_or_else(|| panic!("unexpected kubectl output {line:?}"))
                .to_owned(),
            _ => panic!("unexpected kubectl output {lines:?}"),
        }
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
        self.injector.metrics().await.expect("injector /metrics")
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

#[tokio::test]
async fn pods_in_a_labelled_namespace_get_the_sidecar_once_and_others_none() {
    if !kubectl_present() {
        eprintln!("SKIPPED injector::kubectl: kubectl is not installed");
        return;
    }
    let cluster = Cluster::start("Fail").await;

    // The same pod where nothing is injected: the API server's own defaults,
    // nothing else, and the injector is not called at all.
    assert_eq!(
        cluster.create_pod("client.yaml", CLIENT_POD, "plain"),
        "client"
    );
    let plain = cluster.get_pod("plain", "client");
    assert_not_injected(&plain);
    assert_eq!(all_requests(&cluster.metrics().await), 0.0);

    assert_eq!(
        cluster.create_pod("client.yaml", CLIENT_POD, "shop"),
        "client"
    );
    let pod = cluster.get_pod("shop", "client");
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
    let app = &pod["spec"]["containers"][0];
    assert_eq!(app["args"], json!(["--greeter", "127.0.0.1:15001"]));
    assert_eq!(
        app["env"],
        json!([{ "name": "GREETER_ADDR", "value": "127.0.0.1:15001" }])
    );
    for (key, value) in plain["metadata"]["annotations"].as_object().expect("map") {
        assert_eq!(&pod["metadata"]["annotations"][key], value, "{key} kept");
    }
    assert_eq!(pod["metadata"]["labels"], plain["metadata"]["labels"]);
    assert!(
        proxy["volumeMounts"]
            .to_string()
            .contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "the ServiceAccount plugin, run again after the webhook, mounted its token into the proxy: {proxy:#}"
    );
    let samples = cluster.metrics().await;
    assert_eq!(requests(&samples, "injected", "native-sidecar"), 1.0);
    assert_eq!(
        requests(&samples, "skipped", "already-injected"),
        1.0,
        "reinvoked after the ServiceAccount plugin changed the pod, and added nothing"
    );

    let name = cluster.create_pod("worker.yaml", WORKER_POD, "shop");
    let suffix = name
        .strip_prefix("worker-")
        .expect("generated from worker-");
    assert_eq!(suffix.len(), 5, "{name}");
    let worker = cluster.get_pod("shop", &name);
    assert_eq!(worker["metadata"]["name"], name.as_str());
    let proxy = assert_injected_once(&worker);
    assert_eq!(
        worker["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(worker["spec"]["containers"][0]["name"], "app");
    assert!(
        proxy["env"]
            .as_array()
            .expect("env")
            .iter()
            .all(|v| v["name"] != "SIDELB_UPSTREAMS" && v["name"] != "SIDELB_BALANCER"),
        "no annotations, no per-pod settings: {proxy:#}"
    );
    let samples = cluster.metrics().await;
    assert_eq!(requests(&samples, "injected", "native-sidecar"), 2.0);
    assert_eq!(requests(&samples, "skipped", "already-injected"), 2.0);
    assert_eq!(all_requests(&samples), 4.0);

    let listed = cluster.kubectl.json(&["get", "pods", "-A"]);
    let injected: Vec<_> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| (p["metadata"]["namespace"].clone(), proxies(p).len()))
        .collect();
    assert_eq!(
        injected,
        [(json!("plain"), 0), (json!("shop"), 1), (json!("shop"), 1)]
    );
}

#[tokio::test]
async fn an_invalid_annotation_is_refused_with_the_injectors_message() {
    if !kubectl_present() {
        eprintln!("SKIPPED injector::kubectl: kubectl is not installed");
        return;
    }
    let cluster = Cluster::start("Fail").await;

    let (path, err) = cluster.create_fails("bad.yaml", BAD_POD, "shop");
    let prefix = format!(
        "Error from server (BadRequest): error when creating \"{path}\": admission webhook \"{WEBHOOK}\" denied the request: sidelb-injector: "
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

    // Where the webhook does not select the pod, its annotations are nobody's business.
    cluster.create_pod("bad.yaml", BAD_POD, "plain");
    assert_not_injected(&cluster.get_pod("plain", "bad"));
}

#[tokio::test]
async fn with_the_injector_stopped_failure_policy_decides() {
    if !kubectl_present() {
        eprintln!("SKIPPED injector::kubectl: kubectl is not installed");
        return;
    }
    let mut cluster = Cluster::start("Ignore").await;
    let name = cluster.create_pod("worker.yaml", WORKER_POD, "shop");
    assert_injected_once(&cluster.get_pod("shop", &name));

    let url = cluster.injector.url("/mutate");
    let status = cluster.injector.stop().await.expect("injector stops");
    assert!(status.success(), "SIGTERM: a clean exit, not {status}");

    // Ignore: the pod starts without the proxy.
    let name = cluster.create_pod("worker.yaml", WORKER_POD, "shop");
    assert_not_injected(&cluster.get_pod("shop", &name));

    // Fail: refused, with kube-apiserver's message naming the webhook and why.
    let patch = r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Fail"}]"#;
    let patched = cluster.kubectl.ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "sidelb",
        "--type=json",
        "-p",
        patch,
    ]);
    assert_eq!(
        patched.trim(),
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/sidelb patched"
    );
    let (path, err) = cluster.create_fails("client.yaml", CLIENT_POD, "shop");
    let addr = cluster.injector.addr();
    assert_eq!(
        err.trim(),
        format!(
            "Error from server (InternalError): error when creating \"{path}\": Internal error occurred: failed calling webhook \"{WEBHOOK}\": failed to call webhook: Post \"{url}?timeout=10s\": dial tcp {addr}: connect: connection refused"
        )
    );
    cluster.pod_is_absent("shop", "client");

    // Unselected namespaces do not depend on the injector at all.
    cluster.create_pod("client.yaml", CLIENT_POD, "plain");
}
