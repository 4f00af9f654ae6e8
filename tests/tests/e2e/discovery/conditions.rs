//! Which endpoints get calls, by every combination of conditions a slice
//! can carry: ready ones; serving-but-terminating ones only when none is
//! ready; never the others; no conditions at all counts as ready. Written by
//! hand to the fake API server because the real controller writes most of
//! these only in passing (a pod serving while terminating, with no other
//! ready) or never (conditions left unset); what it writes from real pods is
//! in [`super::readiness`].

use super::cluster::*;
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";

fn slice(pods: &[(&Backend, serde_json::Value)]) -> Slice {
    let port = pods.first().map_or(1, |(p, _)| p.addr().port());
    let mut slice = Slice::new("echo", "echo-1").port(Some("grpc"), port);
    for (pod, conditions) in pods {
        slice = slice.pod(pod, conditions.clone());
    }
    slice
}

#[tokio::test]
async fn ready_endpoints_then_serving_terminating_ones_never_the_rest() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b", "c", "d"]).await;
    let (a, b, c, d) = (&started[0], &started[1], &started[2], &started[3]);
    cluster.apply(grpc_service("echo", a.addr().port()));
    cluster.apply_slice(&slice(&[
        (a, conditions::ready()),
        (b, conditions::not_ready()),
        (c, conditions::terminating_serving()),
        (d, conditions::terminating()),
    ]));
    let proxy = cluster.proxy(&[TARGET]).await;
    let client = client(&proxy, TARGET).await;

    // One ready endpoint: it gets everything, the terminating one nothing.
    wait_for_pods(&proxy, TARGET, &["a"]).await;
    let tally = all_ok(&client, 40).await;
    assert_eq!(tally.served_by("a"), 40, "{tally}");

    // a starts terminating too, and stops serving: no endpoint is ready, so
    // the one still serving while terminating takes the calls.
    cluster.apply_slice(&slice(&[
        (a, conditions::terminating()),
        (b, conditions::not_ready()),
        (c, conditions::terminating_serving()),
        (d, conditions::terminating()),
    ]));
    wait_for_pods(&proxy, TARGET, &["c"]).await;
    let tally = all_ok(&client, 40).await;
    assert_eq!(tally.served_by("c"), 40, "{tally}");

    // b's conditions are left unset, which the API defines as ready: the
    // terminating endpoint is dropped again.
    cluster.apply_slice(&slice(&[
        (b, conditions::unset()),
        (c, conditions::terminating_serving()),
    ]));
    wait_for_pods(&proxy, TARGET, &["b"]).await;
    let tally = all_ok(&client, 40).await;
    assert_eq!(tally.served_by("b"), 40, "{tally}");

    // Nothing ready or serving: no endpoints.
    cluster.apply_slice(&slice(&[
        (b, conditions::not_ready()),
        (c, conditions::terminating()),
    ]));
    wait_for_pods(&proxy, TARGET, &[]).await;
    let message = unavailable_message(&client).await.expect("UNAVAILABLE");
    assert!(message.contains("no endpoints"), "{message}");
}
