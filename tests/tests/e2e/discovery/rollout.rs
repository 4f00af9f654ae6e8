//! A rolling restart under steady load, the way a Deployment does it, with
//! zero failed calls.
//!
//! Three pods are replaced one by one while one client connection keeps
//! calling. Each old pod is marked terminating in the EndpointSlice
//! (`ready: false, serving: true, terminating: true`), gets SIGTERM (the test
//! backend then closes its listener, sends GOAWAY, lets its calls finish and
//! exits 0), and a new pod is added ready. In a cluster the endpoint update
//! and the SIGTERM race (the EndpointSlice controller and the kubelet act on
//! their own), so both orders are played:
//!
//! - slice first: once the proxy has applied it, the terminating pod gets no
//!   new call while ready ones exist (its own call count stays still while the
//!   load goes on), yet the stream already on it goes on and ends cleanly
//!   after SIGTERM;
//! - SIGTERM first: the pod sends GOAWAY while the proxy still lists it as
//!   ready, so calls race the GOAWAY; those are never processed by the pod and
//!   must be retried elsewhere, not failed.
//!
//! Every call of the load succeeds, every old pod drains cleanly (exit 0:
//! nothing was cut), and every new pod serves calls.

use super::cluster::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

const TARGET: &str = "echo.default:50051";

/// Which of the two acts first when a pod is replaced.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// The EndpointSlice controller marks the pod terminating, then the
    /// kubelet sends SIGTERM.
    SliceFirst,
    /// SIGTERM (and the pod's GOAWAY) reaches the proxy before the slice update.
    SigtermFirst,
}

/// The slice of every pod in `ready` (ready) and `terminating` (terminating
/// but serving).
fn slice(ready: &[&Backend], terminating: &[&Backend]) -> Slice {
    let port = ready.first().map_or(1, |p| p.addr().port());
    let mut slice = Slice::new("echo", "echo-1").port(Some("grpc"), port);
    for pod in ready {
        slice = slice.pod(pod, conditions::ready());
    }
    for pod in terminating {
        slice = slice.pod(pod, conditions::terminating_serving());
    }
    slice
}

/// Waits until `load` has counted `more` calls beyond what it has now.
async fn wait_for_calls(load: &Load, more: u64) {
    let target = load.total().total() + more;
    wait_until(&format!("{more} more calls"), WAIT, || async {
        (load.total().total() >= target).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {}", load.total()));
}

fn names<'a>(pods: impl IntoIterator<Item = &'a Backend>) -> Vec<&'a str> {
    pods.into_iter().map(Backend::name).collect()
}

#[tokio::test]
async fn a_rolling_restart_under_load_fails_no_call() {
    let cluster = Cluster::start();
    let mut group = Pods::new();
    let mut serving: Vec<Backend> = group.start_all(&["old-0", "old-1", "old-2"]).await;
    cluster.apply(grpc_service("echo", serving[0].addr().port()));
    cluster.apply_slice(&slice(&serving.iter().collect::<Vec<_>>(), &[]));
    let proxy = cluster.proxy(&[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &names(&serving)).await;
    let client = client(&proxy, TARGET).await;

    // Steady load: calls that take a moment, several in flight at any time,
    // so some are always on the pod being replaced.
    let limits = LoadLimits {
        concurrency: 8,
        max_calls: 1_000_000,
        max_duration: Duration::from_secs(180),
    };
    let request = EchoRequest {
        delay_ms: 2,
        ..EchoRequest::default()
    };
    let load = Load::start(&client, request, limits);
    wait_for_calls(&load, 200).await;

    let orders = [Order::SliceFirst, Order::SigtermFirst, Order::SliceFirst];
    for (i, order) in orders.into_iter().enumerate() {
        let old = serving.remove(0);
        let new = group.start(&format!("new-{i}")).await;
        // A stream on the old pod, in flight through its whole shutdown.
        let mut stream = OpenCall::open_on(&client, old.name(), 60)
            .await
            .unwrap_or_else(|e| panic!("{order:?}: a stream on {}: {e:#}", old.name()));
        let others: Vec<&Backend> = serving.iter().collect();
        let mut after: Vec<&Backend> = others.clone();
        after.push(&new);

        match order {
            Order::SliceFirst => {
                // The new pod is ready and the old one terminating, in one update.
                cluster.apply_slice(&slice(&after, &[&old]));
                wait_for_pods(&proxy, TARGET, &names(after.iter().copied())).await;
                // While ready pods exist, the terminating one gets nothing new.
                let before = old.stats().await.expect("stats of the old pod").calls;
                wait_for_calls(&load, 300).await;
                let later = old.stats().await.expect("stats of the old pod").calls;
                assert_eq!(
                    later,
                    before,
                    "{}: new calls reached the terminating pod",
                    old.name()
                );
                old.terminate().expect("SIGTERM");
                old.wait_draining().await.expect("the old pod drains");
            }
            Order::SigtermFirst => {
                // Surge: the new pod is ready first.
                let mut with_new = after.clone();
                with_new.push(&old);
                cluster.apply_slice(&slice(&with_new, &[]));
                wait_for_pods(&proxy, TARGET, &names(with_new.iter().copied())).await;
                wait_for_calls(&load, 100).await;
                // The kubelet is quicker than the EndpointSlice controller:
                // GOAWAY arrives while the proxy still balances over the pod.
                old.terminate().expect("SIGTERM");
                old.wait_draining().await.expect("the old pod drains");
                wait_for_calls(&load, 200).await;
                cluster.apply_slice(&slice(&after, &[&old]));
                wait_for_pods(&proxy, TARGET, &names(after.iter().copied())).await;
            }
        }

        // The stream that was on the old pod goes on, and ends cleanly.
        let reply = stream.exchange().await.unwrap_or_else(|e| {
            panic!(
                "{order:?}: the stream on the draining {} broke: {e:#}",
                old.name()
            )
        });
        assert_eq!(reply.backend, old.name());
        stream.finish().await.expect("the stream ends cleanly");
        let mut old = old;
        let exit = old.wait_exit().await.expect("the old pod exits");
        assert!(
            exit.success(),
            "{order:?}: {} did not drain cleanly: {exit}",
            old.name()
        );
        // The controller drops the gone pod from the slice.
        cluster.apply_slice(&slice(&after, &[]));
        serving.push(new);
        wait_for_calls(&load, 200).await;
    }

    let tally = load.stop().await;
    assert_eq!(
        (tally.ok(), tally.timed_out()),
        (tally.total(), 0),
        "every call of the rollout succeeds: {tally}"
    );
    for pod in &serving {
        assert!(tally.served_by(pod.name()) > 0, "{}: {tally}", pod.name());
    }
}
