//! A plain HTTP/1.1 GET, for the proxy's admin server (`/ready`,
//! `/endpoints`, `/metrics`).
//!
//! One request per connection with hyper's client, bounded in time; enough
//! for probing and reading small documents.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Bound on a whole GET, from connecting to the end of the body.
pub const GET_TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` from `addr`; returns the status and the body as text.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
    tokio::time::timeout(GET_TIMEOUT, get_unbounded(addr, path))
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer within {GET_TIMEOUT:?}"))?
}

async fn get_unbounded(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
    let url = format!("http://{addr}{path}");
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("GET {url}: connecting"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("GET {url}: handshake"))?;
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?
        .to_bytes();
    connection.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
