//! The Python grpcio client against test backends: the other-language app
//! works end to end before the proxy is put between them.
//!
//! Needs `pip install -r tests/python/requirements.txt`.

use sidelb_tests::harness::{Backend, BackendOptions, PythonClient};

#[tokio::test]
async fn python_client_passes_every_check_against_a_backend() {
    let backend = Backend::spawn("py-target", BackendOptions::default())
        .await
        .expect("starts");
    let client = PythonClient {
        calls: 30,
        ..PythonClient::new(backend.addr())
    };
    let summary = client.run().await.expect("the Python client runs");
    assert!(
        summary.failed_checks().is_empty(),
        "{:?}",
        summary.failed_checks()
    );
    for kind in [
        "server_stream",
        "client_stream",
        "bidi",
        "metadata",
        "failure",
        "large",
    ] {
        assert!(summary.checks.contains_key(kind), "{kind} was checked");
    }
    assert_eq!(summary.unary.calls, 30);
    assert_eq!(summary.unary.by_backend.get("py-target"), Some(&30));
    assert_eq!(summary.unary.statuses.get("OK"), Some(&30));
}
