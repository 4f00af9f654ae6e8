//! Serving an app's HTTP/2 connection: every stream becomes a task that is
//! balanced on its own. A request head (HEADERS and its CONTINUATIONs) left
//! unfinished for the header read timeout closes the connection, as an
//! unfinished preface does ([`super::h2_watch`]).
//!
//! When the proxy drains, the connection gets GOAWAY and ends once its
//! last stream has; at the drain deadline each open stream answers with
//! its reason ([`crate::forward::h2`]), so the connection still ends with
//! every stream answered.

use super::h2_watch::HeaderWatch;
use super::{ConnContext, H2_PREFACE, rewind::Rewind};
use crate::drain::Drain;
use crate::endpoint::driver::{CONNECTION_WINDOW, STREAM_WINDOW};
use crate::forward::error::ProxyError;
use crate::time::{now_us, us};
use bytes::Bytes;
use sidelb_config::names;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a connection closed for an unfinished request head gets to
/// send its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn serve(io: Rewind<TcpStream>, mut cx: ConnContext, mut drain: Drain) {
    let config = cx.config.clone();
    let (io, open_block) = HeaderWatch::new(io, H2_PREFACE.len());
    let head_timeout = config.header_read_timeout;
    let mut head_check = tokio::time::interval(head_timeout / 2);
    head_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // h2 answers a header block over its limit with a bare 431, which a
        // gRPC client reports as UNKNOWN, and one far over it with a GOAWAY
        // for the whole connection. Up to four times the limit the block is
        // decoded and answered here instead ([`header_list_size`]).
        .max_header_list_size(config.max_header_bytes.saturating_mul(4))
        // Advertised, so the app's client queues calls over it (a stream over
        // it anyway gets REFUSED_STREAM): one connection, or one busy
        // service on it, cannot take a service's whole in-flight limit. The
        // price: calls to other services on the same connection queue too.
        .max_concurrent_streams(names::APP_MAX_CONCURRENT_STREAMS)
        .handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(config.header_read_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(peer = %cx.peer, "HTTP/2 handshake failed: {e}");
            cx.protocol_error();
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %cx.peer, "closed: no HTTP/2 preface within {:?}", config.header_read_timeout);
            cx.protocol_error();
            return;
        }
    };
    let mut draining = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    let size = header_list_size(&req);
                    let limit = config.max_header_bytes as usize;
                    let pool = if size > limit {
                        Err(ProxyError::HeadersTooLarge { size, limit })
                    } else {
                        cx.route_h2(&req)
                    };
                    // Boxed: the task cell then holds a pointer, not the
                    // request's whole state, which tokio copies as the task
                    // moves between its stages.
                    tokio::spawn(Box::pin(crate::forward::h2::serve(pool, req, respond, drain.deadline())));
                }
                Some(Err(e)) => {
                    // A GOAWAY of the app's is a normal end; one of ours
                    // (h2 answering bad framing) is the app's protocol error.
                    if e.is_io() || (e.is_go_away() && e.is_remote()) {
                        tracing::debug!(peer = %cx.peer, "connection closed: {e}");
                    } else {
                        tracing::info!(peer = %cx.peer, "connection closed on a protocol error: {e}");
                        cx.protocol_error();
                    }
                    break;
                }
                None => break,
            },
            () = drain.signaled(), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
            _ = head_check.tick() => {
                let open = open_block.open_for_us(now_us());
                if open.is_some_and(|open| open >= us(head_timeout)) {
                    tracing::debug!(peer = %cx.peer, "closed: a request head was not finished within {head_timeout:?}");
                    cx.protocol_error();
                    conn.abrupt_shutdown(h2::Reason::PROTOCOL_ERROR);
                    let _ = tokio::time::timeout(CLOSE_GRACE, async {
                        while let Some(Ok(_)) = conn.accept().await {}
                    })
                    .await;
                    break;
                }
            }
        }
    }
}

/// A request head's size as HTTP/2 counts it for SETTINGS_MAX_HEADER_LIST_SIZE
/// (RFC 9113 §6.5.2): name and value of every field, pseudo-fields included,
/// plus 32 bytes each.
pub(crate) fn header_list_size<B>(req: &http::Request<B>) -> usize {
    const FIELD: usize = 32;
    let uri = req.uri();
    let pseudo = [
        (":method", req.method().as_str().len()),
        (":scheme", uri.scheme_str().map_or(0, str::len)),
        (
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path",
            uri.path_and_query().map_or(0, |p| p.as_str().len()),
        ),
    ];
    let pseudo: usize = pseudo
        .iter()
        .filter(|(_, len)| *len > 0)
        .map(|(name, len)| name.len() + len + FIELD)
        .sum();
    pseudo
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + FIELD)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_list_size_counts_fields_as_http2_does() {
        let req = http::Request::post("http://echo.default:50051/sidelb.test.Echo/Unary")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let expected = (7 + 4 + 32)
            + (7 + 4 + 32)
            + (10 + 18 + 32)
            + (5 + 23 + 32)
            + (12 + 16 + 32)
            + (2 + 8 + 32);
        assert_eq!(header_list_size(&req), expected);
    }
}
