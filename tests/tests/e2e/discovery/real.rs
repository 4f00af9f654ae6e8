//! The real control plane for discovery tests ([`Kube`]): pods that are
//! test backends run by the node agent, Services and Deployments applied to
//! kube-apiserver, EndpointSlices written by the real EndpointSlice
//! controller from the pods' real readiness, and a proxy run as a binary
//! with a service-account token under the chart's grant.

pub use super::view::*;
use serde_json::{Value, json};
use sidelb_config::settings;
use sidelb_tests::harness::kube_cluster::{Kube, PodView};
use sidelb_tests::harness::*;

/// The namespace of the tests' Services and pods, the proxy's own.
pub const NAMESPACE: &str = "default";
/// The proxy's ServiceAccount.
pub const ACCOUNT: &str = "app";
/// The port every backend pod listens on unless a test says otherwise.
pub const POD_PORT: u16 = 8080;

/// A control plane, a node agent and the `default` namespace, ready.
pub async fn start() -> Kube {
    Kube::start(NAMESPACE)
        .await
        .unwrap_or_else(|e| panic!("a real cluster: {e:#}"))
}

/// Creates or updates an object; the test fails if the API server refuses it.
pub async fn apply(kube: &Kube, object: Value) {
    let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
    if let Err(e) = kube.apply(object).await {
        panic!("applying {what}: {e:#}");
    }
}

/// Service `name` selecting `app=NAME`, with `ports` (`{name, port, targetPort}`).
pub fn service(name: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": ports},
    })
}

/// Service `name` with one port `grpc` 50051 to the pods' port named `grpc`.
pub fn grpc_service(name: &str) -> Value {
    service(
        name,
        json!([{"name": "grpc", "port": 50051, "targetPort": "grpc"}]),
    )
}

/// A proxy with an upstream listener per target, watching the real API
/// server with ServiceAccount [`ACCOUNT`]'s token; ready when returned.
pub async fn proxy(kube: &Kube, upstreams: &[&str]) -> Proxy {
    let kubeconfig = kube
        .proxy_kubeconfig(ACCOUNT)
        .await
        .unwrap_or_else(|e| panic!("the proxy's credentials: {e:#}"));
    proxy_with(&kubeconfig, upstreams, &[]).await
}

/// A proxy as [`proxy`] makes it, with the credentials of `kubeconfig` and
/// `env` besides.
pub async fn proxy_with(
    kubeconfig: &std::path::Path,
    upstreams: &[&str],
    env: &[(&str, &str)],
) -> Proxy {
    let mut options = ProxyOptions::new()
        .env("KUBECONFIG", kubeconfig.display().to_string())
        .env(settings::DISCOVERY, "kubernetes")
        .env(settings::POD_NAMESPACE, NAMESPACE);
    for target in upstreams {
        options = options.upstream(target);
    }
    for (name, value) in env {
        options = options.env(name, *value);
    }
    Proxy::spawn(options).await.expect("proxy ready")
}

/// Waits until `app` has `n` ready pods and no others.
pub async fn ready_pods(kube: &Kube, app: &str, n: usize) -> Vec<PodView> {
    kube.wait_ready_pods(app, n)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

pub fn names(pods: &[PodView]) -> Vec<&str> {
    pods.iter().map(|p| p.name.as_str()).collect()
}
