//! The fake API server against the `kube` crate, the client sidelb's proxy uses:
//! list, watch, and kube-runtime's watcher through dropped watches, a compaction
//! (410 → relist) and a server restart on the same port.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use sidelb_tests::kube_api::{FakeApiServer, FaultMode};

const SERVICE_LABEL: &str = "kubernetes.io/service-name=greeter";
const PHASE: Duration = Duration::from_secs(30);

async fn client_for(server: &FakeApiServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube accepts the kubeconfig");
    Client::try_from(config).expect("client builds")
}

fn slice(name: &str, service: &str, address: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": name, "namespace": "default", "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "ports": [ { "name": "grpc", "port": 50051 } ],
        "endpoints": [ { "addresses": [address], "conditions": { "ready": true } } ]
    })
}

fn set_address(server: &FakeApiServer, name: &str, address: &str) {
    let patch =
        json!({ "endpoints": [ { "addresses": [address], "conditions": { "ready": true } } ] });
    server
        .patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            name,
            &patch,
        )
        .expect("patch applies");
}

fn first_address(slice: &EndpointSlice) -> Option<String> {
    slice
        .endpoints
        .first()
        .and_then(|e| e.addresses.first())
        .cloned()
}

#[tokio::test]
async fn list_get_create_patch_and_errors() {
    let server = FakeApiServer::start().expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    server
        .create(slice("other-a", "other", "10.0.0.2"))
        .expect("created");
    let client = client_for(&server).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let list = slices
        .list(&ListParams::default().labels(SERVICE_LABEL))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("greeter-a"));
    let list_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()
        .expect("numeric resourceVersion");
    assert_eq!(list_rv, server.resource_version());
    let all = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name in (greeter,other)"))
        .await
        .expect("list");
    assert_eq!(all.items.len(), 2);
    let none = slices
        .list(&ListParams::default().labels("!kubernetes.io/service-name"))
        .await
        .expect("list");
    assert!(none.items.is_empty());
    let by_name = slices
        .list(&ListParams::default().fields("metadata.name=other-a"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);

    let page = slices
        .list(&ListParams::default().limit(1))
        .await
        .expect("first page");
    assert_eq!(page.items.len(), 1);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = slices
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect("second page");
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].metadata.name, page.items[0].metadata.name);

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "greeter" },
        "spec": { "ports": [ { "name": "grpc", "port": 50051 } ] }
    }))
    .expect("service");
    let created = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let again = services
        .create(&PostParams::default(), &svc)
        .await
        .expect_err("duplicate");
    let kube::Error::Api(status) = again else {
        panic!("not a Status: {again:?}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "services \"greeter\" already exists");

    let patched = services
        .patch(
            "greeter",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "a": "b" } } })),
        )
        .await
        .expect("merge patch");
    assert_eq!(patched.labels().get("a").map(String::as_str), Some("b"));
    let patched = services
        .patch(
            "greeter",
            &PatchParams::default(),
            &Patch::<Value>::Json(
                serde_json::from_value(
                    json!([{ "op": "add", "path": "/metadata/labels/c", "value": "d" }]),
                )
                .expect("patch"),
            ),
        )
        .await
        .expect("json patch");
    assert_eq!(patched.labels().len(), 2);
    let stale = Service {
        metadata: kube::api::ObjectMeta {
            resource_version: Some("1".into()),
            ..created.metadata.clone()
        },
        ..created.clone()
    };
    let conflict = services
        .replace("greeter", &PostParams::default(), &stale)
        .await
        .expect_err("stale update");
    let kube::Error::Api(status) = conflict else {
        panic!("not a Status")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));

    let missing = services.get("nope").await.expect_err("missing");
    let kube::Error::Api(status) = missing else {
        panic!("not a Status")
    };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));

    let bad: Service = serde_json::from_value(
        json!({ "metadata": { "name": "Bad_Name" }, "spec": { "ports": [ { "port": 1 } ] } }),
    )
    .expect("svc");
    let invalid = services
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let kube::Error::Api(status) = invalid else {
        panic!("not a Status")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.starts_with(
            "Service \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        status.message
    );

    let elsewhere: Api<Service> = Api::namespaced(client.clone(), "nowhere");
    let err = elsewhere
        .create(&PostParams::default(), &svc)
        .await
        .expect_err("no such namespace");
    let kube::Error::Api(status) = err else {
        panic!("not a Status")
    };
    assert_eq!(status.message, "namespaces \"nowhere\" not found");

    server.forbid("discovery.k8s.io", "endpointslices");
    let err = slices
        .list(&ListParams::default())
        .await
        .expect_err("forbidden");
    let kube::Error::Api(status) = err else {
        panic!("not a Status")
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "endpointslices.discovery.k8s.io is forbidden: User \"system:admin\" cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"default\""
    );
    server.clear_faults();
    server.forbid_verb("discovery.k8s.io", "endpointslices", "watch");
    slices
        .list(&ListParams::default())
        .await
        .expect("list is still allowed");
    let err = slices
        .watch(&WatchParams::default(), "0")
        .await
        .err()
        .expect("watch is forbidden");
    let kube::Error::Api(status) = err else {
        panic!("not a Status")
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("cannot watch resource \"endpointslices\""),
        "{}",
        status.message
    );
    server.allow("discovery.k8s.io", "endpointslices");
    server.set_fault_mode(FaultMode::Fail);
    let err = slices
        .list(&ListParams::default())
        .await
        .expect_err("failing");
    let kube::Error::Api(status) = err else {
        panic!("not a Status")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    server.clear_faults();

    let namespaces: Api<Namespace> = Api::all(client);
    let ns = namespaces
        .get("default")
        .await
        .expect("default namespace exists");
    assert_eq!(
        ns.labels()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("default")
    );
}

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

#[tokio::test]
async fn raw_watch_sees_changes_selectors_and_410() {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    let slices: Api<EndpointSlice> = Api::namespaced(client_for(&server).await, "default");
    let rv = server.resource_version().to_string();

    let mut stream = slices
        .watch(&WatchParams::default().labels(SERVICE_LABEL), &rv)
        .await
        .expect("watch starts")
        .boxed();
    server
        .create(slice("other-a", "other", "10.0.0.9"))
        .expect("created");
    set_address(&server, "greeter-a", "10.0.0.2");
    let WatchEvent::Modified(modified) = next_event(&mut stream).await else {
        panic!("expected MODIFIED")
    };
    assert_eq!(first_address(&modified).as_deref(), Some("10.0.0.2"));

    server
        .patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            "greeter-a",
            &json!({ "metadata": { "labels": { "kubernetes.io/service-name": "moved" } } }),
        )
        .expect("relabel");
    assert!(
        matches!(next_event(&mut stream).await, WatchEvent::Deleted(_)),
        "leaving the selector is a DELETED"
    );
    server
        .patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            "greeter-a",
            &json!({ "metadata": { "labels": { "kubernetes.io/service-name": "greeter" } } }),
        )
        .expect("relabel back");
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

#[tokio::test]
async fn https_with_a_bearer_token() {
    let server = FakeApiServer::builder()
        .tls(true)
        .token("s3cret")
        .start()
        .expect("server starts");
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let namespaces: Api<Namespace> = Api::all(client_for(&server).await);
    let list = namespaces
        .list(&ListParams::default())
        .await
        .expect("list over TLS with the token");
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    );

    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info.token = None;
    let anonymous: Api<Namespace> = Api::all(Client::try_from(config).expect("client"));
    let err = anonymous
        .list(&ListParams::default())
        .await
        .expect_err("no token");
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn discovery_metadata_and_deletes() {
    let server = FakeApiServer::start().expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    let client = client_for(&server).await;
    let gvk = kube::api::GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice");
    for discovery in [
        kube::Discovery::new(client.clone())
            .run()
            .await
            .expect("legacy discovery"),
        kube::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .expect("aggregated discovery"),
    ] {
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .expect("EndpointSlice is discovered");
        assert_eq!(resource.plural, "endpointslices");
        assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
        assert!(
            discovery
                .get("")
                .is_some_and(|core| core.recommended_kind("Service").is_some())
        );
    }

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let metadata = slices
        .list_metadata(&ListParams::default())
        .await
        .expect("metadata list");
    assert_eq!(metadata.items.len(), 1);
    assert_eq!(
        metadata.items[0].metadata.name.as_deref(),
        Some("greeter-a")
    );

    let deleted = slices
        .delete("greeter-a", &kube::api::DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        deleted.is_right(),
        "EndpointSlices answer a delete with a Status"
    );
    server
        .create(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "doomed", "finalizers": ["test/hold"] } }))
        .expect("namespace");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let held = namespaces
        .delete("doomed", &kube::api::DeleteParams::default())
        .await
        .expect("delete");
    let held = held.left().expect("a held object comes back");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        namespaces.get_opt("doomed").await.expect("get").is_some(),
        "finalizers hold the namespace"
    );
    namespaces
        .patch(
            "doomed",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .expect("release finalizers");
    assert!(
        namespaces.get_opt("doomed").await.expect("get").is_none(),
        "released, it is gone"
    );
}

#[tokio::test]
async fn hanging_requests_complete_once_the_fault_clears() {
    let server = FakeApiServer::start().expect("server starts");
    let namespaces: Api<Namespace> = Api::all(client_for(&server).await);
    server.set_fault_mode(FaultMode::Hang);
    let mut pending = tokio::spawn(async move {
        namespaces
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
    });
    let early = tokio::time::timeout(Duration::from_millis(200), &mut pending).await;
    assert!(early.is_err(), "a hanging server does not answer");
    server.clear_faults();
    let listed = tokio::time::timeout(PHASE, pending)
        .await
        .expect("answered once cleared")
        .expect("task")
        .expect("list");
    assert_eq!(listed, 4, "the four namespaces every cluster starts with");
}

#[tokio::test]
async fn fault_hooks_over_http() {
    let server = FakeApiServer::start().expect("server starts");
    let client = client_for(&server).await;
    let fake = |path: &str| {
        let client = client.clone();
        let request = http::Request::post(path).body(Vec::new()).expect("request");
        async move {
            client
                .request_text(request)
                .await
                .expect("control endpoint answers")
        }
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());

    fake("/fake/forbid?resource=namespaces&verb=list").await;
    let err = namespaces
        .list(&ListParams::default())
        .await
        .expect_err("forbidden");
    let kube::Error::Api(status) = err else {
        panic!("not a Status")
    };
    assert_eq!(
        status.message,
        "namespaces is forbidden: User \"system:admin\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    namespaces
        .get("default")
        .await
        .expect("get is still allowed");
    fake("/fake/fault?mode=fail").await;
    assert!(namespaces.get("default").await.is_err());
    fake("/fake/clear").await;
    namespaces
        .list(&ListParams::default())
        .await
        .expect("cleared");

    let stats: Value = serde_json::from_str(&fake("/fake/stats").await).expect("stats are JSON");
    assert_eq!(stats["requests"]["namespaces list"], 2);
    let before = server.resource_version();
    fake("/fake/restart-with-compaction").await;
    assert!(server.resource_version() > before);
}
