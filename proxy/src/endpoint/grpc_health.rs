//! Active gRPC health checking (`SIDELB_HEALTH_CHECK=grpc`).
//!
//! Kubernetes readiness says whether a pod may join a Service; a server can
//! say more, and sooner, through `grpc.health.v1.Health`. An endpoint's
//! connection (the first, not the extra ones opened at the peer's stream
//! limit) carries one `Watch` stream for the whole server (service name
//! `""`: the proxy balances a Service's pods, not one gRPC service inside
//! them, and there is no setting naming one). An endpoint whose last answer
//! is `NOT_SERVING` (or `SERVICE_UNKNOWN`) takes no new calls until it
//! answers `SERVING`; calls in flight go on. The balancer reads the verdict
//! when it picks ([`GrpcHealth::is_not_serving`]); this module never knows
//! the pool.
//!
//! - A server without `Watch` (UNIMPLEMENTED) is asked `Check` every
//!   [`CHECK_INTERVAL`], each bounded by [`CHECK_TIMEOUT`]; one without the
//!   Health service at all (or answering HTTP 404, not being gRPC) is used
//!   unchecked, as gRPC clients do.
//! - A `Watch` that ends or fails is opened again with the driver's backoff;
//!   until it answers, and after a `Check` that fails, the verdict is
//!   `unknown` and the endpoint is used: a broken connection is the
//!   connection's business (keepalive, reconnect, ejection), and a health
//!   stream that cannot be had must not take a working pod away.
//! - A new endpoint is used before its first answer, as with checks off:
//!   Kubernetes readiness already gates its start, and the first answer comes
//!   within a round trip.
//!
//! The two messages are encoded by hand: `HealthCheckRequest` is one
//! optional string field, `HealthCheckResponse` one enum field, and the proxy
//! has no protobuf library to bring in for them.

use super::Endpoint;
use super::backoff::backoff;
use super::conns::{H2Conn, StreamSlot};
use crate::metrics::HEALTH_LABELS;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

/// How often a server without `Watch` is asked.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for a `Check` answer.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest health message read; a real one takes 2 bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
const UNIMPLEMENTED: u32 = 12;

/// The last word on an endpoint's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Verdict {
    /// No answer yet, or the last stream or check failed: used.
    Unknown = 0,
    Serving = 1,
    /// `NOT_SERVING` or `SERVICE_UNKNOWN`: no new calls.
    NotServing = 2,
    /// The server has no Health service: used unchecked.
    Unimplemented = 3,
}

impl Verdict {
    #[cfg(test)]
    const ALL: [Verdict; 4] = [
        Verdict::Unknown,
        Verdict::Serving,
        Verdict::NotServing,
        Verdict::Unimplemented,
    ];

    /// `unknown`, `serving`, `not-serving` or `unimplemented`.
    pub(crate) fn name(self) -> &'static str {
        HEALTH_LABELS[self as usize]
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Verdict::Serving,
            2 => Verdict::NotServing,
            3 => Verdict::Unimplemented,
            _ => Verdict::Unknown,
        }
    }

    /// The verdict of a `ServingStatus` value.
    pub(crate) fn of_status(status: u64) -> Self {
        match status {
            1 => Verdict::Serving,
            2 | 3 => Verdict::NotServing,
            _ => Verdict::Unknown,
        }
    }
}

/// An endpoint's health verdict, read by the balancer on every pick.
#[derive(Debug, Default)]
pub(crate) struct GrpcHealth {
    verdict: AtomicU8,
    /// The server has no `Watch`: it is asked `Check` periodically.
    polling: AtomicBool,
}

impl GrpcHealth {
    pub(crate) fn verdict(&self) -> Verdict {
        Verdict::from_u8(self.verdict.load(Relaxed))
    }

    pub(crate) fn is_not_serving(&self) -> bool {
        self.verdict.load(Relaxed) == Verdict::NotServing as u8
    }

    /// Records a verdict; returns whether it changed.
    pub(crate) fn set(&self, verdict: Verdict) -> bool {
        self.verdict.swap(verdict as u8, Relaxed) != verdict as u8
    }

    pub(crate) fn is_polling(&self) -> bool {
        self.polling.load(Relaxed)
    }

    fn set_polling(&self, polling: bool) {
        self.polling.store(polling, Relaxed);
    }
}

/// Why a health stream or check gave no verdict.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthError {
    #[error("health stream: {0}")]
    Stream(#[from] h2::Error),
    #[error("health answer with HTTP status {0}")]
    HttpStatus(u16),
    #[error("health answer with gRPC status {code}: {message}")]
    Status { code: u32, message: String },
    #[error("health answer: {0}")]
    Decode(#[from] DecodeError),
    #[error("health check not answered within {0:?}")]
    Timeout(Duration),
    #[error("health answer ended without a message")]
    NoMessage,
}

impl HealthError {
    /// The server has no such method; HTTP 404 counts, as gRPC maps it so
    /// (an HTTP/2 server that is not gRPC at all).
    fn is_unimplemented(&self) -> bool {
        match self {
            HealthError::Status { code, .. } => *code == UNIMPLEMENTED,
            HealthError::HttpStatus(status) => *status == 404,
            _ => false,
        }
    }
}

/// A health answer that is not a well-formed gRPC `HealthCheckResponse`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("compressed message (none was asked for)")]
    Compressed,
    #[error("message of {0} bytes, over the {MAX_MESSAGE_BYTES} read")]
    TooLarge(usize),
    #[error("truncated protobuf")]
    Truncated,
    #[error("protobuf wire type {0} is not valid")]
    WireType(u64),
    #[error("field 1 (status) has wire type {0}, not varint")]
    StatusType(u64),
}

/// `HealthCheckRequest { service }` as one gRPC length-prefixed message.
pub(crate) fn request_frame(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Truncated)
}

/// The `ServingStatus` of a `HealthCheckResponse` (0, UNKNOWN, when absent;
/// the last one when repeated, as protobuf reads it). Other fields are skipped.
pub(crate) fn decode_status(mut message: &[u8]) -> Result<u64, DecodeError> {
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 1 && wire != 0 {
            return Err(DecodeError::StatusType(wire));
        }
        match wire {
            0 => {
                let v = varint(&mut message)?;
                if field == 1 {
                    status = v;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if message.len() < n {
                    return Err(DecodeError::Truncated);
                }
                message.advance(n);
            }
            2 => {
                let n = varint(&mut message)?;
                if (message.len() as u64) < n {
                    return Err(DecodeError::Truncated);
                }
                message.advance(n as usize);
            }
            other => return Err(DecodeError::WireType(other)),
        }
    }
    Ok(status)
}

/// Splits gRPC length-prefixed messages out of a stream's data.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buf: BytesMut,
}

impl Frames {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, if one has arrived.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(DecodeError::Compressed);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// The `grpc-status` of a trailers (or trailers-only) block, with its message.
fn grpc_status(headers: &HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

fn status_error((code, message): (u32, String)) -> Result<(), HealthError> {
    match code {
        0 => Ok(()),
        code => Err(HealthError::Status { code, message }),
    }
}

/// Checks the endpoint over `conn` for as long as the connection is open:
/// the caller drops this future when it closes. Never returns. Its streams
/// hold slots of the connection, as requests do.
pub(crate) async fn run(endpoint: &Endpoint, conn: &Arc<H2Conn>) {
    let health = endpoint.grpc_health();
    health.set_polling(false);
    let mut attempt: u32 = 0;
    loop {
        let mut answered = false;
        let result = watch(endpoint, conn, &mut answered).await;
        match result {
            Err(e) if e.is_unimplemented() => break,
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.addr, service = endpoint.service(), "{e}; watching again")
            }
            Ok(()) => {
                tracing::debug!(endpoint = %endpoint.addr, service = endpoint.service(), "health stream ended; watching again")
            }
        }
        endpoint.set_grpc_health(Verdict::Unknown);
        attempt = if answered {
            1
        } else {
            attempt.saturating_add(1)
        };
        tokio::time::sleep(backoff(attempt)).await;
    }
    health.set_polling(true);
    tracing::debug!(endpoint = %endpoint.addr, service = endpoint.service(), "no health Watch: polling Check every {CHECK_INTERVAL:?}");
    loop {
        let verdict = match tokio::time::timeout(CHECK_TIMEOUT, check(endpoint, conn)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) if e.is_unimplemented() => {
                health.set_polling(false);
                endpoint.set_grpc_health(Verdict::Unimplemented);
                tracing::info!(endpoint = %endpoint.addr, service = endpoint.service(), "no grpc.health.v1.Health service: used without health checks");
                return std::future::pending().await;
            }
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %endpoint.addr, service = endpoint.service(), "{e}");
                Verdict::Unknown
            }
            Err(_) => {
                tracing::debug!(endpoint = %endpoint.addr, service = endpoint.service(), "{}", HealthError::Timeout(CHECK_TIMEOUT));
                Verdict::Unknown
            }
        };
        endpoint.set_grpc_health(verdict);
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

fn request(endpoint: &Endpoint, path: &str, timeout: Option<Duration>) -> Request<()> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{path}", endpoint.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        builder = builder.header("grpc-timeout", format!("{}m", t.as_millis()));
    }
    builder.body(()).unwrap_or_default()
}

/// Sends one health request on `conn`; the response's body, and the
/// stream's slot on the connection, to be held as long as the body.
async fn call(
    endpoint: &Endpoint,
    conn: &Arc<H2Conn>,
    path: &str,
    timeout: Option<Duration>,
) -> Result<(h2::RecvStream, StreamSlot), HealthError> {
    let (send, slot) = conn.claim();
    let mut send = send.ready().await?;
    let (response, mut tx) = send.send_request(request(endpoint, path, timeout), false)?;
    tx.send_data(request_frame(""), true)?;
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        return Err(HealthError::HttpStatus(response.status().as_u16()));
    }
    if let Some(status) = grpc_status(response.headers()) {
        status_error(status)?;
    }
    Ok((response.into_body(), slot))
}

/// Reads the next message from `body`; `None` at its end (its trailers
/// checked).
async fn next_message(
    body: &mut h2::RecvStream,
    frames: &mut Frames,
) -> Result<Option<Bytes>, HealthError> {
    loop {
        if let Some(message) = frames.next_message()? {
            return Ok(Some(message));
        }
        let Some(data) = body.data().await else {
            if let Some(status) = body.trailers().await?.as_ref().and_then(grpc_status) {
                status_error(status)?;
            }
            return Ok(None);
        };
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
        frames.push(&data);
    }
}

/// One `Watch` stream, until it ends; `answered` says whether any message came.
async fn watch(
    endpoint: &Endpoint,
    conn: &Arc<H2Conn>,
    answered: &mut bool,
) -> Result<(), HealthError> {
    let (mut body, _slot) = call(endpoint, conn, WATCH_PATH, None).await?;
    let mut frames = Frames::default();
    while let Some(message) = next_message(&mut body, &mut frames).await? {
        *answered = true;
        endpoint.set_grpc_health(Verdict::of_status(decode_status(&message)?));
    }
    Ok(())
}

/// One `Check`.
async fn check(endpoint: &Endpoint, conn: &Arc<H2Conn>) -> Result<Verdict, HealthError> {
    let (mut body, _slot) = call(endpoint, conn, CHECK_PATH, Some(CHECK_TIMEOUT)).await?;
    let mut frames = Frames::default();
    let message = next_message(&mut body, &mut frames)
        .await?
        .ok_or(HealthError::NoMessage)?;
    let verdict = Verdict::of_status(decode_status(&message)?);
    // Drain to the trailers: an error status there overrides the message.
    while next_message(&mut body, &mut frames).await?.is_some() {}
    Ok(verdict)
}

#[cfg(test)]
#[path = "grpc_health_tests.rs"]
mod tests;
