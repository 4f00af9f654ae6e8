//! The raw watch API: events for changes, objects entering and leaving a label
//! selector as ADDED and DELETED, bookmarks at the current resourceVersion, and
//! `410 Expired` for a watch from before a compaction.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, WatchEvent, WatchParams};
use serde_json::json;
use sidelb_fake_apiserver::FakeApiServer;

use super::fixtures::{PHASE, SERVICE_LABEL, client_for, first_address, set_address, slice};

async fn next_event(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<EndpointSlice>>> + Unpin),
) -> WatchEvent<EndpointSlice> {
    loop {
        let event = tokio::time::timeout(PHASE, stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("event decodes");
        if !matches!(event, WatchEvent::Bookmark(_)) {
            return event;
        }
    }
}

/// A fake server holding slice `greeter-a` (bookmarks every 200 ms), the
/// slices API, and the resourceVersion before anything else happens.
async fn setup() -> (FakeApiServer, Api<EndpointSlice>, String) {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    let slices: Api<EndpointSlice> = Api::namespaced(client_for(&server).await, "default");
    let rv = server.resource_version().to_string();
    (server, slices, rv)
}

async fn watch_greeter(
    slices: &Api<EndpointSlice>,
    rv: &str,
) -> impl Stream<Item = kube::Result<WatchEvent<EndpointSlice>>> + Unpin + use<> {
    slices
        .watch(&WatchParams::default().labels(SERVICE_LABEL), rv)
        .await
        .expect("watch starts")
        .boxed()
}

fn relabel(server: &FakeApiServer, service: &str) {
    server
        .patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            "greeter-a",
            &json!({ "metadata": { "labels": { "kubernetes.io/service-name": service } } }),
        )
        .expect("relabel");
}

#[tokio::test]
async fn a_watch_sees_changes_of_what_its_selector_selects_only() {
    let (server, slices, rv) = setup().await;
    let mut stream = watch_greeter(&slices, &rv).await;
    server
        .create(slice("other-a", "other", "10.0.0.9"))
        .expect("created");
    set_address(&server, "greeter-a", "10.0.0.2");
    let WatchEvent::Modified(modified) = next_event(&mut stream).await else {
        panic!("expected MODIFIED, not the other service's ADDED")
    };
    assert_eq!(first_address(&modified).as_deref(), Some("10.0.0.2"));
}

#[tokio::test]
async fn leaving_the_selector_is_deleted_and_entering_it_added() {
    let (server, slices, rv) = setup().await;
    let mut stream = watch_greeter(&slices, &rv).await;
    relabel(&server, "moved");
    assert!(
        matches!(next_event(&mut stream).await, WatchEvent::Deleted(_)),
        "leaving the selector is a DELETED"
    );
    relabel(&server, "greeter");
    assert!(
        matches!(next_event(&mut stream).await, WatchEvent::Added(_)),
        "entering the selector is an ADDED"
    );
    server
        .delete(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            "greeter-a",
        )
        .expect("delete");
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Deleted(_)
    ));
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version() {
    let (server, slices, rv) = setup().await;
    let mut stream = watch_greeter(&slices, &rv).await;
    let bookmark = loop {
        let event = tokio::time::timeout(PHASE, stream.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("decodes");
        if let WatchEvent::Bookmark(b) = event {
            break b;
        }
    };
    assert_eq!(
        bookmark.metadata.resource_version,
        server.resource_version().to_string()
    );
}

#[tokio::test]
async fn a_watch_from_before_a_compaction_gets_410_expired() {
    let (server, slices, rv) = setup().await;
    set_address(&server, "greeter-a", "10.0.0.2");
    server.restart_with_compaction();
    let mut stale = slices
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch answers")
        .boxed();
    let WatchEvent::Error(status) = next_event(&mut stale).await else {
        panic!("expected ERROR")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status.message.starts_with("too old resource version"),
        "{}",
        status.message
    );
}
