//! Zones on the real control plane: two nodes in two zones (their
//! `topology.kubernetes.io/zone` labels), backends spread over them by the
//! node agent, and a Service asking for `trafficDistribution:
//! PreferSameZone`, whose EndpointSlices the real controller gives zone
//! hints. A proxy told only its node (`NODE_NAME`, as the injector sets it
//! from the downward API) learns its zone from the Node and keeps its calls
//! there while the local pods can take them; loaded past that, the excess
//! spills to the other zone. The same Service without the field is balanced
//! over both zones.

use super::real::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::kube_cluster::{KUBE_WAIT, Kube, PodView};
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";
const LOCAL_NODE: &str = "node-a";

fn on(pods: &[PodView], node: &str) -> Vec<String> {
    let on_node = pods.iter().filter(|p| p.node.as_deref() == Some(node));
    on_node.map(|p| p.name.clone()).collect()
}

async fn counter(proxy: &Proxy, name: &str) -> f64 {
    let metrics = metrics::parse(&proxy.metrics().await.expect("/metrics"));
    metrics::sum(&metrics, name, &[("service", TARGET)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_in_the_pods_zone_until_its_pods_are_busy() {
    let kube = Kube::start_on(NAMESPACE, &["node-a:zone-a", "node-b:zone-b"])
        .await
        .unwrap_or_else(|e| panic!("a real cluster: {e:#}"));
    let mut service = grpc_service("echo");
    service["spec"]["trafficDistribution"] = "PreferSameZone".into();
    apply(&kube, service).await;
    apply(&kube, kube.backend_deployment("echo", 4, POD_PORT)).await;
    let pods = ready_pods(&kube, "echo", 4).await;
    let (local, remote) = (on(&pods, LOCAL_NODE), on(&pods, "node-b"));
    assert_eq!(
        (local.len(), remote.len()),
        (2, 2),
        "spread over the nodes: {pods:?}"
    );

    let kubeconfig = kube
        .proxy_kubeconfig(ACCOUNT)
        .await
        .unwrap_or_else(|e| panic!("the proxy's credentials: {e:#}"));
    let proxy = proxy_with(&kubeconfig, &[TARGET], &[("NODE_NAME", LOCAL_NODE)]).await;
    wait_for_pods(&proxy, TARGET, &names(&pods)).await;
    let view = proxy.service_view(TARGET).await.expect("/endpoints");
    let view = view.expect("listed");
    assert_eq!(view["zone"], "zone-a", "learned from its Node: {view}");
    for endpoint in view["endpoints"].as_array().expect("endpoints") {
        let name = endpoint["name"].as_str().unwrap_or_default().to_owned();
        let zone = if local.contains(&name) {
            "zone-a"
        } else {
            "zone-b"
        };
        assert_eq!(endpoint["zone"], zone, "{endpoint}");
        assert_eq!(endpoint["local"], zone == "zone-a", "{endpoint}");
    }

    // Light load: every call stays in zone-a, spread over its two pods.
    let client = client(&proxy, TARGET).await;
    let light = unary_calls_concurrently(&client, 200, 2, &EchoRequest::default()).await;
    assert_eq!(light.ok(), 200, "{light}");
    for pod in &local {
        assert!(light.served_by(pod) > 0, "{pod} got nothing: {light}");
    }
    for pod in &remote {
        assert_eq!(light.served_by(pod), 0, "{pod} is in zone-b: {light}");
    }
    assert_eq!(
        counter(&proxy, "sidelb_zone_local_requests_total").await,
        200.0
    );

    // Loaded: more calls in flight than zone-a's pods should hold; the
    // excess goes to zone-b, the most still to zone-a.
    let spilled_before = counter(&proxy, "sidelb_zone_spilled_requests_total").await;
    let slow = EchoRequest {
        delay_ms: 20,
        ..EchoRequest::default()
    };
    let heavy = unary_calls_concurrently(&client, 1200, 48, &slow).await;
    assert_eq!(heavy.ok(), 1200, "{heavy}");
    let in_zone: u64 = local.iter().map(|p| heavy.served_by(p)).sum();
    let spilled: u64 = remote.iter().map(|p| heavy.served_by(p)).sum();
    assert!(spilled > 0, "nothing spilled to zone-b: {heavy}");
    assert!(in_zone > spilled, "zone-a kept most: {heavy}");
    let counted = counter(&proxy, "sidelb_zone_spilled_requests_total").await - spilled_before;
    assert!(
        counted >= spilled as f64,
        "{counted} counted, {spilled} served in zone-b"
    );

    // Without the Service's request, no hints: every zone alike.
    apply(&kube, grpc_service("echo")).await;
    wait_until("the hints to go", KUBE_WAIT, || async {
        let view = proxy.service_view(TARGET).await.ok().flatten()?;
        let eps = view["endpoints"].as_array()?.clone();
        eps.iter().all(|e| e["local"] == false).then_some(())
    })
    .await
    .expect("no endpoint local");
    let even = unary_calls_concurrently(&client, 200, 2, &EchoRequest::default()).await;
    for pod in &remote {
        assert!(even.served_by(pod) > 0, "{pod} got nothing: {even}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_same_node_keeps_calls_on_the_pods_node() {
    let kube = Kube::start_on(
        NAMESPACE,
        &["node-a:zone-a", "node-c:zone-a", "node-b:zone-b"],
    )
    .await
    .unwrap_or_else(|e| panic!("a real cluster: {e:#}"));
    let mut service = grpc_service("echo");
    service["spec"]["trafficDistribution"] = "PreferSameNode".into();
    apply(&kube, service).await;
    apply(&kube, kube.backend_deployment("echo", 6, POD_PORT)).await;
    let pods = ready_pods(&kube, "echo", 6).await;
    let on_a = on(&pods, LOCAL_NODE);
    assert!(!on_a.is_empty(), "a pod on node-a: {pods:?}");

    let kubeconfig = kube
        .proxy_kubeconfig(ACCOUNT)
        .await
        .unwrap_or_else(|e| panic!("the proxy's credentials: {e:#}"));
    let proxy = proxy_with(&kubeconfig, &[TARGET], &[("NODE_NAME", LOCAL_NODE)]).await;
    wait_for_pods(&proxy, TARGET, &names(&pods)).await;
    wait_until("node hints for every endpoint", KUBE_WAIT, || async {
        let view = proxy.service_view(TARGET).await.ok().flatten()?;
        let eps = view["endpoints"].as_array()?.clone();
        let local: Vec<String> = eps
            .iter()
            .filter(|e| e["local"] == true)
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        let mut want = on_a.clone();
        want.sort();
        let mut local = local;
        local.sort();
        (local == want).then_some(())
    })
    .await
    .expect("the pods on node-a, and only they, are local");

    let client = client(&proxy, TARGET).await;
    let light = unary_calls_concurrently(&client, 100, 1, &EchoRequest::default()).await;
    assert_eq!(light.ok(), 100, "{light}");
    let on_node: u64 = on_a.iter().map(|p| light.served_by(p)).sum();
    assert_eq!(
        on_node, 100,
        "all on node-a, none on node-c of the same zone: {light}"
    );
}
