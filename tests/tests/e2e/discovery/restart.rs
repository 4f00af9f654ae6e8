//! kube-apiserver killed and started again (`cluster/cluster.sh up`) under
//! load: while it is gone the proxy keeps balancing over the endpoints it
//! last knew, and once it is back the proxy watches again and follows
//! changes made after it.

use super::real::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;

const TARGET: &str = "echo.default:50051";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_keeps_the_endpoints_and_picks_up_later_changes() {
    let mut kube = start().await;
    apply(&kube, grpc_service("echo")).await;
    apply(&kube, kube.backend_deployment("echo", 2, POD_PORT)).await;
    let first = ready_pods(&kube, "echo", 2).await;
    let proxy = proxy(&kube, &[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &names(&first)).await;
    let client = client(&proxy, TARGET).await;
    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());

    // Gone: connections cut, nothing listening. The last endpoints serve.
    kube.kill_apiserver().await.expect("kube-apiserver killed");
    let tally = all_ok(&client, 40).await;
    for pod in names(&first) {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }
    let (status, body) = proxy.admin_get("/ready").await.expect("answered");
    assert_eq!(status.as_u16(), 200, "still ready: {body}");

    // Back on the same address; a change made now reaches the proxy.
    kube.up().await.expect("kube-apiserver back");
    kube.scale("echo", 3).await.expect("scaled to 3");
    let three = ready_pods(&kube, "echo", 3).await;
    wait_for_pods(&proxy, TARGET, &names(&three)).await;
    for pod in names(&three) {
        wait_until_served_by(&load, pod).await;
    }

    let tally = load.stop().await;
    assert_eq!(
        tally.ok(),
        tally.total(),
        "no call failed meanwhile: {tally}"
    );
}
