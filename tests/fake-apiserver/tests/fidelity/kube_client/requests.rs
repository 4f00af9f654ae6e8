//! Single requests and their errors, as the `kube` client sees them: lists by label
//! and field selector and in pages, create, merge and JSON patches, replace, get, and
//! the `Status` bodies of 409, 404, 422, 403 and 500.

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::{Value, json};
use sidelb_fake_apiserver::{FakeApiServer, FaultMode};

use super::fixtures::{SERVICE_LABEL, client_for, slice};

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
