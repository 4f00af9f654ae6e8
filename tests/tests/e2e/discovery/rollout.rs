//! A rolling restart under steady load, done by the Deployment controller
//! (`kubectl rollout restart`), with zero failed calls.
//!
//! Three pods are replaced one at a time, each new one ready before an old
//! one is deleted, while one client connection keeps several calls in
//! flight. The kubelet's SIGTERM (the backend then closes its listener,
//! sends GOAWAY and lets its calls finish) and the EndpointSlice
//! controller's update race as they do in any cluster; calls that meet the
//! GOAWAY before the slice says the pod is going must be retried elsewhere,
//! not failed. At the end only the new pods serve.

use super::real::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

const TARGET: &str = "echo.default:50051";

/// Waits until `load` has counted `more` calls beyond what it has now.
async fn wait_for_calls(load: &Load, more: u64) {
    let target = load.total().total() + more;
    wait_until(&format!("{more} more calls"), WAIT, || async {
        (load.total().total() >= target).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {}", load.total()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_call() {
    let kube = start().await;
    apply(&kube, grpc_service("echo")).await;
    apply(&kube, kube.backend_deployment("echo", 3, POD_PORT)).await;
    let old = ready_pods(&kube, "echo", 3).await;
    let proxy = proxy(&kube, &[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &names(&old)).await;
    let client = client(&proxy, TARGET).await;

    // Calls that take a moment, several in flight at any time, so some are
    // always on the pod being replaced.
    let limits = LoadLimits {
        concurrency: 8,
        max_calls: 1_000_000,
        max_duration: Duration::from_secs(180),
    };
    let request = EchoRequest {
        delay_ms: 2,
        ..EchoRequest::default()
    };
    let load = Load::start(&client, request, limits);
    wait_for_calls(&load, 200).await;

    kube.restart("echo", 1).await.expect("rollout restart");
    kube.wait_rollout("echo")
        .await
        .expect("the rollout finishes");
    let new = ready_pods(&kube, "echo", 3).await;
    for pod in &new {
        assert!(!old.contains(pod), "{} was not replaced", pod.name);
    }
    wait_for_pods(&proxy, TARGET, &names(&new)).await;
    for pod in names(&new) {
        wait_until_served_by(&load, pod).await;
    }
    wait_for_calls(&load, 200).await;

    let tally = load.stop().await;
    assert_eq!(
        (tally.ok(), tally.timed_out()),
        (tally.total(), 0),
        "every call of the rollout succeeds: {tally}"
    );
    let after = all_ok(&client, 60).await;
    for pod in &old {
        assert_eq!(
            after.served_by(&pod.name),
            0,
            "{} is gone: {after}",
            pod.name
        );
    }
}
