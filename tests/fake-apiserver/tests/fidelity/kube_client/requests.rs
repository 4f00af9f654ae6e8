//! Single requests and their errors, as the `kube` client sees them, one scenario
//! per test:
//!
//! - lists by label selector (equality, set and absence) and by field selector, at
//!   the server's current resourceVersion, and lists in pages with a continue token;
//! - create fills `uid` and `creationTimestamp`; a duplicate is 409 `AlreadyExists`;
//! - merge and JSON patches; a replace from a stale resourceVersion is 409 `Conflict`;
//! - get of a missing object is 404 `NotFound`; an invalid name is 422 `Invalid`;
//!   create in a missing namespace names the namespace;
//! - a forbidden list is 403 with RBAC's message; a forbidden watch is 403 while list
//!   stays allowed; a failing server answers 500 `InternalError`;
//! - the `default` namespace carries its `kubernetes.io/metadata.name` label.

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::Status;
use serde_json::{Value, json};
use sidelb_fake_apiserver::{FakeApiServer, FaultMode};

use super::fixtures::{SERVICE_LABEL, client_for, slice};

/// A server holding one slice of `greeter` and one of `other`, and the slices' API.
async fn with_two_slices() -> (FakeApiServer, Api<EndpointSlice>) {
    let server = FakeApiServer::start().expect("server starts");
    server
        .create(slice("greeter-a", "greeter", "10.0.0.1"))
        .expect("created");
    server
        .create(slice("other-a", "other", "10.0.0.2"))
        .expect("created");
    let slices = Api::namespaced(client_for(&server).await, "default");
    (server, slices)
}

async fn services_of(server: &FakeApiServer, namespace: &str) -> Api<Service> {
    Api::namespaced(client_for(server).await, namespace)
}

fn greeter() -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": "greeter" },
        "spec": { "ports": [ { "name": "grpc", "port": 50051 } ] }
    }))
    .expect("service")
}

/// A server with Service `greeter` created in `default`, its API and the object.
async fn with_greeter() -> (FakeApiServer, Api<Service>, Service) {
    let server = FakeApiServer::start().expect("server starts");
    let services = services_of(&server, "default").await;
    let created = services
        .create(&PostParams::default(), &greeter())
        .await
        .expect("create");
    (server, services, created)
}

/// The `Status` body of a failed request.
fn status_of(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("not a Status: {other:?}"),
    }
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors_at_the_current_resource_version() {
    let (server, slices) = with_two_slices().await;

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
}

#[tokio::test]
async fn lists_come_in_pages_joined_by_a_continue_token() {
    let (_server, slices) = with_two_slices().await;

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
}

#[tokio::test]
async fn create_fills_uid_and_timestamp_and_a_duplicate_is_409_already_exists() {
    let (_server, services, created) = with_greeter().await;
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let again = services
        .create(&PostParams::default(), &greeter())
        .await
        .expect_err("duplicate");
    let status = status_of(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "services \"greeter\" already exists");
}

#[tokio::test]
async fn merge_and_json_patches_apply() {
    let (_server, services, _created) = with_greeter().await;

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
}

#[tokio::test]
async fn replace_from_a_stale_resource_version_is_409_conflict() {
    let (_server, services, created) = with_greeter().await;
    services
        .patch(
            "greeter",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "a": "b" } } })),
        )
        .await
        .expect("merge patch");

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
    let status = status_of(conflict);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn get_of_a_missing_object_is_404_not_found() {
    let server = FakeApiServer::start().expect("server starts");
    let services = services_of(&server, "default").await;

    let missing = services.get("nope").await.expect_err("missing");
    let status = status_of(missing);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn an_invalid_name_is_422_invalid_naming_the_field() {
    let server = FakeApiServer::start().expect("server starts");
    let services = services_of(&server, "default").await;

    let bad: Service = serde_json::from_value(
        json!({ "metadata": { "name": "Bad_Name" }, "spec": { "ports": [ { "port": 1 } ] } }),
    )
    .expect("svc");
    let invalid = services
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let status = status_of(invalid);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.starts_with(
            "Service \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn create_in_a_missing_namespace_names_the_namespace() {
    let server = FakeApiServer::start().expect("server starts");
    let elsewhere = services_of(&server, "nowhere").await;

    let err = elsewhere
        .create(&PostParams::default(), &greeter())
        .await
        .expect_err("no such namespace");
    assert_eq!(status_of(err).message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn a_forbidden_list_is_403_with_the_rbac_message() {
    let (server, slices) = with_two_slices().await;

    server.forbid("discovery.k8s.io", "endpointslices");
    let err = slices
        .list(&ListParams::default())
        .await
        .expect_err("forbidden");
    let status = status_of(err);
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "endpointslices.discovery.k8s.io is forbidden: User \"system:admin\" cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"default\""
    );
}

#[tokio::test]
async fn a_forbidden_watch_is_403_while_list_stays_allowed() {
    let (server, slices) = with_two_slices().await;

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
    let status = status_of(err);
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("cannot watch resource \"endpointslices\""),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn a_failing_server_answers_500_internal_error() {
    let (server, slices) = with_two_slices().await;

    server.set_fault_mode(FaultMode::Fail);
    let err = slices
        .list(&ListParams::default())
        .await
        .expect_err("failing");
    let status = status_of(err);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    server.clear_faults();
    slices
        .list(&ListParams::default())
        .await
        .expect("answers again once the fault is cleared");
}

#[tokio::test]
async fn the_default_namespace_carries_its_metadata_name_label() {
    let server = FakeApiServer::start().expect("server starts");
    let namespaces: Api<Namespace> = Api::all(client_for(&server).await);

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
