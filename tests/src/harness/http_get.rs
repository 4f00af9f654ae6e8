//! A plain HTTP/1.1 GET, for the proxy's admin server (`/ready`,
//! `/endpoints`, `/metrics`), the same over TLS ([`get_https`], [`send_https`])
//! for the injector's `/metrics` and its webhook, and any other method with a body ([`send`]), for
//! `PUT /log-level`.
//!
//! One request per connection with hyper's client, bounded in time; enough
//! for probing and reading small documents.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Bound on a whole GET, from connecting to the end of the body.
pub const GET_TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` from `addr`; returns the status and the body as text.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
    let (status, _, body) = get_with(addr, path, &[]).await?;
    Ok((status, body))
}

/// GETs `path` from `addr` with `headers` added; returns the status, the
/// response headers and the body as text.
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, String)> {
    let url = format!("http://{addr}{path}");
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("GET {url}: connecting"))?;
        get_on(stream, &url, addr, path, headers).await
    };
    tokio::time::timeout(GET_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {url}: no answer within {GET_TIMEOUT:?}"))?
}

/// GETs `path` from `addr` over TLS, verifying the server's certificate for
/// `server_name` against `ca_pem` only.
pub async fn get_https(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    path: &str,
) -> Result<(StatusCode, String)> {
    let (status, _, body) = send_https(
        addr,
        server_name,
        ca_pem,
        http::Method::GET,
        path,
        &[],
        Bytes::new(),
    )
    .await?;
    Ok((status, body))
}

/// Sends `method` `path` with `headers` and `body` to `addr` over TLS,
/// verifying the server's certificate for `server_name` against `ca_pem`
/// only; returns the status, the response headers and the body as text.
pub async fn send_https(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, String)> {
    let url = format!("{method} https://{addr}{path}");
    let exchange = async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("reading the CA PEM")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(server_name.to_owned())?;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("{url}: connecting"))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("{url}: TLS handshake"))?;
        send_on(tls, &url, addr, method, path, headers, body).await
    };
    tokio::time::timeout(GET_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{url}: no answer within {GET_TIMEOUT:?}"))?
}

/// Sends `method` `path` with `body` to `addr`; returns the status, the
/// response headers and the body as text.
pub async fn send(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<(StatusCode, HeaderMap, String)> {
    let url = format!("{method} http://{addr}{path}");
    let body = body.into();
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("{url}: connecting"))?;
        send_on(stream, &url, addr, method, path, &[], body).await
    };
    tokio::time::timeout(GET_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{url}: no answer within {GET_TIMEOUT:?}"))?
}

/// GETs `path` on an open connection to `addr` (one the caller made, in a
/// network namespace of its own, say).
pub async fn get_on(
    stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    url: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, String)> {
    let method = http::Method::GET;
    send_on(stream, url, addr, method, path, headers, Bytes::new()).await
}

async fn send_on(
    stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    url: &str,
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, String)> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("GET {url}: handshake"))?;
    let connection = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let response_headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?
        .to_bytes();
    connection.abort();
    Ok((
        status,
        response_headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}
