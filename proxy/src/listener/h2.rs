//! Serving an app's HTTP/2 connection: every stream becomes a task that is
//! balanced on its own. A request head (HEADERS and its CONTINUATIONs) left
//! unfinished for the header read timeout closes the connection, as an
//! unfinished preface does ([`super::h2_watch`]).

use super::h2_watch::HeaderWatch;
use super::{ConnContext, H2_PREFACE, rewind::Rewind};
use crate::drain::Drain;
use crate::endpoint::driver::{CONNECTION_WINDOW, STREAM_WINDOW};
use crate::time::{now_us, us};
use bytes::Bytes;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a connection closed for an unfinished request head gets to
/// send its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub async fn serve(io: Rewind<TcpStream>, mut cx: ConnContext, mut drain: Drain) {
    let config = cx.config.clone();
    let (io, open_block) = HeaderWatch::new(io, H2_PREFACE.len());
    let head_timeout = config.header_read_timeout;
    let mut head_check = tokio::time::interval(head_timeout / 2);
    head_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(config.max_header_bytes)
        // No per-connection stream limit: the in-flight limit is per service
        // and answers at once with UNAVAILABLE. A connection limit would make
        // the app's client queue its calls instead, and let one busy service
        // hold back every other service on the same connection.
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
                    let pool = cx.route_h2(&req);
                    // Boxed: the task cell then holds a pointer, not the
                    // request's whole state, which tokio copies as the task
                    // moves between its stages.
                    tokio::spawn(Box::pin(crate::forward::h2::serve(pool, req, respond)));
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
