//! Services that are not there (yet): requests fail at once with a message
//! saying what is missing, and the Service is picked up when it appears.

use super::cluster::*;
use sidelb_tests::harness::*;

#[tokio::test]
async fn a_service_created_after_the_first_request_is_picked_up() {
    let cluster = Cluster::start();
    let proxy = cluster.proxy(&["late.default:50051"]).await;

    // Pinned (an upstream listener): the proxy is ready, and says why not.
    let pinned = client(&proxy, "late.default:50051").await;
    let message = unavailable_message(&pinned).await.expect("UNAVAILABLE");
    assert!(
        message.contains("service late.default does not exist"),
        "{message}"
    );
    assert!(message.contains("namespace `default`"), "{message}");
    // By authority: the first request makes the pool and its watch.
    let by_authority = client::connect_with_authority(proxy.outbound_addr(), "later.default:50051")
        .await
        .expect("connects");
    let message = unavailable_message(&by_authority)
        .await
        .expect("UNAVAILABLE");
    assert!(
        message.contains("service later.default does not exist"),
        "{message}"
    );

    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b"]).await;
    let port = started[0].addr().port();
    for name in ["late", "later"] {
        cluster.apply(grpc_service(name, port));
        cluster.apply_slice(&Slice::grpc(
            name,
            &format!("{name}-1"),
            &[&started[0], &started[1]],
        ));
    }
    wait_for_pods(&proxy, "late.default:50051", &["a", "b"]).await;
    wait_for_pods(&proxy, "later.default:50051", &["a", "b"]).await;
    let tally = all_ok(&pinned, 40).await;
    assert!(
        tally.served_by("a") > 0 && tally.served_by("b") > 0,
        "{tally}"
    );
    all_ok(&by_authority, 10).await;

    // Deleted again: unresolvable again.
    cluster
        .api
        .delete("v1", "Service", Some(NAMESPACE), "late")
        .expect("deleted");
    let message = wait_for_no_service(&proxy, "late.default:50051").await;
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test]
async fn a_port_the_service_does_not_have_is_named_with_the_ports_it_has() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let pod = pods.start("a").await;
    cluster.apply(service(
        "echo",
        serde_json::json!([
            { "name": "grpc", "port": 50051, "targetPort": pod.addr().port() },
            { "name": "metrics", "port": 9090 },
        ]),
    ));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[&pod]));
    let proxy = cluster
        .proxy(&["echo.default:50052", "echo.default:grcp"])
        .await;

    let message = unavailable_message(&client(&proxy, "echo.default:50052").await)
        .await
        .expect("UNAVAILABLE");
    assert!(
        message.contains("service echo.default has no port 50052"),
        "{message}"
    );
    assert!(
        message.contains(&format!("50051 (grpc → {})", pod.addr().port())),
        "{message}"
    );
    assert!(message.contains("9090 (metrics)"), "{message}");
    let message = unavailable_message(&client(&proxy, "echo.default:grcp").await)
        .await
        .expect("UNAVAILABLE");
    assert!(message.contains("no port named `grcp`"), "{message}");

    // The port is added to the Service: picked up.
    cluster.apply(service(
        "echo",
        serde_json::json!([
            { "name": "grpc", "port": 50051, "targetPort": pod.addr().port() },
            { "name": "grcp", "port": 50052, "targetPort": pod.addr().port() },
        ]),
    ));
    cluster.apply_slice(
        &Slice::new("echo", "echo-1")
            .port(Some("grpc"), pod.addr().port())
            .port(Some("grcp"), pod.addr().port())
            .pod(&pod, conditions::ready()),
    );
    wait_for_pods(&proxy, "echo.default:50052", &["a"]).await;
    wait_for_pods(&proxy, "echo.default:grcp", &["a"]).await;
    all_ok(&client(&proxy, "echo.default:50052").await, 5).await;
}
