//! The `fake-apiserver` binary: prints its kubeconfig path, serves, and exits cleanly
//! on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir =
        std::env::temp_dir().join(format!("sidelb-fake-apiserver-bin-{}", std::process::id()));
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let printed = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next())
        .await
        .expect("reader")
        .expect("a line")
        .expect("utf-8");
    assert_eq!(std::path::Path::new(&printed), kubeconfig);

    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let namespaces: Api<Namespace> = Api::all(Client::try_from(config).expect("client"));
    let list = namespaces
        .list(&ListParams::default())
        .await
        .expect("the binary serves the API");
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("waiter")
        .expect("exit status");
    assert!(status.success(), "exits 0 on SIGTERM: {status}");
    let _ = std::fs::remove_dir_all(dir);
}
