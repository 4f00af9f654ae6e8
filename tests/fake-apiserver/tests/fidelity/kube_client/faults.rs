//! Injected faults seen from the client: a server that holds requests answers once
//! the fault clears, and the `/fake/` hooks work over HTTP like the handle's methods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use serde_json::Value;
use sidelb_fake_apiserver::{FakeApiServer, FaultMode};

use super::fixtures::{PHASE, client_for};

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
