//! The `sidelb-injector` binary as the chart runs it: configured by
//! environment variables, logging where it listens, stopping on SIGTERM.

use crate::support::client::{self, Proto};
use crate::support::process::{BIN, Process};
use crate::support::reviews::{bare, proxy};
use crate::support::{Admission, MUTATE};
use std::time::Duration;
use tokio::process::Command;

const BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
async fn serves_with_environment_configuration_and_stops_on_sigterm() {
    let mut injector = Process::start(&[
        (
            "SIDELB_PROXY_IMAGE",
            "registry.example/sidelb/proxy:from-env",
        ),
        ("SIDELB_DEFAULT_BALANCER", "round-robin"),
    ])
    .await;
    let mut conn = client::connect(injector.addr, &injector.ca.pem(), Proto::H2)
        .await
        .expect("connect");
    assert_eq!(conn.get("/healthz").await.status, 200);
    let review = bare();
    let reply = conn.post(MUTATE, review.to_string()).await;
    assert_eq!(reply.status, 200);
    let answer: Admission = Admission::parse(reply.json());
    let pod = answer.patched(&review);
    let sidecar = proxy(&pod).0;
    assert_eq!(sidecar["image"], "registry.example/sidelb/proxy:from-env");
    assert!(
        sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "SIDELB_BALANCER" && e["value"] == "round-robin")
    );
    drop(conn);

    let child = &mut injector.child;
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(killed.success());
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn refuses_to_start_on_a_bad_value_naming_the_variable() {
    let output = Command::new(BIN)
        .env("SIDELB_TLS_CERT", "/nonexistent/tls.crt")
        .env("SIDELB_TLS_KEY", "/nonexistent/tls.key")
        .env("SIDELB_DEFAULT_BALANCER", "random")
        .output()
        .await
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SIDELB_DEFAULT_BALANCER") && stderr.contains("random"),
        "{stderr}"
    );

    let output = Command::new(BIN)
        .env("SIDELB_INJECTOR_ADDR", "127.0.0.1:0")
        .env("SIDELB_TLS_CERT", "/nonexistent/tls.crt")
        .env("SIDELB_TLS_KEY", "/nonexistent/tls.key")
        .output()
        .await
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_flat_object_per_line_even_when_the_start_fails() {
    let output = Command::new(BIN)
        .env("SIDELB_INJECTOR_ADDR", "127.0.0.1:0")
        .env("SIDELB_TLS_CERT", "/nonexistent/tls.crt")
        .env("SIDELB_TLS_KEY", "/nonexistent/tls.key")
        .env("SIDELB_LOG_FORMAT", "json")
        .output()
        .await
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failure = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error logged: {stderr}"));
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/tls.crt")),
        "the message is a top-level field: {failure}"
    );
    assert!(failure["timestamp"].is_string(), "{failure}");
}
