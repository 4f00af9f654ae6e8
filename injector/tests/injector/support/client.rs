//! An HTTPS client as kube-apiserver is one: it verifies the injector's
//! certificate against the CA bundle and offers a single ALPN protocol, so
//! each test picks HTTP/2 or HTTP/1.1.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// The host name kube-apiserver uses for a webhook Service.
pub const HOST: &str = "sidelb-injector.sidelb.svc";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H2,
    H1,
}

impl Proto {
    pub const BOTH: [Proto; 2] = [Proto::H2, Proto::H1];

    fn alpn(self) -> &'static [u8] {
        match self {
            Proto::H2 => b"h2",
            Proto::H1 => b"http/1.1",
        }
    }
}

pub type Body = BoxBody<Bytes, Infallible>;

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// One TLS connection.
pub struct Conn {
    sender: Sender,
    pub proto: Proto,
    /// The certificate the server presented.
    pub peer_cert: Vec<u8>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub content_type: String,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects and completes the TLS and HTTP handshakes.
pub async fn connect(addr: SocketAddr, ca_pem: &str, proto: Proto) -> Result<Conn, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![proto.alpn().to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(HOST).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.alpn_protocol(),
        Some(proto.alpn()),
        "negotiated ALPN"
    );
    let peer_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no peer certificate")?;
    let io = TokioIo::new(tls);
    let sender = match proto {
        Proto::H1 => {
            let (sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(sender)
        }
        Proto::H2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(sender)
        }
    };
    Ok(Conn {
        sender,
        proto,
        peer_cert,
    })
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

impl Conn {
    pub async fn request(&mut self, method: Method, path_and_query: &str, body: Body) -> Reply {
        let what = format!("{method} {path_and_query} over {:?}", self.proto);
        self.try_request(method, path_and_query, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    pub async fn try_request(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: Body,
    ) -> Result<Reply, String> {
        self.try_request_with(method, path_and_query, body, &[])
            .await
    }

    /// A request with `extra` headers besides the usual ones.
    pub async fn try_request_with(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: Body,
        extra: &[(header::HeaderName, &str)],
    ) -> Result<Reply, String> {
        let mut builder = Request::builder().method(method);
        for (name, value) in extra {
            builder = builder.header(name, *value);
        }
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                let request = builder
                    .uri(path_and_query)
                    .header(header::HOST, HOST)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
            Sender::H2(sender) => {
                let request = builder
                    .uri(format!("https://{HOST}{path_and_query}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            content_type,
            body,
        })
    }

    pub async fn post(&mut self, path_and_query: &str, body: impl Into<Bytes>) -> Reply {
        self.request(Method::POST, path_and_query, full(body)).await
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request(Method::GET, path, full(Bytes::new())).await
    }

    pub async fn get_accepting(&mut self, path: &str, accept: &str) -> Reply {
        let extra = [(header::ACCEPT, accept)];
        self.try_request_with(Method::GET, path, full(Bytes::new()), &extra)
            .await
            .unwrap_or_else(|e| panic!("GET {path} (Accept: {accept}): {e}"))
    }
}
