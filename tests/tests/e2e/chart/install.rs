//! The Helm chart installed and upgraded on the real control plane: rendered
//! by Helm's own engine (`charts/tests/render_chart.py`, its `lookup` reading
//! kube-apiserver as `helm upgrade --install` does), applied, its injector
//! run by the node agent from the rendered Deployment. An upgrade keeps the
//! generated certificate and the caBundle, so the running injector is still
//! trusted and pods are still injected; rendered without the cluster
//! (`helm template`) a new CA would be made. Which pods the webhooks select,
//! and the failure policy, are in `injector::real`.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sidelb_tests::harness::chart;
use sidelb_tests::harness::kube_cluster::Kube;

const TLS_SECRET: &str = "sidelb-injector-tls";
const WEBHOOK_CONFIG: &str = "sidelb";

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    chart::find(docs, kind, name).unwrap_or_else(|e| panic!("{e:#}"))
}

fn secret_data(docs: &[Value]) -> Value {
    find(docs, "Secret", TLS_SECRET)["data"].clone()
}

fn ca_bundles(docs: &[Value]) -> Vec<String> {
    let config = find(docs, "MutatingWebhookConfiguration", WEBHOOK_CONFIG);
    config["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle")
                .to_owned()
        })
        .collect()
}

/// A pod that asks for a node no agent has: admission is what is judged.
fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "app-"},
        "spec": {
            "nodeSelector": {"sidelb.test/node": "none"},
            "containers": [{"name": "app", "image": "example/app:1"}],
        },
    }))
    .expect("pod")
}

async fn injected(kube: &Kube) -> bool {
    let created = Api::<Pod>::namespaced(kube.client.clone(), kube.namespace())
        .create(&PostParams::default(), &pod())
        .await
        .unwrap_or_else(|e| panic!("creating a pod: {e}"));
    let spec = created.spec.expect("spec");
    let first = spec.init_containers.iter().flatten().next();
    first.is_some_and(|c| c.name == "sidelb-proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_the_certificate_and_the_injector_stays_trusted() {
    let kube = Kube::start("shop")
        .await
        .unwrap_or_else(|e| panic!("a real cluster: {e:#}"));
    kube.apply(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"sidelb.io/inject": "enabled"}},
    }))
    .await
    .expect("namespace labelled");
    let values = json!({
        "injector": {"replicas": 1, "podDisruptionBudget": {"enabled": false}},
        "webhook": {"failurePolicy": "Fail"},
    });
    let installed = kube
        .install_chart(&values)
        .await
        .unwrap_or_else(|e| panic!("install: {e:#}"));
    assert!(injected(&kube).await, "installed: the pod is injected");

    // `helm upgrade`: lookup finds the Secret, so the certificate and the
    // caBundle stay, and the running injector is still trusted.
    let mut changed = values.clone();
    changed["proxy"] = json!({"balancer": "round-robin"});
    let upgraded = kube
        .install_chart(&changed)
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e:#}"));
    assert_eq!(secret_data(&upgraded), secret_data(&installed));
    assert_eq!(ca_bundles(&upgraded), ca_bundles(&installed));
    assert!(injected(&kube).await, "upgraded: the pod is injected");

    // Rendered without the cluster (`helm template`), a new CA would be made.
    let offline = chart::render(None, &values).unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(
        secret_data(&offline)["ca.crt"],
        secret_data(&installed)["ca.crt"]
    );
}
