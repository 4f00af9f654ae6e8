//! Headless Services (`clusterIP: None`) and the StatefulSets they govern,
//! on the real control plane: their EndpointSlices are written by the same
//! controller, so the proxy balances each request over their pods as for any
//! Service — with ports, by the Service port as usual; without ports, on the
//! port the app dials (as the Service's DNS name would be), and a port name
//! there is refused saying why.

use super::real::*;
use serde_json::json;
use sidelb_tests::harness::kube_cluster::Kube;
use sidelb_tests::harness::*;

/// Waits for the StatefulSet's pods, then for the proxy to list all of them,
/// and checks one connection's calls reach each.
async fn balanced_over(kube: &Kube, proxy: &Proxy, target: &str, app: &str, n: usize) {
    let pods = ready_pods(kube, app, n).await;
    let names = names(&pods);
    assert_eq!(
        names,
        (0..n).map(|i| format!("{app}-{i}")).collect::<Vec<_>>(),
        "a StatefulSet's pods"
    );
    wait_for_pods(proxy, target, &names).await;
    let client = client(proxy, target).await;
    let tally = all_ok(&client, 60).await;
    for pod in &names {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_statefulset_is_balanced_per_request_with_or_without_ports() {
    let kube = start().await;
    apply(
        &kube,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db"},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "db"},
                "ports": [{"name": "grpc", "port": 50051, "targetPort": "grpc"}],
            },
        }),
    )
    .await;
    apply(&kube, kube.backend_statefulset("db", 3, POD_PORT, "db")).await;
    apply(
        &kube,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "raw"},
            "spec": {"clusterIP": "None", "selector": {"app": "raw"}},
        }),
    )
    .await;
    apply(&kube, kube.backend_statefulset("raw", 2, POD_PORT, "raw")).await;

    let with_ports = "db.default:50051";
    let without = format!("raw.default:{POD_PORT}");
    let by_name = "raw.default:grpc";
    let proxy = proxy(&kube, &[with_ports, &without, by_name]).await;
    balanced_over(&kube, &proxy, with_ports, "db", 3).await;
    balanced_over(&kube, &proxy, &without, "raw", 2).await;

    // Scaled: the new ordinal takes its share.
    kube.scale_statefulset("db", 4).await.expect("scaled");
    balanced_over(&kube, &proxy, with_ports, "db", 4).await;

    // A port name means nothing where the Service lists no ports.
    let by_name = client(&proxy, by_name).await;
    let message = unavailable_message(&by_name).await.expect("UNAVAILABLE");
    assert!(message.contains("headless and lists no ports"), "{message}");
}
