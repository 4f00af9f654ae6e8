//! RBAC judged by kube-apiserver: a proxy whose service account has no grant
//! is refused by the real authorizer, fails its calls with UNAVAILABLE saying
//! what to grant, and picks the grant up, once it is made, without a restart.

use super::real::*;

/// The proxy's user as kube-apiserver names it in a 403.
const USER: &str = "system:serviceaccount:default:app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_the_grant_says_what_to_grant_and_serves_once_granted() {
    let kube = start().await;
    apply(&kube, grpc_service("echo")).await;
    apply(&kube, kube.backend_deployment("echo", 2, POD_PORT)).await;
    let pods = ready_pods(&kube, "echo", 2).await;

    let kubeconfig = kube
        .token_kubeconfig(ACCOUNT)
        .await
        .unwrap_or_else(|e| panic!("a token without a grant: {e:#}"));
    let target = "echo.default:50051";
    let proxy = proxy_with(&kubeconfig, &[target], &[]).await;
    let client = client(&proxy, target).await;
    let message = unavailable_message(&client).await.expect("UNAVAILABLE");
    for needle in [
        USER,
        "cannot list",
        "get, list and watch on services and endpointslices",
        "RBAC",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }

    kube.grant_proxy_access()
        .await
        .unwrap_or_else(|e| panic!("granting: {e:#}"));
    wait_for_pods(&proxy, target, &names(&pods)).await;
    let tally = all_ok(&client, 40).await;
    for pod in names(&pods) {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }
}
