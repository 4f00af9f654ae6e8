//! From the port an app names to the port pods listen on, as the real
//! EndpointSlice controller resolves it: by Service port number or name,
//! through a named `targetPort` that two workloads give different numbers
//! (so the controller writes a slice for each), and a Service's single
//! unnamed port with a numeric `targetPort`.

use super::real::*;
use serde_json::json;
use sidelb_tests::harness::*;
use std::collections::BTreeSet;

const BLUE_PORT: u16 = 8080;
const GREEN_PORT: u16 = 9000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_by_number_and_name_reach_each_pods_own_target_port() {
    let kube = start().await;
    // Service echo's port `grpc` targets the pods' port *named* grpc: blue
    // pods have it on 8080, the green one on 9000.
    apply(
        &kube,
        service(
            "echo",
            json!([
                {"name": "metrics", "port": 9090, "targetPort": 9090},
                {"name": "grpc", "port": 50051, "targetPort": "grpc"},
            ]),
        ),
    )
    .await;
    for (pod, port) in [
        ("blue-1", BLUE_PORT),
        ("blue-2", BLUE_PORT),
        ("green-1", GREEN_PORT),
    ] {
        apply(&kube, kube.backend_pod(pod, "echo", port)).await;
    }
    // Service solo: one unnamed port, 80 → 8080 by number.
    apply(
        &kube,
        service("solo", json!([{"port": 80, "targetPort": POD_PORT}])),
    )
    .await;
    apply(&kube, kube.backend_pod("solo-1", "solo", POD_PORT)).await;
    let echo = ready_pods(&kube, "echo", 3).await;
    ready_pods(&kube, "solo", 1).await;

    // The controller wrote one slice per port mapping.
    let mappings = wait_until("a slice per grpc port of echo", WAIT, || async {
        let slices = kube.slices("echo").await.ok()?;
        let ports: BTreeSet<i32> = slices
            .iter()
            .filter(|s| !s.endpoints.is_empty())
            .flat_map(|s| s.ports.iter().flatten())
            .filter(|p| p.name.as_deref() == Some("grpc"))
            .filter_map(|p| p.port)
            .collect();
        (ports.len() == 2).then_some(ports)
    })
    .await
    .expect("two slices");
    assert_eq!(
        mappings,
        BTreeSet::from([i32::from(BLUE_PORT), i32::from(GREEN_PORT)])
    );

    let targets = ["echo.default:50051", "echo.default:grpc", "solo.default:80"];
    let proxy = proxy(&kube, &targets).await;
    let mut wanted: Vec<String> = echo
        .iter()
        .map(|p| {
            let port = if p.name.starts_with("blue") {
                BLUE_PORT
            } else {
                GREEN_PORT
            };
            format!("{}:{port}", p.ip.expect("pod IP"))
        })
        .collect();
    wanted.sort();
    for target in &targets[..2] {
        wait_for_pods(&proxy, target, &names(&echo)).await;
        let known = known(&proxy, target)
            .await
            .expect("/endpoints")
            .expect(target);
        assert_eq!(known.addresses, wanted, "{target}: {known:?}");
        let tally = all_ok(&client(&proxy, target).await, 90).await;
        for pod in names(&echo) {
            assert!(
                tally.served_by(pod) > 0,
                "{target}: {pod} got nothing: {tally}"
            );
        }
    }
    wait_for_pods(&proxy, "solo.default:80", &["solo-1"]).await;
    let tally = all_ok(&client(&proxy, "solo.default:80").await, 10).await;
    assert_eq!(tally.served_by("solo-1"), 10, "{tally}");
}
