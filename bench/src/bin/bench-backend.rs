//! A lean gRPC backend for load tests: answers every call straight from the
//! HTTP/2 frames, with no framework in the way, so that in a benchmark the
//! proxy under test, not the backend, is what costs.
//!
//! - any path: unary echo — reads the request, answers one small message;
//! - a path ending in `/ServerStream`: answers `--stream-messages` messages;
//! - `GET /stats`: the number of calls served, as text.
//!
//! `--addr 127.0.0.1:0` picks a free port; the first line on stdout is
//! `listening ADDR`. `--addr` given again adds a listener (one line each, in
//! order): the scale benchmark serves a thousand endpoints from one process.

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::net::TcpListener;

struct Backend {
    reply: Bytes,
    stream_messages: usize,
    served: AtomicU64,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-backend --name NAME --addr IP:PORT [--addr IP:PORT...] [--stream-messages N]"
    );
    std::process::exit(2)
}

fn main() {
    let mut name = String::from("backend");
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut stream_messages = 10;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--name" => name = value,
            "--addr" => addrs.push(value.parse().unwrap_or_else(|_| usage())),
            "--stream-messages" => stream_messages = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("bench-backend: {e}");
            std::process::exit(1)
        });
    if addrs.is_empty() {
        addrs.push(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    runtime.block_on(serve(addrs, name, stream_messages));
}

/// A gRPC message: flag byte, 4-byte length, then a protobuf with field 1
/// (`backend`, a string) set to the name.
fn reply_message(name: &str) -> Bytes {
    let mut proto = vec![0x0a, name.len() as u8];
    proto.extend_from_slice(name.as_bytes());
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(proto.len() as u32).to_be_bytes());
    msg.extend_from_slice(&proto);
    Bytes::from(msg)
}

async fn serve(addrs: Vec<SocketAddr>, name: String, stream_messages: usize) {
    let backend = Arc::new(Backend {
        reply: reply_message(&name),
        stream_messages,
        served: AtomicU64::new(0),
    });
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-backend: cannot listen on {addr}: {e}");
                std::process::exit(1)
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("listening {local}");
        listeners.push(listener);
    }
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept(listener, backend.clone())))
        .collect();
    for task in accepting {
        let _ = task.await;
    }
}

async fn accept(listener: TcpListener, backend: Arc<Backend>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let backend = backend.clone();
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::Builder::new()
                .initial_window_size(1 << 20)
                .initial_connection_window_size(1 << 22)
                .handshake::<_, Bytes>(tcp)
                .await
            else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let _ = backend.answer(req, respond).await;
                });
            }
        });
    }
}

impl Backend {
    async fn answer(
        &self,
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
    ) -> Result<(), h2::Error> {
        let (head, mut body) = req.into_parts();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        if head.uri.path() == "/stats" {
            let mut tx = respond.send_response(Response::new(()), false)?;
            let count = self.served.load(Relaxed).to_string();
            return tx.send_data(Bytes::from(count), true);
        }
        self.served.fetch_add(1, Relaxed);
        let mut res = Response::new(());
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        let mut tx = respond.send_response(res, false)?;
        let messages = if head.uri.path().ends_with("/ServerStream") {
            self.stream_messages
        } else {
            1
        };
        for _ in 0..messages {
            tx.send_data(self.reply.clone(), false)?;
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        tx.send_trailers(trailers)
    }
}
