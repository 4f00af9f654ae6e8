//! Readiness and termination as the real EndpointSlice controller writes
//! them from what the node agent reports: a pod whose readiness probe fails
//! is listed not ready and gets no new calls, and is back once it passes; a
//! deleted pod is listed terminating at once and gets no new calls, while
//! the call already on it goes on to its end before the pod exits.

use super::real::*;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sidelb_tests::harness::kube_cluster::Kube;
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";

/// The conditions (ready, serving, terminating) of pod `pod` in `slices`.
fn conditions_of(slices: &[EndpointSlice], pod: &str) -> Option<(bool, bool, bool)> {
    let endpoint = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))?;
    let c = endpoint.conditions.clone().unwrap_or_default();
    Some((
        c.ready.unwrap_or(true),
        c.serving.unwrap_or(true),
        c.terminating.unwrap_or(false),
    ))
}

/// Waits until the controller lists `pod` with `(ready, serving, terminating)`
/// satisfying `wanted`.
async fn wait_for_conditions(
    kube: &Kube,
    pod: &str,
    what: &str,
    wanted: impl Fn((bool, bool, bool)) -> bool,
) {
    let outcome = wait_until(&format!("{pod} to be listed {what}"), WAIT, || async {
        let slices = kube.slices("echo").await.ok()?;
        conditions_of(&slices, pod).filter(|c| wanted(*c))
    })
    .await;
    if let Err(e) = outcome {
        panic!("{e:#}; the slices: {:?}", kube.slices("echo").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_readiness_or_terminating_gets_no_new_calls_and_in_flight_ones_finish() {
    let kube = start().await;
    apply(&kube, grpc_service("echo")).await;
    for pod in ["echo-a", "echo-b", "echo-c"] {
        apply(&kube, kube.backend_pod(pod, "echo", POD_PORT)).await;
    }
    ready_pods(&kube, "echo", 3).await;
    let proxy = proxy(&kube, &[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &["echo-a", "echo-b", "echo-c"]).await;
    let client = client(&proxy, TARGET).await;

    // echo-a's readiness probe fails: listed not ready, it gets nothing new.
    kube.fail_readiness("echo-a", true).expect("flag");
    wait_for_conditions(&kube, "echo-a", "not ready", |(ready, _, _)| !ready).await;
    wait_for_pods(&proxy, TARGET, &["echo-b", "echo-c"]).await;
    let tally = all_ok(&client, 60).await;
    assert_eq!(tally.served_by("echo-a"), 0, "{tally}");
    // It passes again: back in.
    kube.fail_readiness("echo-a", false).expect("flag");
    wait_for_pods(&proxy, TARGET, &["echo-a", "echo-b", "echo-c"]).await;
    let tally = all_ok(&client, 90).await;
    assert!(tally.served_by("echo-a") > 0, "{tally}");

    // A call is on echo-b when it is deleted: the pod is listed terminating
    // and gets no new calls, its process drains (SIGTERM) and the call goes on.
    let mut stream = OpenCall::open_on(&client, "echo-b", 60)
        .await
        .expect("a call on echo-b");
    kube.delete_pod("echo-b").await.expect("deleted");
    wait_for_conditions(&kube, "echo-b", "terminating", |(ready, _, terminating)| {
        !ready && terminating
    })
    .await;
    wait_for_pods(&proxy, TARGET, &["echo-a", "echo-c"]).await;
    let tally = all_ok(&client, 60).await;
    assert_eq!(tally.served_by("echo-b"), 0, "{tally}");
    assert!(
        kube.pods("echo")
            .await
            .expect("pods")
            .iter()
            .any(|p| p.name == "echo-b" && p.deleting),
        "echo-b is still shutting down, held by the call on it"
    );
    let reply = stream.exchange().await.expect("the call on echo-b goes on");
    assert_eq!(reply.backend, "echo-b");
    stream.finish().await.expect("and ends cleanly");
    kube.wait_pod_gone("echo-b")
        .await
        .expect("echo-b exits once drained");
    ready_pods(&kube, "echo", 2).await;
}
