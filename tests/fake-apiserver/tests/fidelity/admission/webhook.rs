//! A real mutating webhook for the fake API server to call: HTTPS with a certificate
//! from a test CA, HTTP/2 or HTTP/1.1 as its ALPN offers, AdmissionReview v1 in and
//! out, and every call recorded so tests can check what kube-apiserver would send.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sidelb_fake_apiserver::tls::TestCa;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
pub const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// Every review a webhook received: (request URI, AdmissionReview).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook server on 127.0.0.1 that records its calls and answers per path:
/// `/inject` adds a `sidelb-proxy` init container unless present, `/label` adds the
/// label `touched=yes`, `/deny` refuses, `/hang` never answers.
pub struct Webhook {
    pub addr: SocketAddr,
    calls: Calls,
    pub ca_bundle: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn review_response(review: &Value, patch: Option<Value>, allowed: bool) -> Value {
    let uid = review
        .pointer("/request/uid")
        .cloned()
        .unwrap_or(Value::Null);
    let mut response = json!({ "uid": uid, "allowed": allowed });
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(STANDARD.encode(serde_json::to_vec(&patch).expect("patch encodes")));
    }
    if !allowed {
        response["status"] =
            json!({ "code": 403, "message": "pods in this namespace need an owner" });
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response })
}

fn inject(review: &Value) -> Value {
    let pod = &review["request"]["object"];
    let present = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == "sidelb-proxy"));
    if present {
        return review_response(review, None, true);
    }
    let container =
        json!({ "name": "sidelb-proxy", "image": "sidelb/proxy:test", "restartPolicy": "Always" });
    let op = match pod.pointer("/spec/initContainers") {
        Some(Value::Array(_)) => {
            json!({ "op": "add", "path": "/spec/initContainers/0", "value": container })
        }
        _ => json!({ "op": "add", "path": "/spec/initContainers", "value": [container] }),
    };
    review_response(review, Some(json!([op])), true)
}

async fn answer(
    calls: Calls,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let uri = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let body = request.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    calls
        .lock()
        .expect("calls lock")
        .push((uri, review.clone()));
    let reply = match path.as_str() {
        "/inject" => inject(&review),
        "/label" => review_response(
            &review,
            Some(json!([{ "op": "add", "path": "/metadata/labels/touched", "value": "yes" }])),
            true,
        ),
        "/deny" => review_response(&review, None, false),
        _ => std::future::pending().await,
    };
    Ok(Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&reply).expect("reply encodes"),
    ))))
}

impl Webhook {
    /// Starts the webhook; `alpn` is what its TLS offers (kube-apiserver speaks both).
    pub async fn start(ca: &TestCa, alpn: &[&[u8]]) -> Webhook {
        let config = ca
            .server_config(&["127.0.0.1", "injector.sidelb.svc"])
            .expect("webhook certificate");
        let mut config = (*config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let addr = listener.local_addr().expect("webhook address");
        let calls: Calls = Arc::default();
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let calls = recorded.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| answer(calls.clone(), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhook {
            addr,
            calls,
            ca_bundle: STANDARD.encode(ca.pem()),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Calls whose pod has `generateName` (or name) starting with `prefix`.
    pub fn calls_for(&self, path: &str, prefix: &str) -> Vec<(String, Value)> {
        self.calls
            .lock()
            .expect("calls lock")
            .iter()
            .filter(|(uri, review)| {
                let meta = &review["request"]["object"]["metadata"];
                let name = meta["generateName"]
                    .as_str()
                    .or(meta["name"].as_str())
                    .unwrap_or("");
                uri.starts_with(path) && name.starts_with(prefix)
            })
            .cloned()
            .collect()
    }
}
