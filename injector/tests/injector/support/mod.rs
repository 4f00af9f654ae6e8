//! What the tests share: a real injector on 127.0.0.1:0 with a fresh CA, a
//! client, the AdmissionReview fixtures, and the checks every patched pod
//! must pass.

pub mod client;
pub mod kube_validate;
pub mod pki;
pub mod pod_security;
pub mod process;
pub mod reviews;

use client::{Conn, Proto};
use pki::{Ca, TempDir};
use serde_json::Value;
use sidelb_injector::Injector;
use sidelb_injector::config::InjectorConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The path kube-apiserver calls, with the query it adds.
pub const MUTATE: &str = "/mutate?timeout=10s";

pub struct TestInjector {
    injector: Injector,
    pub addr: SocketAddr,
    pub ca: Ca,
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub dir: TempDir,
}

impl TestInjector {
    pub async fn start() -> TestInjector {
        Self::with_args(&[]).await
    }

    /// Starts with extra flags, as the chart would pass them.
    pub async fn with_args(extra: &[&str]) -> TestInjector {
        let dir = TempDir::new("server");
        let ca = Ca::new("sidelb test CA");
        let (cert, key) = ca.leaf("first").write(dir.path());
        let mut args = vec![
            "sidelb-injector".to_owned(),
            "--injector-addr=127.0.0.1:0".to_owned(),
            format!("--tls-cert={}", cert.display()),
            format!("--tls-key={}", key.display()),
            "--tls-reload-interval=50ms".to_owned(),
            "--proxy-image=registry.example/sidelb/proxy:test".to_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let config = InjectorConfig::parse_from(args).expect("test flags are valid");
        let injector = Injector::start(config).await.expect("the injector starts");
        TestInjector {
            addr: injector.local_addr(),
            injector,
            ca_pem: ca.pem(),
            ca,
            cert,
            key,
            dir,
        }
    }

    pub async fn connect(&self, proto: Proto) -> Conn {
        client::connect(self.addr, &self.ca_pem, proto)
            .await
            .unwrap_or_else(|e| panic!("connect over {proto:?}: {e}"))
    }

    /// Sends `review` on a new connection and reads the answer.
    pub async fn review(&self, proto: Proto, review: &Value) -> Admission {
        let mut conn = self.connect(proto).await;
        let reply = conn.post(MUTATE, review.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.content_type, "application/json");
        Admission::parse(reply.json())
    }

    pub async fn metrics(&self) -> String {
        self.connect(Proto::H1).await.get("/metrics").await.text()
    }

    pub async fn stop(self) {
        self.injector.stop().await;
    }
}

/// A decoded AdmissionReview response.
#[derive(Debug)]
pub struct Admission {
    pub uid: String,
    pub allowed: bool,
    /// The JSON Patch operations, decoded from base64.
    pub patch: Option<Value>,
    pub status: Option<Value>,
    pub warnings: Vec<String>,
}

impl Admission {
    pub fn parse(review: Value) -> Admission {
        use base64::Engine;
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let response = &review["response"];
        let patch = response["patch"].as_str().map(|b64| {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("patch is base64");
            serde_json::from_slice(&bytes).expect("patch is JSON")
        });
        Admission {
            uid: response["uid"].as_str().expect("response.uid").to_owned(),
            allowed: response["allowed"].as_bool().expect("response.allowed"),
            patch,
            status: response.get("status").cloned(),
            warnings: serde_json::from_value(response["warnings"].clone()).unwrap_or_default(),
        }
    }

    /// `request.object` with the patch applied, as the API server would.
    pub fn patched(&self, review: &Value) -> Value {
        let mut pod = review["request"]["object"].clone();
        let ops = self.patch.clone().expect("a patch");
        let patch: json_patch::Patch = serde_json::from_value(ops).expect("an RFC 6902 patch");
        json_patch::patch(&mut pod, &patch).expect("the patch applies");
        pod
    }

    /// Allowed with nothing changed.
    pub fn assert_unchanged(&self, review: &Value) {
        assert_eq!(
            self.uid,
            review["request"]["uid"].as_str().unwrap_or_default()
        );
        assert!(self.allowed, "{self:?}");
        assert!(self.patch.is_none(), "{self:?}");
        assert!(self.status.is_none(), "{self:?}");
    }
}

/// Waits for `condition`, failing after `bound`.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not {what} after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
