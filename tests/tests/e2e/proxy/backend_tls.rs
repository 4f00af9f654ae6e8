//! TLS to backends (`SIDELB_BACKEND_TLS`, `SIDELB_BACKEND_TLS_CA`), through
//! real TLS backends (`sidelb-test-backend --tls-cert --tls-key`) with
//! certificates from a test CA:
//!
//! - three backends with certificates for `echo.default.svc`: every call
//!   succeeds and each backend gets a share; `/endpoints` shows the name;
//!   an HTTP/1.1 request gets 502 saying the service serves TLS;
//! - a CA file of another CA: calls get UNAVAILABLE saying `unknown issuer`
//!   and which setting to check, and each endpoint's last error says so;
//! - a certificate for another name: refused naming the name expected, and
//!   `=SERVER_NAME` naming the certificate's makes it work;
//! - a plaintext backend of a TLS service fails with a TLS reason, while
//!   another service of the same proxy stays in cleartext;
//! - the CA file replaced in place (as the kubelet updates a Secret's volume):
//!   the next connections trust the new CAs, with no restart;
//! - TLS without a CA file: the proxy refuses to start naming both settings.

use sidelb_fake_apiserver::tls::TestCa;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::proxy::run_to_exit;
use sidelb_tests::harness::*;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

const TARGET: &str = "echo.default:50051";
const SERVICE: &str = "echo.default:50051";
const WAIT: Duration = Duration::from_secs(15);

/// Certificate and key files in `dir`, from `ca`, for `name`.
fn cert_files(dir: &ScratchDir, ca: &TestCa, name: &str, file: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.issue_pem(&[name]).expect("certificate");
    let cert_path = dir.path().join(format!("{file}.crt"));
    let key_path = dir.path().join(format!("{file}.key"));
    std::fs::write(&cert_path, cert).expect("cert written");
    std::fs::write(&key_path, key).expect("key written");
    (cert_path, key_path)
}

fn ca_file(dir: &ScratchDir, ca: &TestCa, file: &str) -> String {
    let path = dir.path().join(file);
    std::fs::write(&path, ca.pem()).expect("CA written");
    path.to_str().expect("utf-8 path").to_owned()
}

/// TLS backends named `names`, each with a certificate from `ca` for `cert_name`.
async fn tls_backends(
    dir: &ScratchDir,
    ca: &TestCa,
    cert_name: &str,
    names: &[&str],
) -> Vec<Backend> {
    let mut started = Vec::new();
    for name in names {
        let options = BackendOptions {
            tls: Some(cert_files(dir, ca, cert_name, name)),
            ..Default::default()
        };
        started.push(
            Backend::spawn(name, options)
                .await
                .expect("TLS backend starts"),
        );
    }
    started
}

async fn proxy(file: &EndpointsFile, env: &[(&str, &str)], upstreams: &[&str]) -> Proxy {
    let mut options = ProxyOptions::file_discovery(file);
    for (name, value) in env {
        options = options.env(name, *value);
    }
    for upstream in upstreams {
        options = options.upstream(upstream);
    }
    Proxy::spawn(options).await.expect("proxy ready")
}

/// Waits until every endpoint of `service` has a last error containing `text`.
async fn wait_for_errors(proxy: &Proxy, service: &str, count: usize, text: &str) -> Vec<String> {
    wait_until(
        &format!("{service}'s {count} endpoints to fail with `{text}`"),
        WAIT,
        || async {
            let view = proxy.service_view(service).await.ok()??;
            let errors: Vec<String> = view["endpoints"]
                .as_array()?
                .iter()
                .filter_map(|e| e["last_error"].as_str().map(str::to_owned))
                .filter(|e| e.contains(text))
                .collect();
            (errors.len() == count).then_some(errors)
        },
    )
    .await
    .expect("the endpoints report the TLS failure")
}

/// One call's failure message; it must be UNAVAILABLE.
async fn unavailable(client: &Echo) -> String {
    let status = client
        .clone()
        .unary(EchoRequest::default())
        .await
        .expect_err("the call fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    status.message().to_owned()
}

#[tokio::test]
async fn tls_backends_are_served_and_balanced() {
    let dir = ScratchDir::new("backend-tls").expect("scratch");
    let ca = TestCa::new("cluster CA").expect("CA");
    let pods = tls_backends(&dir, &ca, "echo.default.svc", &["a", "b", "c"]).await;
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &pods)])
        .expect("file");
    let ca_path = ca_file(&dir, &ca, "ca.crt");
    let env = [
        ("SIDELB_BACKEND_TLS", "echo.default"),
        ("SIDELB_BACKEND_TLS_CA", ca_path.as_str()),
    ];
    let proxy = proxy(&file, &env, &[TARGET]).await;
    proxy
        .wait_ready(SERVICE, &pods.iter().map(Backend::addr).collect::<Vec<_>>())
        .await
        .expect("all connected over TLS");
    let view = proxy
        .service_view(SERVICE)
        .await
        .expect("view")
        .expect("listed");
    assert_eq!(view["tls_server_name"], "echo.default.svc", "{view}");

    let client = proxy.connect(TARGET).await.expect("connects");
    let tally = unary_calls_concurrently(&client, 300, 4, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 300, "{tally}");
    for pod in ["a", "b", "c"] {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }

    // HTTP/1.1 is not sent in cleartext to a TLS service: 502 saying why.
    let mut conn = Http1Conn::connect(proxy.outbound_addr())
        .await
        .expect("connects");
    let response = conn
        .request(b"GET / HTTP/1.1\r\nHost: echo:50051\r\n\r\n")
        .await
        .expect("answered");
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        response.text().contains("serves TLS (SIDELB_BACKEND_TLS)"),
        "{}",
        response.text()
    );
}

#[tokio::test]
async fn a_foreign_ca_is_refused_with_the_reason_per_endpoint() {
    let dir = ScratchDir::new("backend-tls").expect("scratch");
    let ca = TestCa::new("cluster CA").expect("CA");
    let other = TestCa::new("another CA").expect("CA");
    let pods = tls_backends(&dir, &ca, "echo.default.svc", &["a", "b"]).await;
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &pods)])
        .expect("file");
    let ca_path = ca_file(&dir, &other, "other.crt");
    let env = [
        ("SIDELB_BACKEND_TLS", "echo"),
        ("SIDELB_BACKEND_TLS_CA", ca_path.as_str()),
    ];
    let proxy = proxy(&file, &env, &[TARGET]).await;
    let errors = wait_for_errors(&proxy, SERVICE, 2, "TLS: unknown issuer").await;
    for error in &errors {
        assert!(error.contains("SIDELB_BACKEND_TLS_CA"), "{error}");
    }
    let client = proxy.connect(TARGET).await.expect("connects");
    let message = unavailable(&client).await;
    assert!(
        message.contains("unknown issuer") && message.contains("SIDELB_BACKEND_TLS_CA"),
        "{message}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_unless_that_name_is_given() {
    let dir = ScratchDir::new("backend-tls").expect("scratch");
    let ca = TestCa::new("cluster CA").expect("CA");
    let pods = tls_backends(&dir, &ca, "greeter.example.com", &["a", "b"]).await;
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &pods)])
        .expect("file");
    let ca_path = ca_file(&dir, &ca, "ca.crt");

    let env = [
        ("SIDELB_BACKEND_TLS", "echo.default"),
        ("SIDELB_BACKEND_TLS_CA", ca_path.as_str()),
    ];
    let refused = proxy(&file, &env, &[TARGET]).await;
    let errors = wait_for_errors(
        &refused,
        SERVICE,
        2,
        "TLS: certificate not valid for name echo.default.svc",
    )
    .await;
    assert!(errors[0].contains("greeter.example.com"), "{}", errors[0]);
    let client = refused.connect(TARGET).await.expect("connects");
    let message = unavailable(&client).await;
    assert!(
        message.contains("not valid for name echo.default.svc"),
        "{message}"
    );
    drop(refused);

    let named = [
        (
            "SIDELB_BACKEND_TLS",
            "echo.default:50051=greeter.example.com",
        ),
        ("SIDELB_BACKEND_TLS_CA", ca_path.as_str()),
    ];
    let proxy = proxy(&file, &named, &[TARGET]).await;
    proxy
        .wait_ready(SERVICE, &pods.iter().map(Backend::addr).collect::<Vec<_>>())
        .await
        .expect("connected with the name given");
    let client = proxy.connect(TARGET).await.expect("connects");
    let tally = unary_calls(&client, 20, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 20, "{tally}");
}

#[tokio::test]
async fn a_plaintext_backend_of_a_tls_service_fails_and_other_services_stay_plaintext() {
    let dir = ScratchDir::new("backend-tls").expect("scratch");
    let ca = TestCa::new("cluster CA").expect("CA");
    let plain = Backend::spawn_all(&["p1", "p2"], BackendOptions::default())
        .await
        .expect("backends start");
    let file = EndpointsFile::create(&[
        ServiceEndpoints::of("echo", "default", 50051, [&plain[0]]),
        ServiceEndpoints::of("other", "default", 50051, [&plain[1]]),
    ])
    .expect("file");
    let ca_path = ca_file(&dir, &ca, "ca.crt");
    let env = [
        ("SIDELB_BACKEND_TLS", "echo"),
        ("SIDELB_BACKEND_TLS_CA", ca_path.as_str()),
    ];
    let proxy = proxy(&file, &env, &[TARGET, "other.default:50051"]).await;
    wait_for_errors(&proxy, SERVICE, 1, "TLS: handshake failed").await;
    let client = proxy.connect(TARGET).await.expect("connects");
    let message = unavailable(&client).await;
    assert!(
        message.contains("TLS: handshake failed") && message.contains("does the backend serve TLS"),
        "{message}"
    );

    let other = proxy
        .connect("other.default:50051")
        .await
        .expect("connects");
    let tally = unary_calls(&other, 10, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 10, "{tally}");
    assert_eq!(tally.served_by("p2"), 10, "{tally}");
    let view = proxy
        .service_view("other.default:50051")
        .await
        .expect("view")
        .expect("listed");
    assert!(view.get("tls_server_name").is_none(), "{view}");
}

#[tokio::test]
async fn a_ca_file_replaced_in_place_is_trusted_without_a_restart() {
    let dir = ScratchDir::new("backend-tls").expect("scratch");
    let ca = TestCa::new("cluster CA").expect("CA");
    let old = TestCa::new("old CA").expect("CA");
    let pods = tls_backends(&dir, &ca, "echo.default.svc", &["a", "b"]).await;
    let file = EndpointsFile::create(&[ServiceEndpoints::of("echo", "default", 50051, &pods)])
        .expect("file");
    let ca_path = ca_file(&dir, &old, "ca.crt");
    // Not ejected meanwhile for failing to connect: this is about the CA file.
    let env = [
        ("SIDELB_BACKEND_TLS", "echo"),
        ("SIDELB_BACKEND_TLS_CA", ca_path.as_str()),
        ("SIDELB_EJECTION_FAILURES", "0"),
    ];
    let proxy = proxy(&file, &env, &[TARGET]).await;
    wait_for_errors(&proxy, SERVICE, 2, "TLS: unknown issuer").await;

    // Written aside and renamed over, so the proxy never reads half a file.
    let staged = ca_file(&dir, &ca, "ca.crt.new");
    std::fs::rename(&staged, &ca_path).expect("replaced");
    proxy
        .wait_ready(SERVICE, &pods.iter().map(Backend::addr).collect::<Vec<_>>())
        .await
        .expect("connected with the new CAs");
    let client = proxy.connect(TARGET).await.expect("connects");
    let tally = unary_calls(&client, 20, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 20, "{tally}");
}

#[tokio::test]
async fn tls_without_a_ca_file_does_not_start() {
    let file = EndpointsFile::create(&[ServiceEndpoints::new("echo", "default", 50051, &[])])
        .expect("file");
    let exited = run_to_exit(ProxyOptions::file_discovery(&file).env("SIDELB_BACKEND_TLS", "echo"))
        .await
        .expect("exits");
    assert!(!exited.status.success());
    assert!(
        exited
            .stderr
            .contains("SIDELB_BACKEND_TLS is set but SIDELB_BACKEND_TLS_CA is not"),
        "{}",
        exited.stderr
    );
    let exited = run_to_exit(
        ProxyOptions::file_discovery(&file)
            .env("SIDELB_BACKEND_TLS", "echo")
            .env("SIDELB_BACKEND_TLS_CA", "/nonexistent/ca.crt"),
    )
    .await
    .expect("exits");
    assert!(!exited.status.success());
    assert!(
        exited
            .stderr
            .contains("SIDELB_BACKEND_TLS_CA: cannot read /nonexistent/ca.crt"),
        "{}",
        exited.stderr
    );
}
