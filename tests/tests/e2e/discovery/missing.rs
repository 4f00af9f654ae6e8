//! Services that are not there (yet), on the real API server: requests fail
//! at once with a message saying what is missing, and the Service is picked
//! up when it is created.

use super::real::*;
use serde_json::json;
use sidelb_tests::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_created_after_the_first_request_is_picked_up() {
    let kube = start().await;
    let proxy = proxy(&kube, &["late.default:50051"]).await;

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

    for name in ["late", "later"] {
        apply(&kube, grpc_service(name)).await;
        apply(&kube, kube.backend_deployment(name, 2, POD_PORT)).await;
    }
    let late = ready_pods(&kube, "late", 2).await;
    let later = ready_pods(&kube, "later", 2).await;
    wait_for_pods(&proxy, "late.default:50051", &names(&late)).await;
    wait_for_pods(&proxy, "later.default:50051", &names(&later)).await;
    let tally = all_ok(&pinned, 40).await;
    for pod in names(&late) {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }
    all_ok(&by_authority, 10).await;

    // Deleted again: unresolvable again.
    kube.delete("v1", "Service", "late").await.expect("deleted");
    let message = wait_for_no_service(&proxy, "late.default:50051").await;
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_the_service_does_not_have_is_named_with_the_ports_it_has() {
    let kube = start().await;
    apply(
        &kube,
        service(
            "echo",
            json!([
                {"name": "grpc", "port": 50051, "targetPort": POD_PORT},
                {"name": "metrics", "port": 9090},
            ]),
        ),
    )
    .await;
    apply(&kube, kube.backend_pod("echo-1", "echo", POD_PORT)).await;
    ready_pods(&kube, "echo", 1).await;
    let proxy = proxy(&kube, &["echo.default:50052", "echo.default:grcp"]).await;

    let message = unavailable_message(&client(&proxy, "echo.default:50052").await)
        .await
        .expect("UNAVAILABLE");
    assert!(
        message.contains("service echo.default has no port 50052"),
        "{message}"
    );
    assert!(
        message.contains(&format!("50051 (grpc → {POD_PORT})")),
        "{message}"
    );
    assert!(message.contains("9090 (metrics)"), "{message}");
    let message = unavailable_message(&client(&proxy, "echo.default:grcp").await)
        .await
        .expect("UNAVAILABLE");
    assert!(message.contains("no port named `grcp`"), "{message}");

    // The port is added to the Service: the controller adds it to the
    // slice, and the proxy picks it up.
    apply(
        &kube,
        service(
            "echo",
            json!([
                {"name": "grpc", "port": 50051, "targetPort": POD_PORT},
                {"name": "grcp", "port": 50052, "targetPort": POD_PORT},
            ]),
        ),
    )
    .await;
    wait_for_pods(&proxy, "echo.default:50052", &["echo-1"]).await;
    wait_for_pods(&proxy, "echo.default:grcp", &["echo-1"]).await;
    all_ok(&client(&proxy, "echo.default:50052").await, 5).await;
}
