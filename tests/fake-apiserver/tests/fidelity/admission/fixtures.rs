//! What the tests create: MutatingWebhookConfigurations with one webhook on Pod
//! CREATE, pods with a `generateName`, the `kube` client they are created through,
//! and a look at a pod's init containers (where injection puts the proxy).

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use sidelb_fake_apiserver::FakeApiServer;

pub fn webhook_config(name: &str, hook_name: &str, client_config: Value, extra: Value) -> Value {
    let mut hook = json!({
        "name": hook_name,
        "clientConfig": client_config,
        "rules": [ { "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"] } ],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        hook.extend(extra.clone());
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": name },
        "webhooks": [hook]
    })
}

pub fn pod(prefix: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "generateName": prefix, "labels": labels },
        "spec": { "containers": [ { "name": "app", "image": "app:1" } ] }
    }))
    .expect("pod")
}

pub async fn pods(server: &FakeApiServer, namespace: &str) -> Api<Pod> {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Api::namespaced(Client::try_from(config).expect("client"), namespace)
}

pub fn init_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}
