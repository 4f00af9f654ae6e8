//! The API server misbehaving: dropped watches, errors, hangs, a compacted
//! history (410 Gone → relist), missing RBAC (403), refused credentials
//! (401). Through transient faults the last known endpoints keep serving and
//! later changes still arrive; the others fail requests at once with what
//! to fix. While the API server fails, the proxy asks again with growing
//! waits (counted by the server: no tight loop), and while it hangs the
//! proxy waits on the held requests instead of piling up new ones.
//!
//! These stay on the fake API server: the real one cannot be made to answer
//! 500, hang, cut every watch or compact its history at a moment a test
//! picks, nor count the requests it gets. A real kube-apiserver killed and
//! restarted is in [`super::restart`].

use super::cluster::*;
use sidelb_fake_apiserver::FaultMode;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;
use tokio::time::Instant;

const TARGET: &str = "echo.default:50051";

/// A cluster with Service echo on pods a and b, and a proxy balancing it.
async fn serving_a_and_b() -> (Cluster, Pods, Vec<Backend>, Proxy, Echo) {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b"]).await;
    cluster.apply(grpc_service("echo", started[0].addr().port()));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[&started[0], &started[1]]));
    let proxy = cluster.proxy(&[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &["a", "b"]).await;
    let client = client(&proxy, TARGET).await;
    (cluster, pods, started, proxy, client)
}

#[tokio::test]
async fn not_ready_until_the_api_server_has_answered_once() {
    // No upstream listener: nothing is watched at start, and still /ready
    // waits for the API server.
    let cluster = Cluster::start();
    cluster.api.set_fault_mode(FaultMode::Fail);
    let proxy = Proxy::spawn(cluster.proxy_options().unready())
        .await
        .expect("admin server up");
    let (status, body) = proxy.admin_get("/ready").await.expect("answered");
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(
        body.contains("Kubernetes API server") && body.contains("has not answered"),
        "{body}"
    );
    cluster.api.set_fault_mode(FaultMode::Normal);
    wait_until("ready once the API server answers", WAIT, || async {
        let (status, _) = proxy.admin_get("/ready").await.ok()?;
        status.is_success().then_some(())
    })
    .await
    .expect("ready");
    // Later outages keep it ready: the last endpoints stay in use.
    cluster.api.set_fault_mode(FaultMode::Fail);
    let (status, body) = proxy.admin_get("/ready").await.expect("answered");
    assert_eq!(status.as_u16(), 200, "{body}");
}

#[tokio::test]
async fn dropped_watches_resume_and_miss_nothing() {
    let (cluster, mut pods, started, proxy, client) = serving_a_and_b().await;
    let c = pods.start("c").await;
    for round in 0..3 {
        cluster.api.drop_watches();
        // Changes right after the drop, before or after the proxy watches
        // again: none is lost.
        let slice = match round {
            0 => Slice::grpc("echo", "echo-1", &[&started[0], &started[1], &c]),
            1 => Slice::grpc("echo", "echo-1", &[&started[1], &c]),
            _ => Slice::grpc("echo", "echo-1", &[&c]),
        };
        cluster.apply_slice(&slice);
        let wanted: &[&str] = match round {
            0 => &["a", "b", "c"],
            1 => &["b", "c"],
            _ => &["c"],
        };
        wait_for_pods(&proxy, TARGET, wanted).await;
    }
    let tally = all_ok(&client, 20).await;
    assert_eq!(tally.served_by("c"), 20, "{tally}");
}

#[tokio::test]
async fn a_compacted_history_makes_the_proxy_relist() {
    let (cluster, mut pods, started, proxy, client) = serving_a_and_b().await;
    let lists_before = cluster.api.requests("endpointslices", "list");

    // While the proxy cannot watch, a's slice is deleted and a new one made;
    // then the history is compacted, so resuming from the proxy's
    // resourceVersion gets 410 Gone and only a relist can tell what changed.
    cluster.api.stop();
    let c = pods.start("c").await;
    cluster.delete_slice("echo-1");
    cluster.apply_slice(&Slice::grpc("echo", "echo-2", &[&started[1], &c]));
    cluster.api.restart_with_compaction();
    cluster.api.start_again().expect("listens again");

    wait_for_pods(&proxy, TARGET, &["b", "c"]).await;
    assert!(
        cluster.api.requests("endpointslices", "list") > lists_before,
        "the proxy listed again after 410 Gone"
    );
    let tally = all_ok(&client, 40).await;
    assert_eq!(tally.served_by("a"), 0, "{tally}");
    assert!(tally.served_by("c") > 0, "{tally}");

    // And watches again from the new list: a later change arrives.
    cluster.apply_slice(&Slice::grpc(
        "echo",
        "echo-2",
        &[&started[0], &started[1], &c],
    ));
    wait_for_pods(&proxy, TARGET, &["a", "b", "c"]).await;
}

#[tokio::test]
async fn missing_rbac_fails_requests_with_what_to_grant() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let pod = pods.start("a").await;
    cluster.apply(grpc_service("echo", pod.addr().port()));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[&pod]));
    cluster.api.forbid("discovery.k8s.io", "endpointslices");

    let mut proxy = cluster.proxy(&[TARGET]).await;
    let client = client(&proxy, TARGET).await;
    let message = unavailable_message(&client).await.expect("UNAVAILABLE");
    for needle in [
        "cannot list endpointslices.discovery.k8s.io in namespace default",
        SERVICE_ACCOUNT,
        "get, list and watch on services and endpointslices",
        "RBAC",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    let log = wait_until("the proxy to log the 403", WAIT, || {
        let stderr = proxy.process().stderr();
        async move {
            stderr
                .lines()
                .find(|l| l.contains("cannot list endpointslices.discovery.k8s.io"))
                .map(str::to_owned)
        }
    })
    .await
    .expect("a log line");
    assert!(
        log.contains("ERROR") && log.contains("rbac.subjects"),
        "{log}"
    );

    // Granted: picked up without a restart.
    cluster.api.allow("discovery.k8s.io", "endpointslices");
    wait_for_pods(&proxy, TARGET, &["a"]).await;
    all_ok(&client, 10).await;
}

#[tokio::test]
async fn refused_credentials_fail_requests_with_what_to_check() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let pod = pods.start("a").await;
    cluster.apply(grpc_service("echo", pod.addr().port()));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[&pod]));
    // The same cluster with a token the API server does not accept (an
    // expired or foreign service-account token).
    let scratch = ScratchDir::new("wrong-token").expect("scratch dir");
    let kubeconfig = std::fs::read_to_string(cluster.api.kubeconfig_path())
        .expect("kubeconfig")
        .replace("sidelb-test-token", "not-the-token");
    let path = scratch.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).expect("written");

    let proxy = Proxy::spawn(
        cluster
            .proxy_options()
            .env("KUBECONFIG", path.display().to_string())
            .upstream(TARGET),
    )
    .await
    .expect("proxy ready");
    let message = unavailable_message(&client(&proxy, TARGET).await)
        .await
        .expect("UNAVAILABLE");
    assert!(
        message.contains("refused the proxy's credentials"),
        "{message}"
    );
    assert!(message.contains("in namespace default"), "{message}");
}

/// The most requests the proxy's two watches of one Service (its Service and
/// its EndpointSlices) may make in `elapsed` while every request fails: per
/// watch the first at once, then after 0.8 s, doubling (plus jitter, which
/// only delays), so `1 + ⌊log2(t / 0.8 s + 1)⌋` each; and one spare each.
fn most_requests_while_failing(elapsed: Duration) -> u64 {
    let waits = (elapsed.as_secs_f64() / 0.8 + 1.0).log2().floor() as u64;
    2 * (1 + waits + 1)
}

#[test]
fn the_request_bound_follows_the_watch_backoff() {
    assert_eq!(most_requests_while_failing(Duration::ZERO), 4);
    assert_eq!(most_requests_while_failing(Duration::from_secs(6)), 10);
    // A retry every second would make 12 in 6 s, a tight loop thousands.
}

#[tokio::test]
async fn a_failing_or_hanging_api_server_is_retried_with_backoff_and_changes_arrive() {
    let (cluster, mut pods, started, proxy, client) = serving_a_and_b().await;
    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
    let (a, b) = (&started[0], &started[1]);

    // Every request answered 500, the watches cut. A change is made while
    // the proxy cannot see it.
    cluster.api.set_fault_mode(FaultMode::Fail);
    let before = cluster.api.api_requests();
    let failing_since = Instant::now();
    cluster.api.drop_watches();
    let c = pods.start("c").await;
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[b, &c]));

    // For a few seconds the last good endpoints keep serving, and the proxy
    // keeps asking, but with growing waits.
    wait_until("the proxy to retry", WAIT, || async {
        (cluster.api.api_requests() >= before + 2).then_some(())
    })
    .await
    .expect("the proxy retries");
    load.take_window();
    wait_until("a window of 6 s", WAIT, || async {
        (failing_since.elapsed() >= Duration::from_secs(6)).then_some(())
    })
    .await
    .expect("the window passes");
    let made = cluster.api.api_requests() - before;
    let elapsed = failing_since.elapsed();
    let most = most_requests_while_failing(elapsed);
    assert!(
        made <= most,
        "{made} requests to the failing API server in {elapsed:?}; the backoff allows {most}"
    );
    let during = load.take_window();
    assert!(
        during.total() > 0 && during.ok() == during.total(),
        "{during}"
    );
    assert_eq!(
        during.served_by("c"),
        0,
        "the change is not seen yet: {during}"
    );
    assert!(
        during.served_by("a") > 0 && during.served_by("b") > 0,
        "the last known endpoints serve: {during}"
    );

    // Healthy again: the change made meanwhile arrives.
    cluster.api.set_fault_mode(FaultMode::Normal);
    wait_for_pods(&proxy, TARGET, &["b", "c"]).await;
    wait_until_served_by(&load, "c").await;

    // Hanging: requests are held, not answered. The proxy's re-watches wait
    // on them instead of piling up new ones.
    cluster.api.set_fault_mode(FaultMode::Hang);
    let before = cluster.api.api_requests();
    let hanging_since = Instant::now();
    cluster.api.drop_watches();
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a, &c]));
    wait_until("a window of 3 s", WAIT, || async {
        (hanging_since.elapsed() >= Duration::from_secs(3)).then_some(())
    })
    .await
    .expect("the window passes");
    let made = cluster.api.api_requests() - before;
    assert!(
        (1..=4).contains(&made),
        "{made} requests held by the hanging API server"
    );
    cluster.api.set_fault_mode(FaultMode::Normal);
    wait_for_pods(&proxy, TARGET, &["a", "c"]).await;

    let tally = load.stop().await;
    assert_eq!(
        tally.ok(),
        tally.total(),
        "no call failed meanwhile: {tally}"
    );
}
