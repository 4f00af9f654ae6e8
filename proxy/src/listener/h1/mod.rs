//! Serving an app's HTTP/1.1 connection.
//!
//! Requests are read one at a time (a pipelined request waits in the buffer
//! until the previous response is written), forwarded as HTTP/1.1, and the
//! connection is kept open when both sides allow it. Every head must arrive
//! whole within the header read timeout; a connection idle between requests
//! is closed after [`IDLE_TIMEOUT`].
//!
//! At the drain deadline of a proxy shutting down, a request still waiting
//! for its response is answered 503 with the reason and the connection is
//! closed; one whose response has begun can only be closed.

pub(crate) mod response;

use super::ConnContext;
use crate::drain::{Deadline, Drain};
use crate::forward::error::ProxyError;
use crate::forward::h1::{Forwarded, forward};
use crate::http1::{body, head};
use bytes::{Buf, BytesMut};
use head::{Framing, HeadError, RequestHead};
use http::StatusCode;
use response::{Answering, write_error};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) async fn serve(
    stream: TcpStream,
    mut buf: BytesMut,
    mut cx: ConnContext,
    mut drain: Drain,
) {
    let (mut rd, mut wr) = stream.into_split();
    let max_head = cx.config.max_header_bytes as usize;
    let head_timeout = cx.config.header_read_timeout;
    let mut head_deadline = Some(Instant::now() + head_timeout);
    let mut deadline = drain.deadline();
    loop {
        let parsed = loop {
            match head::parse(&buf, max_head) {
                Ok(Some(parsed)) => break Ok(parsed),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let read = match head_deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await,
                None => tokio::select! {
                    r = tokio::time::timeout(IDLE_TIMEOUT, rd.read_buf(&mut buf)) => r,
                    () = drain.signaled() => return,
                },
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {
                    head_deadline.get_or_insert_with(|| Instant::now() + head_timeout);
                }
                Err(_) if buf.is_empty() => return,
                Err(_) => {
                    cx.protocol_error();
                    let message = format!("request head not received within {head_timeout:?}");
                    let _ = write_error(&mut wr, StatusCode::REQUEST_TIMEOUT, &message, &closing())
                        .await;
                    return;
                }
            }
        };
        let (head, len) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return refuse(&mut wr, &cx, e).await,
        };
        buf.advance(len);
        head_deadline = None;
        let answering = Answering {
            method: head.method.clone(),
            version: head.version,
            keep_alive: head.keep_alive && !drain.is_draining(),
        };
        match exchange(
            &mut rd,
            &mut wr,
            &mut buf,
            &mut cx,
            head,
            answering,
            &mut deadline,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::debug!(peer = %cx.peer, "HTTP/1.1 connection closed: {e}");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
}

fn closing() -> Answering {
    Answering {
        method: http::Method::GET,
        version: http::Version::HTTP_11,
        keep_alive: false,
    }
}

async fn refuse(wr: &mut tokio::net::tcp::OwnedWriteHalf, cx: &ConnContext, e: HeadError) {
    cx.protocol_error();
    tracing::debug!(peer = %cx.peer, "refused: {e}");
    let message = format!("{e}; the connection is closed");
    let _ = write_error(wr, e.status(), &message, &closing()).await;
    let _ = wr.shutdown().await;
}

/// One request and its response; returns whether the connection stays open.
async fn exchange(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    buf: &mut BytesMut,
    cx: &mut ConnContext,
    head: RequestHead,
    answering: Answering,
    deadline: &mut Deadline,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let pool = match cx.route(&head.authority) {
        Ok(pool) => pool,
        Err(e) => return refuse_request(wr, &e, &answering, head.framing).await,
    };
    let _admission = match pool.admit() {
        Ok(admission) => admission,
        Err(e) => return refuse_request(wr, &e.into(), &answering, head.framing).await,
    };
    if head.expect_continue && head.framing != Framing::Empty {
        wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let (tx, slot) = body::channel();
    let mut body_done = head.framing == Framing::Empty;
    let mut body_ok = body_done;
    let max_trailers = cx.config.max_header_bytes as usize;
    let reading = body::read(rd, buf, head.framing, tx, max_trailers);
    let forwarding = forward(&cx.h1, &pool, &head, &slot);
    tokio::pin!(reading);
    tokio::pin!(forwarding);
    let result = loop {
        tokio::select! {
            r = &mut forwarding => break r,
            r = &mut reading, if !body_done => {
                body_done = true;
                body_ok = r.is_ok();
                if let Err(e) = r {
                    tracing::debug!(peer = %cx.peer, "request body: {e}");
                }
            }
            () = deadline.passed() => break Err(ProxyError::DrainDeadline {
                timeout: cx.config.drain_timeout,
            }),
        }
    };
    let Forwarded {
        response,
        in_flight,
    } = match result {
        Ok(forwarded) => forwarded,
        Err(e) => {
            let answering = Answering {
                keep_alive: false,
                ..answering
            };
            write_error(wr, e.http_status(), &e.to_string(), &answering).await?;
            return Ok(false);
        }
    };
    let writing = response::write(wr, response, &answering);
    tokio::pin!(writing);
    let keep = loop {
        tokio::select! {
            r = &mut writing => break r?,
            r = &mut reading, if !body_done => {
                body_done = true;
                body_ok = r.is_ok();
            }
            () = deadline.passed() => {
                return Err("the drain deadline passed while the response was being written".into());
            }
        }
    };
    drop(in_flight);
    Ok(keep && body_done && body_ok)
}

/// Answers a request the proxy cannot forward. The connection stays open
/// only if the request had no body to skip.
async fn refuse_request(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    e: &ProxyError,
    answering: &Answering,
    framing: Framing,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let answering = Answering {
        method: answering.method.clone(),
        version: answering.version,
        keep_alive: answering.keep_alive && framing == Framing::Empty,
    };
    Ok(write_error(wr, e.http_status(), &e.to_string(), &answering).await?)
}
