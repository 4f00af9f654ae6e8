//! Accepting the app's connections on loopback.
//!
//! Each listener serves HTTP/2 with prior knowledge (what gRPC uses) and
//! HTTP/1.1 on the same port, told apart by the first bytes: the HTTP/2
//! connection preface. A connection that sends nothing is closed after the
//! header read timeout, and so is an HTTP/2 one whose preface is not whole
//! by then: the magic string and the client's first SETTINGS frame
//! (RFC 9113 §3.4). A preface whose first frame is not SETTINGS is
//! answered with GOAWAY(PROTOCOL_ERROR) and closed.

pub(crate) mod bind;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod h2_watch;
pub(crate) mod rewind;

use crate::balancer::Pool;
use crate::drain::Drain;
use crate::forward::error::ProxyError;
use crate::forward::h1::H1Client;
use crate::metrics::{ListenerLabels, Metrics};
use crate::router::Route;
use bytes::{Bytes, BytesMut};
use sidelb_config::ProxyConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// A SETTINGS frame is a few entries of 6 bytes; a longer one is left to
/// the HTTP/2 server to refuse.
const MAX_PREFACE_SETTINGS: usize = 16 * 1024;

const SETTINGS_FRAME: u8 = 4;

/// The type of the first frame after the magic string, once its header has
/// arrived. The preface must end with a SETTINGS frame (RFC 9113 §3.4); the
/// HTTP/2 server does not check that, so the listener does.
fn h2_first_frame_type(buf: &[u8]) -> Option<u8> {
    buf.get(H2_PREFACE.len() + 3).copied()
}

/// What the server sends to a client whose preface is not followed by
/// SETTINGS: its own (empty) SETTINGS, as every server connection starts,
/// then GOAWAY with PROTOCOL_ERROR and a reason.
fn h2_bad_preface_answer() -> Vec<u8> {
    const WHY: &[u8] = b"the HTTP/2 connection preface must be followed by a SETTINGS frame";
    let mut out = vec![0, 0, 0, SETTINGS_FRAME, 0, 0, 0, 0, 0];
    let len = (8 + WHY.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(WHY);
    out
}

/// Whether `buf`, which starts with the magic string, also holds the whole
/// frame after it (the client's SETTINGS), which completes the preface.
fn h2_preface_complete(buf: &[u8]) -> bool {
    let start = H2_PREFACE.len();
    let Some(header) = buf.get(start..start + FRAME_HEADER) else {
        return false;
    };
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    buf.len() >= start + FRAME_HEADER + len.min(MAX_PREFACE_SETTINGS)
}

/// What a connection task needs.
pub(crate) struct ConnContext {
    pub(crate) route: Route,
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) peer: SocketAddr,
    pub(crate) h1: Arc<H1Client>,
    /// The last authority and its pool: most connections name one service.
    cached: Option<(Bytes, Arc<Pool>)>,
}

impl ConnContext {
    pub(crate) fn protocol_error(&self) {
        self.metrics
            .protocol_errors
            .get_or_create(&ListenerLabels {
                protocol: "any".into(),
            })
            .inc();
    }

    /// The pool for a request with this authority.
    pub(crate) fn route(&mut self, authority: &str) -> Result<Arc<Pool>, ProxyError> {
        let router = match &self.route {
            Route::Fixed(pool) => return Ok(pool.clone()),
            Route::ByAuthority(router) => router,
        };
        if let Some((cached, pool)) = &self.cached
            && cached.as_ref() == authority.as_bytes()
            && !pool.is_shut()
        {
            return Ok(pool.clone());
        }
        let pool = router.resolve(authority)?;
        self.cached = Some((Bytes::copy_from_slice(authority.as_bytes()), pool.clone()));
        Ok(pool)
    }

    pub(crate) fn route_h2<B>(&mut self, req: &http::Request<B>) -> Result<Arc<Pool>, ProxyError> {
        let authority = match req.uri().authority() {
            Some(a) => a.as_str(),
            None => req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default(),
        };
        self.route(authority)
    }
}

/// What every listener shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) h1: Arc<H1Client>,
}

/// How long an accept loop waits after a failed accept before it tries
/// again, instead of spinning on an error that lasts (file descriptors
/// exhausted, usually).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The next connection on `listener`; a failed accept is logged and tried
/// again after [`ACCEPT_ERROR_PAUSE`]. Cancel-safe: it may race a drain.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(listener = ?listener.local_addr().ok(), "accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Accepts connections until draining begins.
pub(crate) async fn serve(listener: TcpListener, route: Route, shared: Shared, mut drain: Drain) {
    loop {
        let (stream, peer) = tokio::select! {
            conn = accept(&listener) => conn,
            () = drain.signaled() => return,
        };
        let cx = ConnContext {
            route: route.clone(),
            config: shared.config.clone(),
            metrics: shared.metrics.clone(),
            h1: shared.h1.clone(),
            peer,
            cached: None,
        };
        tokio::spawn(serve_connection(stream, cx, drain.clone()));
    }
}

async fn serve_connection(mut stream: TcpStream, cx: ConnContext, drain: Drain) {
    let _ = stream.set_nodelay(true);
    let mut first = BytesMut::with_capacity(4096);
    let detect = async {
        loop {
            match stream.read_buf(&mut first).await {
                Ok(0) => return false,
                Ok(_) => {
                    let n = first.len().min(H2_PREFACE.len());
                    if first[..n] != H2_PREFACE[..n] {
                        return true;
                    }
                    if n == H2_PREFACE.len()
                        && (h2_preface_complete(&first)
                            || h2_first_frame_type(&first).is_some_and(|t| t != SETTINGS_FRAME))
                    {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    };
    match tokio::time::timeout(cx.config.header_read_timeout, detect).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            tracing::debug!(peer = %cx.peer, "closed: nothing sent within {:?}", cx.config.header_read_timeout);
            cx.protocol_error();
            return;
        }
    }
    let is_h2 = first.starts_with(H2_PREFACE);
    if is_h2 && h2_first_frame_type(&first) != Some(SETTINGS_FRAME) {
        tracing::debug!(peer = %cx.peer, "closed: the HTTP/2 preface is not followed by SETTINGS");
        cx.protocol_error();
        let _ = stream.write_all(&h2_bad_preface_answer()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let protocol = if is_h2 { "h2" } else { "http/1.1" };
    cx.metrics
        .app_connections
        .get_or_create(&ListenerLabels {
            protocol: protocol.into(),
        })
        .inc();
    if is_h2 {
        h2::serve(rewind::Rewind::new(first.freeze(), stream), cx, drain).await;
    } else {
        h1::serve(stream, first, cx, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_complete_with_the_first_frame() {
        let mut buf = H2_PREFACE.to_vec();
        assert!(!h2_preface_complete(&buf), "magic alone");
        buf.extend_from_slice(&[0, 0, 12, 4, 0, 0, 0, 0]);
        assert!(!h2_preface_complete(&buf), "part of a frame header");
        buf.push(0);
        assert!(!h2_preface_complete(&buf), "header without its payload");
        buf.extend_from_slice(&[0; 11]);
        assert!(!h2_preface_complete(&buf), "one byte short");
        buf.push(0);
        assert!(h2_preface_complete(&buf));
        assert_eq!(h2_first_frame_type(&buf), Some(SETTINGS_FRAME));
        let mut headers_first = H2_PREFACE.to_vec();
        headers_first.extend_from_slice(&[0, 0, 5]);
        assert_eq!(h2_first_frame_type(&headers_first), None, "no type yet");
        headers_first.push(1);
        assert_eq!(h2_first_frame_type(&headers_first), Some(1));
        let answer = h2_bad_preface_answer();
        assert_eq!(answer[3], SETTINGS_FRAME);
        assert_eq!(
            (
                answer[12],
                u32::from_be_bytes([answer[22], answer[23], answer[24], answer[25]])
            ),
            (7, 1),
            "GOAWAY with PROTOCOL_ERROR"
        );
        let len = u32::from_be_bytes([0, answer[9], answer[10], answer[11]]) as usize;
        assert_eq!(answer.len(), 18 + len);
        let mut empty_settings = H2_PREFACE.to_vec();
        empty_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(h2_preface_complete(&empty_settings));
    }
}
