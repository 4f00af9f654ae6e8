//! What the tests share: a `kube` client built from the server's kubeconfig, exactly
//! as a program would build it, and EndpointSlices of one Service to list, watch and
//! change.

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use sidelb_fake_apiserver::FakeApiServer;

pub const SERVICE_LABEL: &str = "kubernetes.io/service-name=greeter";
pub const PHASE: Duration = Duration::from_secs(30);

pub async fn client_for(server: &FakeApiServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube accepts the kubeconfig");
    Client::try_from(config).expect("client builds")
}

pub fn slice(name: &str, service: &str, address: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": name, "namespace": "default", "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "ports": [ { "name": "grpc", "port": 50051 } ],
        "endpoints": [ { "addresses": [address], "conditions": { "ready": true } } ]
    })
}

pub fn set_address(server: &FakeApiServer, name: &str, address: &str) {
    let patch =
        json!({ "endpoints": [ { "addresses": [address], "conditions": { "ready": true } } ] });
    server
        .patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            name,
            &patch,
        )
        .expect("patch applies");
}

pub fn first_address(slice: &EndpointSlice) -> Option<String> {
    slice
        .endpoints
        .first()
        .and_then(|e| e.addresses.first())
        .cloned()
}
