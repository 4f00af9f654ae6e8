//! Pods coming and going through EndpointSlice events, while an app keeps
//! calling on one connection.

use super::cluster::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";

#[tokio::test]
async fn scale_up_and_down_through_slice_events() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b"]).await;
    let (a, b) = (&started[0], &started[1]);
    cluster.apply(grpc_service("echo", a.addr().port()));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a, b]));
    let proxy = cluster.proxy(&[TARGET]).await;
    let client = client(&proxy, TARGET).await;

    let tally = all_ok(&client, 60).await;
    assert!(
        tally.served_by("a") > 0 && tally.served_by("b") > 0,
        "{tally}"
    );

    // Scale up: c is added to the slice while the app keeps calling.
    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
    let c = pods.start("c").await;
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a, b, &c]));
    wait_until_served_by(&load, "c").await;

    // Scale down: a leaves the slice (its process still runs, as a pod
    // being deleted does for a while); it gets no new calls.
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[b, &c]));
    wait_for_pods(&proxy, TARGET, &["b", "c"]).await;
    let tally = load.stop().await;
    assert_eq!(
        tally.ok(),
        tally.total(),
        "no call failed while scaling: {tally}"
    );
    let after = all_ok(&client, 60).await;
    assert_eq!(after.served_by("a"), 0, "a was removed: {after}");
    assert!(
        after.served_by("b") > 0 && after.served_by("c") > 0,
        "{after}"
    );

    // Down to nothing: the Service has no endpoints, and says so.
    cluster.apply_slice(&Slice::new("echo", "echo-1").port(Some("grpc"), a.addr().port()));
    wait_for_pods(&proxy, TARGET, &[]).await;
    let message = unavailable_message(&client).await.expect("UNAVAILABLE");
    assert!(
        message.contains("no endpoints for service echo.default:50051"),
        "{message}"
    );
}

#[tokio::test]
async fn slices_are_merged_across_slices_families_and_duplicates() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b", "c"]).await;
    let (a, b, c) = (&started[0], &started[1], &started[2]);
    let v6 = Backend::spawn(
        "d",
        BackendOptions {
            addr: Some("[::1]:0".parse().expect("address")),
            ..BackendOptions::default()
        },
    )
    .await
    .expect("IPv6 pod starts");
    let port = a.addr().port();
    cluster.apply(grpc_service("echo", port));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a, b]));
    cluster.apply_slice(&Slice::grpc("echo", "echo-2", &[c]));
    // An IPv6 slice of a dual-stack Service; its pod listens on its own port.
    cluster.apply_slice(&Slice::grpc("echo", "echo-v6", &[&v6]).address_type("IPv6"));
    // FQDN slices are not for sidelb.
    cluster.apply_slice(
        &Slice::new("echo", "echo-fqdn")
            .address_type("FQDN")
            .port(Some("grpc"), port)
            .address("pod.example.com"),
    );
    // Another Service's slice is not this one's.
    cluster.apply_slice(&Slice::grpc("other", "other-1", &[a]));

    let proxy = cluster.proxy(&[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &["a", "b", "c", "d"]).await;
    let client = client(&proxy, TARGET).await;
    let tally = all_ok(&client, 120).await;
    for pod in ["a", "b", "c", "d"] {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }

    // The controller moves c into echo-1 (listed in both for a moment): c
    // stays, once.
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a, b, c]));
    cluster.delete_slice("echo-2");
    wait_for_pods(&proxy, TARGET, &["a", "b", "c", "d"]).await;
    // A whole slice goes away.
    cluster.delete_slice("echo-v6");
    wait_for_pods(&proxy, TARGET, &["a", "b", "c"]).await;
    let tally = all_ok(&client, 60).await;
    assert_eq!(tally.served_by("d"), 0, "{tally}");
}
