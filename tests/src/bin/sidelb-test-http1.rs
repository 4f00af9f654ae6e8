//! `sidelb-test-http1`: a plain HTTP/1.1 backend for the proxy's HTTP/1.1
//! tests. It speaks HTTP/1.1 only (no HTTP/2 at all), so a request that
//! reaches it was forwarded as HTTP/1.1.
//!
//! Every response carries `x-sidelb-backend: NAME` and a JSON body that
//! echoes the request as the backend saw it: method, path and query,
//! version, every header (framing headers included, so a test sees whether
//! the body came with a length or chunked) and the body. Special requests:
//! - `GET /__stats`: `{"requests": N, "connections": N}`, neither the
//!   request nor its connection counted (connections count every accepted
//!   one, also those that never sent a valid request, e.g. HTTP/2 attempts);
//! - a query `chunks=N`: the answer is streamed in N parts without a length
//!   (so it goes out chunked);
//! - path `/close`: the connection is dropped without an answer.
//!
//! The first stdout line is `listening ADDR`.

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use tokio::net::TcpListener;

/// An HTTP/1.1 server that answers with its name and echoes each request.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Name of this instance, in every answer and in `x-sidelb-backend`.
    #[arg(long, default_value = "http1")]
    name: String,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
    /// Connections that asked for `/__stats`: not counted.
    stats_connections: AtomicU64,
}

type Body = BoxBody<Bytes, Infallible>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let flags = Flags::parse();
    let listener = TcpListener::bind(flags.addr).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {}", listener.local_addr()?)?;
        stdout.flush()?;
    }
    let name: Arc<str> = flags.name.into();
    let counters = Arc::new(Counters::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        counters.connections.fetch_add(1, Relaxed);
        let (name, counters) = (name.clone(), counters.clone());
        let asked_stats = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                answer(request, name.clone(), counters.clone(), asked_stats.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    name: Arc<str>,
    counters: Arc<Counters>,
    asked_stats: Arc<AtomicBool>,
) -> Result<Response<Body>, String> {
    if request.uri().path() == "/__stats" {
        if !asked_stats.swap(true, Relaxed) {
            counters.stats_connections.fetch_add(1, Relaxed);
        }
        let connections =
            counters.connections.load(Relaxed) - counters.stats_connections.load(Relaxed);
        let stats = serde_json::json!({
            "requests": counters.requests.load(Relaxed),
            "connections": connections,
        });
        return Ok(respond(&name, full(stats.to_string())));
    }
    counters.requests.fetch_add(1, Relaxed);
    if request.uri().path() == "/close" {
        return Err("asked to drop the connection".into());
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let echo = serde_json::json!({
        "backend": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_bytes": body.len(),
    })
    .to_string();
    let chunks = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("chunks=")))
        .and_then(|n| n.parse::<usize>().ok());
    let body = match chunks {
        Some(n) if n > 0 => streamed(echo, n),
        _ => full(echo),
    };
    Ok(respond(&name, body))
}

fn respond(name: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert("content-type", "application/json".parse().expect("valid"));
    if let Ok(value) = name.parse() {
        headers.insert("x-sidelb-backend", value);
    }
    response
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

/// `text` in `n` parts, with no length known up front.
fn streamed(text: String, n: usize) -> Body {
    let bytes = Bytes::from(text);
    let size = bytes.len().div_ceil(n).max(1);
    let parts: Vec<Result<Frame<Bytes>, Infallible>> = (0..bytes.len())
        .step_by(size)
        .map(|start| {
            Ok(Frame::data(
                bytes.slice(start..(start + size).min(bytes.len())),
            ))
        })
        .collect();
    StreamBody::new(futures_util::stream::iter(parts)).boxed()
}
