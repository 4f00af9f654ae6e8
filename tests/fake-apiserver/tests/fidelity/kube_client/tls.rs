//! HTTPS with a bearer token, as in a pod: the client trusts the CA in the kubeconfig
//! and sends the token; without it the answer is `401 Unauthorized`.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use sidelb_fake_apiserver::FakeApiServer;

use super::fixtures::client_for;

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
