//! The fake API server driven by the real `kubectl`, one command per test:
//! create, get (JSON and table), apply, label, patch, delete, and a watch that
//! sees a change made after it started. Skipped, saying so, when kubectl is
//! not installed.

use std::io::BufReader;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_tests::harness::{Kubectl, kubectl_present};

const WAIT: Duration = Duration::from_secs(30);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: orders}
---
apiVersion: v1
kind: Service
metadata:
  name: greeter
  namespace: shop
spec:
  selector: {app: greeter}
  ports:
  - {name: grpc, port: 50051}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: greeter-abc
  namespace: shop
  labels: {kubernetes.io/service-name: greeter}
addressType: IPv4
ports: [{name: grpc, port: 50051}]
endpoints:
- addresses: ["10.0.0.1"]
  conditions: {ready: true}
"#;

const SERVICE_V2: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: greeter
  namespace: shop
  labels: {version: v2}
spec:
  selector: {app: greeter}
  ports:
  - {name: grpc, port: 50051}
"#;

/// A `kubectl ... -w -o json` process and the objects it prints.
struct Watch {
    child: Child,
    objects: mpsc::Receiver<Value>,
}

impl Watch {
    fn start(kubectl: &Kubectl, args: &[&str]) -> Self {
        let mut child = kubectl
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl watch starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, objects) = mpsc::channel();
        std::thread::spawn(move || {
            for value in
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>()
            {
                let Ok(value) = value else { break };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self { child, objects }
    }

    fn wait_for(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.objects.recv_timeout(left) {
                Ok(object) if accept(&object) => return object,
                Ok(_) => {}
                Err(_) => panic!("kubectl's watch did not show {what}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake server and kubectl for it; `None` (the test says it is skipped)
/// when kubectl is not installed.
fn fresh(test: &str) -> Option<(FakeApiServer, Kubectl)> {
    if !kubectl_present() {
        eprintln!("SKIPPED {test}: kubectl is not installed");
        return None;
    }
    let server = FakeApiServer::start().expect("server starts");
    let kubectl = Kubectl::new(server.kubeconfig_path()).expect("kubectl scratch dir");
    Some((server, kubectl))
}

/// [`fresh`], holding `MANIFESTS` created with kubectl.
fn seeded(test: &str) -> Option<(FakeApiServer, Kubectl)> {
    let (server, kubectl) = fresh(test)?;
    let manifests = kubectl.file("app.yaml", MANIFESTS);
    kubectl.ok(&["create", "--validate=false", "-f", manifests.to_str()?]);
    Some((server, kubectl))
}

#[test]
fn create_names_each_object_and_a_second_create_is_already_exists() {
    let Some((_server, kubectl)) = fresh("create_names_each_object") else {
        return;
    };
    let manifests = kubectl.file("app.yaml", MANIFESTS);
    let manifests = manifests.to_str().expect("utf-8 path");
    let created = kubectl.ok(&["create", "--validate=false", "-f", manifests]);
    assert_eq!(
        created.lines().collect::<Vec<_>>(),
        [
            "namespace/shop created",
            "service/greeter created",
            "endpointslice.discovery.k8s.io/greeter-abc created"
        ]
    );
    let again = kubectl.fails(&["create", "--validate=false", "-f", manifests]);
    assert!(
        again.contains("Error from server (AlreadyExists): error when creating"),
        "{again}"
    );
    assert!(
        again.contains("services \"greeter\" already exists"),
        "{again}"
    );
}

#[test]
fn get_prints_objects_as_json_and_as_tables() {
    let Some((_server, kubectl)) = seeded("get_prints_objects_as_json_and_as_tables") else {
        return;
    };
    let service = kubectl.json(&["get", "svc", "greeter", "-n", "shop"]);
    assert_eq!(service["kind"], "Service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96."))
    );
    assert!(service["metadata"]["uid"].is_string());
    let slices = kubectl.json(&[
        "get",
        "endpointslices",
        "-n",
        "shop",
        "-l",
        "kubernetes.io/service-name=greeter",
    ]);
    assert_eq!(slices["items"].as_array().map(Vec::len), Some(1));

    let table = kubectl.ok(&["get", "svc", "-n", "shop"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..2], ["greeter", "ClusterIP"]);
    assert_eq!(row[4], "50051/TCP");
    let slice_table = kubectl.ok(&["get", "endpointslices", "-n", "shop"]);
    assert!(
        slice_table.contains("greeter-abc") && slice_table.contains("10.0.0.1"),
        "{slice_table}"
    );
    let namespaces = kubectl.ok(&["get", "ns", "--show-labels"]);
    assert!(
        namespaces
            .lines()
            .any(|l| l.starts_with("shop ") && l.contains("Active") && l.contains("team=orders")),
        "{namespaces}"
    );
}

#[test]
fn a_watch_sees_a_change_made_after_it_started() {
    let Some((server, kubectl)) = seeded("a_watch_sees_a_change_made_after_it_started") else {
        return;
    };
    let watch = Watch::start(
        &kubectl,
        &["get", "endpointslices", "-n", "shop", "-w", "-o", "json"],
    );
    watch.wait_for("the existing slice", |o| {
        o["metadata"]["name"] == "greeter-abc"
    });
    assert!(
        server.wait_until(WAIT, |s| s.open_watches("endpointslices") >= 1),
        "kubectl opened a watch"
    );
    kubectl.ok(&[
        "label",
        "endpointslice",
        "greeter-abc",
        "-n",
        "shop",
        "phase=two",
    ]);
    let changed = watch.wait_for("the label added afterwards", |o| {
        o["metadata"]["labels"]["phase"] == "two"
    });
    assert_eq!(changed["kind"], "EndpointSlice");
}

#[test]
fn apply_configures_once_and_then_leaves_unchanged() {
    let Some((_server, kubectl)) = seeded("apply_configures_once_and_then_leaves_unchanged") else {
        return;
    };
    let service_v2 = kubectl.file("svc-v2.yaml", SERVICE_V2);
    let service_v2 = service_v2.to_str().expect("utf-8 path");
    let applied = kubectl.ok(&["apply", "--validate=false", "-f", service_v2]);
    assert_eq!(applied.trim(), "service/greeter configured");
    assert_eq!(
        kubectl
            .ok(&["apply", "--validate=false", "-f", service_v2])
            .trim(),
        "service/greeter unchanged"
    );
    let service = kubectl.json(&["get", "svc", "greeter", "-n", "shop"]);
    assert_eq!(service["metadata"]["labels"]["version"], "v2");
    assert!(
        service["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
}

#[test]
fn label_adds_and_removes_labels_of_services_and_namespaces() {
    let Some((_server, kubectl)) =
        seeded("label_adds_and_removes_labels_of_services_and_namespaces")
    else {
        return;
    };
    assert_eq!(
        kubectl
            .ok(&["label", "svc", "greeter", "-n", "shop", "tier=backend"])
            .trim(),
        "service/greeter labeled"
    );
    assert_eq!(
        kubectl
            .ok(&["label", "svc", "greeter", "-n", "shop", "tier-"])
            .trim(),
        "service/greeter unlabeled"
    );
    let labels =
        kubectl.json(&["get", "svc", "greeter", "-n", "shop"])["metadata"]["labels"].clone();
    assert!(labels.get("tier").is_none());

    assert_eq!(
        kubectl.ok(&["create", "namespace", "tools"]).trim(),
        "namespace/tools created"
    );
    assert_eq!(
        kubectl
            .ok(&["label", "namespace", "tools", "sidelb.io/inject=enabled"])
            .trim(),
        "namespace/tools labeled"
    );
    let namespace = kubectl.json(&["get", "namespace", "tools"]);
    assert_eq!(
        namespace["metadata"]["labels"]["sidelb.io/inject"],
        "enabled"
    );
}

#[test]
fn a_json_patch_replaces_a_field() {
    let Some((_server, kubectl)) = seeded("a_json_patch_replaces_a_field") else {
        return;
    };
    let patch = r#"[{"op":"replace","path":"/spec/ports/0/port","value":50052}]"#;
    let patched = kubectl.ok(&[
        "patch",
        "svc",
        "greeter",
        "-n",
        "shop",
        "--type=json",
        "-p",
        patch,
    ]);
    assert_eq!(patched.trim(), "service/greeter patched");
    let service = kubectl.json(&["get", "svc", "greeter", "-n", "shop"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 50052);
}

#[test]
fn delete_removes_an_object_and_a_namespace_takes_its_objects() {
    let Some((_server, kubectl)) =
        seeded("delete_removes_an_object_and_a_namespace_takes_its_objects")
    else {
        return;
    };
    assert_eq!(
        kubectl
            .ok(&["delete", "svc", "greeter", "-n", "shop"])
            .trim(),
        "service \"greeter\" deleted"
    );
    let missing = kubectl.fails(&["get", "svc", "greeter", "-n", "shop"]);
    assert_eq!(
        missing.trim(),
        "Error from server (NotFound): services \"greeter\" not found"
    );
    assert_eq!(
        kubectl.ok(&["delete", "namespace", "shop"]).trim(),
        "namespace \"shop\" deleted"
    );
    assert!(
        kubectl.json(&["get", "endpointslices", "-A"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}
