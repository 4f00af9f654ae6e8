//! Slice shapes the real EndpointSlice controller writes only in conditions
//! a test cannot bring about on demand, so they run against the fake API
//! server: a Service split over several slices, a dual-stack Service's IPv6
//! slice, an FQDN slice (which only other controllers write), a
//! pod listed in two slices for a moment while the controller moves it, and
//! a whole slice going away. The proxy merges what is sound, once each.

use super::cluster::*;
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";

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
