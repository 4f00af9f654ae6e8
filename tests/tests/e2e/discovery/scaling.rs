//! A Deployment scaled up and down while an app keeps calling on one
//! connection: new pods get calls once the real EndpointSlice controller
//! lists them ready, removed ones get none, and no call fails on the way.

use super::real::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_up_pods_get_calls_once_ready_and_scaled_down_ones_none() {
    let kube = start().await;
    apply(&kube, grpc_service("echo")).await;
    apply(&kube, kube.backend_deployment("echo", 2, POD_PORT)).await;
    let first = ready_pods(&kube, "echo", 2).await;
    let proxy = proxy(&kube, &[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &names(&first)).await;
    let client = client(&proxy, TARGET).await;
    let tally = all_ok(&client, 60).await;
    for pod in names(&first) {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }

    // Scaled up under load: each new pod takes calls once it is ready.
    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
    kube.scale("echo", 4).await.expect("scaled to 4");
    let four = ready_pods(&kube, "echo", 4).await;
    wait_for_pods(&proxy, TARGET, &names(&four)).await;
    for pod in names(&four) {
        wait_until_served_by(&load, pod).await;
    }

    // Scaled down: the pods the ReplicaSet picks are deleted (SIGTERM while
    // calls are on them); the one left takes everything.
    kube.scale("echo", 1).await.expect("scaled to 1");
    let left = ready_pods(&kube, "echo", 1).await;
    wait_for_pods(&proxy, TARGET, &names(&left)).await;
    let tally = load.stop().await;
    assert_eq!(
        tally.ok(),
        tally.total(),
        "no call failed while scaling: {tally}"
    );
    let after = all_ok(&client, 40).await;
    assert_eq!(after.served_by(&left[0].name), 40, "{after}");

    // Down to none: the Service has no endpoints, and the proxy says so.
    kube.scale("echo", 0).await.expect("scaled to 0");
    ready_pods(&kube, "echo", 0).await;
    wait_for_pods(&proxy, TARGET, &[]).await;
    let message = unavailable_message(&client).await.expect("UNAVAILABLE");
    assert!(
        message.contains("no endpoints for service echo.default:50051"),
        "{message}"
    );
}
