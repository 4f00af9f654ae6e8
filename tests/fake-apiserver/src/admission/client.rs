//! The HTTPS call to a webhook, as kube-apiserver makes it: POST the AdmissionReview
//! to `clientConfig.url` (or the Service's address) with `?timeout=Ns` appended,
//! verifying the server certificate against `caBundle` only, offering `h2` and
//! `http/1.1`. Errors read like Go's (`Post "URL": ...`) since kube-apiserver puts them
//! in its 500 message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const MAX_RESPONSE: usize = 3 * 1024 * 1024;

/// Where to send one webhook's reviews.
pub struct Target {
    /// The URL as it appears in errors.
    pub url: String,
    pub connect: Connect,
    pub server_name: String,
    pub host_header: String,
    pub path_and_query: String,
    pub ca_bundle: Option<String>,
}

pub enum Connect {
    Addr(SocketAddr),
    Host(String, u16),
    Unresolvable(String),
}

/// The target of a webhook's `clientConfig`; `services` maps a Service to an address.
pub fn target(
    client_config: &Value,
    timeout: Duration,
    services: impl Fn(&str, &str, u16) -> Option<SocketAddr>,
) -> Result<Target, String> {
    let ca_bundle = client_config
        .get("caBundle")
        .and_then(Value::as_str)
        .map(str::to_string);
    let timeout_query = format!("timeout={}s", timeout.as_secs());
    if let Some(url) = client_config.get("url").and_then(Value::as_str) {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid webhook URL {url:?}: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("webhook URL {url:?} has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = if uri.path().is_empty() {
            "/"
        } else {
            uri.path()
        };
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}&{timeout_query}"),
            None => format!("{path}?{timeout_query}"),
        };
        let connect = match host.parse() {
            Ok(ip) => Connect::Addr(SocketAddr::new(ip, port)),
            Err(_) => Connect::Host(host.clone(), port),
        };
        let host_header = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone());
        let url = format!("https://{host_header}{path_and_query}");
        return Ok(Target {
            url,
            connect,
            server_name: host,
            host_header,
            path_and_query,
            ca_bundle,
        });
    }
    let service = client_config
        .get("service")
        .ok_or("webhook clientConfig has neither url nor service")?;
    let text = |k: &str| {
        service
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (namespace, name) = (text("namespace"), text("name"));
    let port = service
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(443);
    let path = service
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let path_and_query = format!("{path}?{timeout_query}");
    let host = format!("{name}.{namespace}.svc");
    let connect = match services(&namespace, &name, port) {
        Some(addr) => Connect::Addr(addr),
        None => Connect::Unresolvable(format!("service \"{name}\" not found")),
    };
    let host_header = format!("{host}:{port}");
    let url = format!("https://{host_header}{path_and_query}");
    Ok(Target {
        url,
        connect,
        server_name: host,
        host_header,
        path_and_query,
        ca_bundle,
    })
}

fn tls_connector(ca_bundle: Option<&str>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(bundle) = ca_bundle {
        let pem = STANDARD
            .decode(bundle)
            .map_err(|e| format!("invalid caBundle: {e}"))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("invalid caBundle: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn dial(connect: &Connect) -> Result<TcpStream, String> {
    match connect {
        Connect::Addr(addr) => TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", go_error_text(&e))),
        Connect::Host(host, port) => TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| format!("dial tcp {host}:{port}: {}", go_error_text(&e))),
        Connect::Unresolvable(why) => Err(why.clone()),
    }
}

fn go_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

async fn exchange(target: &Target, body: Bytes) -> Result<Bytes, String> {
    let connector = tls_connector(target.ca_bundle.as_deref())?;
    let tcp = dial(&target.connect).await?;
    let server_name =
        ServerName::try_from(target.server_name.clone()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = Request::post(target.path_and_query.as_str())
        .header(header::HOST, target.host_header.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, */*")
        .header(header::USER_AGENT, "kube-apiserver-admission")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = request;
        request.headers_mut().remove(header::HOST);
        *request.uri_mut() = format!("https://{}{}", target.host_header, target.path_and_query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    };
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with status code {} ({})",
            status.as_u16(),
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    Ok(bytes)
}

/// POSTs `body`; the error is the text after `failed to call webhook: `.
pub async fn post(target: &Target, body: Bytes, timeout: Duration) -> Result<Bytes, String> {
    match tokio::time::timeout(timeout, exchange(target, body)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(format!("Post \"{}\": {e}", target.url)),
        Err(_) => Err(format!(
            "Post \"{}\": context deadline exceeded",
            target.url
        )),
    }
}
