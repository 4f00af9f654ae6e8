//! The source itself, in process: one watch per Service however many ports
//! and pools subscribe, and no watch once nobody listens.
//!
//! On the fake API server, which counts the lists and watches it serves per
//! resource; the real one counts only with other clients' requests mixed in.

use super::cluster::*;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sidelb_config::{PortRef, ServiceKey};
use sidelb_proxy::discovery::kubernetes::{KubernetesDiscovery, ServiceRef};
use sidelb_proxy::discovery::{Discover, Update, UpdateRx};
use sidelb_tests::harness::*;

async fn discovery(cluster: &Cluster) -> KubernetesDiscovery {
    let kubeconfig = Kubeconfig::read_from(cluster.api.kubeconfig_path()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    KubernetesDiscovery::from_config(config).expect("source")
}

fn key(port: PortRef) -> ServiceKey {
    ServiceKey::new("echo", NAMESPACE, port)
}

async fn first_update(rx: &mut UpdateRx) -> Update {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an update within the bound")
        .expect("the source keeps the channel open")
}

fn addresses(update: &Update) -> Vec<String> {
    match update {
        Update::Reset(endpoints) => endpoints.iter().map(|e| e.addr.to_string()).collect(),
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[tokio::test]
async fn one_watch_per_service_for_every_subscriber_and_none_after_the_last() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let pod = pods.start("a").await;
    cluster.apply(grpc_service("echo", pod.addr().port()));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[&pod]));
    let source = discovery(&cluster).await;
    let wanted = vec![pod.addr().to_string()];

    // Two pools on the same port, one by name: one Service, one watch each.
    let mut by_number = source.subscribe(&key(PortRef::Number(50051)));
    let mut again = source.subscribe(&key(PortRef::Number(50051)));
    let mut by_name = source.subscribe(&key(PortRef::Name("grpc".into())));
    for rx in [&mut by_number, &mut again, &mut by_name] {
        assert_eq!(addresses(&first_update(rx).await), wanted);
    }
    let echo = ServiceRef {
        name: "echo".into(),
        namespace: NAMESPACE.into(),
    };
    assert_eq!(source.watched(), vec![echo.clone()]);
    cluster.wait_for_watches("endpointslices", 1).await;
    cluster.wait_for_watches("services", 1).await;

    // A later subscriber joins the running watch and hears the state at once.
    let mut late = source.subscribe(&key(PortRef::Number(50051)));
    assert_eq!(addresses(&first_update(&mut late).await), wanted);
    assert_eq!(cluster.api.requests("endpointslices", "list"), 1);

    // A change reaches every subscriber as a diff.
    let b = pods.start("b").await;
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[&pod, &b]));
    for rx in [&mut by_number, &mut again, &mut by_name, &mut late] {
        match first_update(rx).await {
            Update::Add(added) => assert_eq!(added[0].name.as_deref(), Some("b")),
            other => panic!("expected b added, got {other:?}"),
        }
    }

    // Pools go away: the watch stays while one is left, and stops after it.
    drop((by_number, again, by_name));
    assert_eq!(source.watched(), vec![echo]);
    drop(late);
    wait_until("the watches to stop", WAIT, || async {
        (source.watched().is_empty()
            && cluster.api.open_watches("endpointslices") == 0
            && cluster.api.open_watches("services") == 0)
            .then_some(())
    })
    .await
    .expect("no watches left");

    // Used again: watched again.
    let mut back = source.subscribe(&key(PortRef::Name("grpc".into())));
    assert_eq!(addresses(&first_update(&mut back).await).len(), 2);
    cluster.wait_for_watches("endpointslices", 1).await;
    assert_eq!(cluster.api.requests("endpointslices", "list"), 2);
}

#[tokio::test]
async fn a_missing_service_is_the_first_answer() {
    let cluster = Cluster::start();
    let source = discovery(&cluster).await;
    let mut rx = source.subscribe(&ServiceKey::new("nope", "shop", PortRef::Number(1)));
    match first_update(&mut rx).await {
        Update::NoService(why) => {
            assert!(why.contains("service nope.shop does not exist"), "{why}");
        }
        other => panic!("expected NoService, got {other:?}"),
    }
}
