//! The node agent plays the kubelet against the real control plane: a pod
//! bound to its node runs as a local process in its own network namespace,
//! its status goes through the status subresource, and the real
//! EndpointSlice controller turns its readiness into an endpoint. Deleting
//! the pod stops the process (SIGTERM) and the endpoint goes.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::control_plane::ControlPlane;
use sidelb_tests::harness::node_agent::BACKEND_IMAGE;
use sidelb_tests::harness::{NodeAgent, client, wait_until};
use std::net::SocketAddr;
use std::time::Duration;

/// Bound on what the controllers and the agent bring about (a busy machine).
const WAIT: Duration = Duration::from_secs(60);

async fn admin(cluster: &ControlPlane) -> Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("admin kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client")
}

async fn create<K>(client: &Client, namespace: Option<&str>, object: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("object");
    let api: Api<K> = Api::namespaced(client.clone(), namespace.unwrap_or("default"));
    api.create(&PostParams::default(), &object)
        .await
        .expect("created")
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_pod_runs_gets_ready_and_an_endpoint_and_stops_on_deletion() {
    let cluster = ControlPlane::private().unwrap_or_else(|err| panic!("make cluster: {err:#}"));
    let client = admin(&cluster).await;
    let _agent = NodeAgent::spawn(&cluster.kubeconfig(), &["node-a:zone-1"])
        .await
        .expect("node agent starts");

    let ns = "agent-plain";
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    let _: Service = create(&client, Some(ns), json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"name": "grpc", "port": 50051, "targetPort": "grpc"}]},
    }))
    .await;
    let _: Pod = create(&client, Some(ns), json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo-1", "labels": {"app": "echo"}},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "echo",
                "image": format!("{BACKEND_IMAGE}:dev"),
                "args": ["--name=$(POD_NAME)", "--addr=0.0.0.0:50051"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "grpc", "containerPort": 50051}],
                "readinessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 1},
            }],
        },
    }))
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = wait_until("pod echo-1 to be Ready", WAIT, || async {
        pods.get("echo-1").await.ok().filter(pod_ready)
    })
    .await
    .expect("the pod gets Ready");
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some("node-a"),
        "bound by the agent's scheduler"
    );
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ip = status.pod_ip.clone().expect("a pod IP");
    let statuses = status
        .container_statuses
        .as_ref()
        .expect("container statuses");
    assert!(
        statuses[0].ready && statuses[0].started == Some(true),
        "{statuses:?}"
    );

    // The real EndpointSlice controller made an endpoint of it, ready.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let by_service = ListParams::default().labels("kubernetes.io/service-name=echo");
    let endpoint = wait_until("an EndpointSlice endpoint for the pod", WAIT, || async {
        let list = slices.list(&by_service).await.ok()?;
        list.items.into_iter().flat_map(|s| s.endpoints).find(|e| {
            e.addresses.contains(&ip) && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
        })
    })
    .await
    .expect("the pod is a ready endpoint");
    assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
    assert_eq!(
        endpoint.zone.as_deref(),
        Some("zone-1"),
        "from the Node's topology label"
    );

    // The process is the pod: it answers at the pod's address with its name.
    let addr: SocketAddr = format!("{ip}:50051").parse().expect("addr");
    let mut echo = client::connect(addr).await.expect("connects to the pod");
    let reply = echo
        .unary(EchoRequest::default())
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(reply.backend, "echo-1");

    // Deleted: SIGTERM, the pod goes, and so does its endpoint.
    pods.delete("echo-1", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until("pod echo-1 to be gone", WAIT, || async {
        matches!(pods.get_opt("echo-1").await, Ok(None)).then_some(())
    })
    .await
    .expect("the agent confirms the deletion");
    wait_until("the endpoint to go", WAIT, || async {
        let list = slices.list(&by_service).await.ok()?;
        list.items
            .iter()
            .all(|s| s.endpoints.is_empty())
            .then_some(())
    })
    .await
    .expect("no endpoint left");
}
