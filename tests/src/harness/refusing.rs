//! A backend that refuses every stream: each request it gets is answered
//! with `RST_STREAM(REFUSED_STREAM)`, which tells the client the request was
//! never processed and may be sent elsewhere. It plays an overloaded or
//! broken pod that makes a proxy retry, for retry-budget scenarios.
//!
//! It runs as a task of the test (its only behaviour is the refusal, so it
//! needs no process of its own) and stops when dropped.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A listening refusing backend; stopped (with its connections) when dropped.
pub struct RefusingBackend {
    addr: SocketAddr,
    refused: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RefusingBackend {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<RefusingBackend> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the refusing backend")?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(AtomicU64::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((tcp, _)) = accepted {
                            connections.spawn(refuse_all(tcp, counter.clone()));
                        }
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(RefusingBackend {
            addr,
            refused,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Streams refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

impl Drop for RefusingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refuse_all(tcp: TcpStream, refused: Arc<AtomicU64>) {
    // The request's DATA that follows a refused HEADERS counts as a local
    // error reset; without a limit on those the backend keeps refusing for
    // as long as it is asked, rather than giving up on the connection.
    let handshake = h2::server::Builder::new()
        .max_local_error_reset_streams(None)
        .handshake::<_, bytes::Bytes>(tcp);
    let Ok(mut connection) = handshake.await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = connection.accept().await {
        refused.fetch_add(1, Relaxed);
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    }
}
