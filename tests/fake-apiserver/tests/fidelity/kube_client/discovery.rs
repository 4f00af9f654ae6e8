//! API discovery (legacy and aggregated), metadata-only lists, and deletes: a Status
//! for an object gone at once, the object itself while finalizers hold it.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use sidelb_fake_apiserver::FakeApiServer;

use super::fixtures::{client_for, slice};

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
