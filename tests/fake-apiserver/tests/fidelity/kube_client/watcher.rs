//! kube-runtime's watcher, the loop sidelb's proxy runs: it recovers from dropped
//! watches, relists after a `410`, reconnects after a server restart on the same port,
//! and with streaming lists starts from a watch alone.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use sidelb_fake_apiserver::FakeApiServer;

use super::fixtures::{PHASE, SERVICE_LABEL, client_for, first_address, set_address, slice};

/// Drives a watcher until an EndpointSlice named `name` shows `address`.
async fn wait_for_address(
    stream: &mut (impl Stream<Item = Result<watcher::Event<EndpointSlice>, watcher::Error>> + Unpin),
    name: &str,
    address: &str,
) {
    let seen = tokio::time::timeout(PHASE, async {
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event
                && s.metadata.name.as_deref() == Some(name)
                && first_address(&s).as_deref() == Some(address)
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the watcher delivered {name} with {address}"
    );
}

#[tokio::test]
async fn watcher_survives_dropped_watches_compaction_and_restart() {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(500))
        .start()
        .expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    let slices: Api<EndpointSlice> = Api::namespaced(client_for(&server).await, "default");
    let config = watcher::Config::default().labels(SERVICE_LABEL);
    let mut events = watcher::watcher(slices, config).boxed();
    let watching = |n: usize| move |s: &FakeApiServer| s.open_watches("endpointslices") >= n;

    wait_for_address(&mut events, "greeter-a", "10.0.0.1").await;

    set_address(&server, "greeter-a", "10.0.0.2");
    wait_for_address(&mut events, "greeter-a", "10.0.0.2").await;

    let watches_before = server.requests("endpointslices", "watch");
    server.drop_watches();
    set_address(&server, "greeter-a", "10.0.0.3");
    wait_for_address(&mut events, "greeter-a", "10.0.0.3").await;
    assert!(
        server.requests("endpointslices", "watch") > watches_before,
        "the watcher watched again"
    );

    let lists_before = server.requests("endpointslices", "list");
    server.restart_with_compaction();
    set_address(&server, "greeter-a", "10.0.0.4");
    wait_for_address(&mut events, "greeter-a", "10.0.0.4").await;
    assert!(
        server.requests("endpointslices", "list") > lists_before,
        "410 made the watcher relist: lists {} -> {}, watches {}",
        lists_before,
        server.requests("endpointslices", "list"),
        server.requests("endpointslices", "watch"),
    );

    server.stop();
    set_address(&server, "greeter-a", "10.0.0.5");
    server
        .start_again()
        .expect("listens again on the same port");
    wait_for_address(&mut events, "greeter-a", "10.0.0.5").await;
    assert!(
        server.wait_until_async(PHASE, watching(1)).await,
        "a watch is open again"
    );

    server
        .delete(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            "greeter-a",
        )
        .expect("delete");
    let deleted = tokio::time::timeout(PHASE, async {
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Delete(s)) = event {
                return s.metadata.name;
            }
        }
        None
    })
    .await;
    assert_eq!(deleted, Ok(Some("greeter-a".to_string())));
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events() {
    let server = FakeApiServer::start().expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    let slices: Api<EndpointSlice> = Api::namespaced(client_for(&server).await, "default");
    let config = watcher::Config::default()
        .labels(SERVICE_LABEL)
        .streaming_lists();
    let mut events = watcher::watcher(slices, config).boxed();
    wait_for_address(&mut events, "greeter-a", "10.0.0.1").await;
    set_address(&server, "greeter-a", "10.0.0.2");
    wait_for_address(&mut events, "greeter-a", "10.0.0.2").await;
    assert_eq!(
        server.requests("endpointslices", "list"),
        0,
        "streaming lists use only watches"
    );
}
