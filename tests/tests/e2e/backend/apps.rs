//! Each app in another language against a test backend directly: it runs
//! every check before the proxy is put between them, so a failure through
//! the proxy is the proxy's.
//!
//! The apps come from `make deps` (`tests/apps/README.md`).

use sidelb_tests::harness::{AppClient, Backend, BackendOptions, Language};

async fn passes_every_check_against_a_backend(language: Language) {
    let backend = Backend::spawn("solo", BackendOptions::default())
        .await
        .expect("starts");
    let app = AppClient {
        calls: 30,
        ..AppClient::new(language, backend.addr())
    };
    let summary = app.run().await.expect("the app runs");
    let failed = summary.failed_checks(&app.checks());
    assert!(failed.is_empty(), "{language}: {failed:?}");
    for (name, check) in &summary.checks {
        assert_eq!(check.backends, ["solo"], "{language} {name}: {check:?}");
    }
    assert_eq!(summary.unary.calls, 30);
    assert_eq!(summary.unary.by_backend.get("solo"), Some(&30));
    assert_eq!(summary.unary.statuses.get("OK"), Some(&30));
}

#[tokio::test]
async fn the_python_app_passes_every_check_against_a_backend() {
    passes_every_check_against_a_backend(Language::Python).await;
}

#[tokio::test]
async fn the_go_app_passes_every_check_against_a_backend() {
    passes_every_check_against_a_backend(Language::Go).await;
}

#[tokio::test]
async fn the_node_app_passes_every_check_against_a_backend() {
    passes_every_check_against_a_backend(Language::Node).await;
}

#[tokio::test]
async fn the_java_app_passes_every_check_against_a_backend() {
    passes_every_check_against_a_backend(Language::Java).await;
}

#[tokio::test]
async fn the_rust_app_passes_every_check_against_a_backend() {
    passes_every_check_against_a_backend(Language::Rust).await;
}
