//! From the port an app names to the port pods listen on: by Service port
//! number or name, through a numeric or named `targetPort`, and a Service's
//! single unnamed port.

use super::cluster::*;
use serde_json::json;

#[tokio::test]
async fn ports_by_number_and_name_reach_each_slices_target_port() {
    let cluster = Cluster::start();
    // Two workloads behind one Service whose targetPort is a *name*: each
    // resolved it to a different number, so the controller wrote two slices.
    let mut blue = Pods::new();
    let blue_pods = blue.start_all(&["blue-1", "blue-2"]).await;
    let mut green = Pods::new();
    let green_pod = green.start("green-1").await;
    let (blue_port, green_port) = (blue_pods[0].addr().port(), green_pod.addr().port());
    assert_ne!(blue_port, green_port);
    cluster.apply(service(
        "echo",
        json!([
            { "name": "metrics", "port": 9090, "targetPort": 9090 },
            { "name": "grpc", "port": 50051, "targetPort": "grpc" },
        ]),
    ));
    cluster.apply_slice(
        &Slice::new("echo", "echo-blue")
            .port(Some("metrics"), 9090)
            .port(Some("grpc"), blue_port)
            .pod(&blue_pods[0], conditions::ready())
            .pod(&blue_pods[1], conditions::ready()),
    );
    cluster.apply_slice(
        &Slice::new("echo", "echo-green")
            .port(Some("grpc"), green_port)
            .port(Some("metrics"), 9090)
            .pod(&green_pod, conditions::ready()),
    );
    // A Service with a single unnamed port, 80 → the pod's port.
    let mut solo = Pods::new();
    let solo_pod = solo.start("solo-1").await;
    cluster.apply(service(
        "solo",
        json!([{ "port": 80, "targetPort": solo_pod.addr().port() }]),
    ));
    cluster.apply_slice(
        &Slice::new("solo", "solo-1")
            .port(None, solo_pod.addr().port())
            .pod(&solo_pod, conditions::ready()),
    );

    let targets = ["echo.default:50051", "echo.default:grpc", "solo.default:80"];
    let proxy = cluster.proxy(&targets).await;
    for target in &targets[..2] {
        let known = known(&proxy, target)
            .await
            .expect("/endpoints")
            .expect(target);
        let mut wanted = vec![
            format!("{}", blue_pods[0].addr()),
            format!("{}", blue_pods[1].addr()),
            format!("{}", green_pod.addr()),
        ];
        wanted.sort();
        assert_eq!(known.addresses, wanted, "{target}: {known:?}");
        let tally = all_ok(&client(&proxy, target).await, 90).await;
        for pod in ["blue-1", "blue-2", "green-1"] {
            assert!(
                tally.served_by(pod) > 0,
                "{target}: {pod} got nothing: {tally}"
            );
        }
    }
    let tally = all_ok(&client(&proxy, "solo.default:80").await, 10).await;
    assert_eq!(tally.served_by("solo-1"), 10, "{tally}");

    // Three pools, two Services: each Service is listed and watched once.
    cluster.wait_for_watches("endpointslices", 2).await;
    cluster.wait_for_watches("services", 2).await;
    assert_eq!(cluster.api.requests("endpointslices", "list"), 2);
    assert_eq!(cluster.api.requests("services", "list"), 2);
}
