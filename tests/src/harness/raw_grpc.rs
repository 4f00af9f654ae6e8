//! gRPC at the HTTP/2 level, for what a gRPC library hides.
//!
//! tonic (like most gRPC clients) enforces `grpc-timeout` itself and reports
//! the local expiry as its own status, and it folds a trailers-only response
//! into an ordinary error. A test that must see exactly what came over the
//! wire, e.g. "the proxy answered with a trailers-only UNAVAILABLE and a
//! `grpc-message`", or "the deadline produced DEADLINE_EXCEEDED at the far
//! end", uses [`RawGrpc`]: one h2 connection, requests sent as given, the
//! response's headers, messages and trailers returned untouched.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Bound on one raw call, from sending to the trailers.
pub const RAW_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/2 connection for raw gRPC calls.
pub struct RawGrpc {
    sender: h2::client::SendRequest<Bytes>,
    authority: String,
    connection: JoinHandle<()>,
}

/// Everything the server sent back.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The gRPC messages of the body, without their 5-byte prefixes.
    pub messages: Vec<Bytes>,
    /// `None` for a trailers-only response (or a body without trailers).
    pub trailers: Option<HeaderMap>,
}

impl RawGrpc {
    /// Connects to `addr`; requests name `authority` in `:authority`.
    pub async fn connect(addr: SocketAddr, authority: &str) -> Result<RawGrpc> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::handshake(tcp)
            .await
            .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(RawGrpc {
            sender,
            authority: authority.to_string(),
            connection,
        })
    }

    /// One call of `/sidelb.test.Echo/{method}` with `messages` and extra
    /// `headers` (e.g. `("grpc-timeout", "200m")`), bounded by [`RAW_CALL_TIMEOUT`].
    pub async fn call<M: prost::Message>(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        messages: &[M],
    ) -> Result<RawResponse> {
        let path = format!("/sidelb.test.Echo/{method}");
        tokio::time::timeout(
            RAW_CALL_TIMEOUT,
            self.call_unbounded(&path, headers, messages),
        )
        .await
        .with_context(|| format!("{path}: no complete response within {RAW_CALL_TIMEOUT:?}"))?
    }

    async fn call_unbounded<M: prost::Message>(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        messages: &[M],
    ) -> Result<RawResponse> {
        let mut request = Request::post(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut sender = self
            .sender
            .clone()
            .ready()
            .await
            .context("connection ready")?;
        let (response, mut body) = sender.send_request(request.body(())?, false)?;
        let mut framed = BytesMut::new();
        for message in messages {
            framed.put_u8(0);
            framed.put_u32(u32::try_from(message.encoded_len()).context("message too large")?);
            message.encode(&mut framed)?;
        }
        body.send_data(framed.freeze(), true)?;

        let (parts, mut received) = response.await.context("response headers")?.into_parts();
        let mut data = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.context("response body")?;
            let _ = received.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = received.trailers().await.context("response trailers")?;
        Ok(RawResponse {
            status: parts.status,
            headers: parts.headers,
            messages: split_messages(data.freeze())?,
            trailers,
        })
    }
}

impl Drop for RawGrpc {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn split_messages(mut data: Bytes) -> Result<Vec<Bytes>> {
    let mut messages = Vec::new();
    while !data.is_empty() {
        if data.len() < 5 {
            bail!("a truncated gRPC message prefix: {} bytes", data.len());
        }
        let compressed = data.get_u8();
        let length = data.get_u32() as usize;
        if compressed != 0 || data.len() < length {
            bail!("a compressed or truncated gRPC message");
        }
        messages.push(data.split_to(length));
    }
    Ok(messages)
}

impl RawResponse {
    /// A response whose only header block carries `grpc-status`.
    pub fn is_trailers_only(&self) -> bool {
        self.trailers.is_none() && self.headers.contains_key("grpc-status")
    }

    /// `grpc-status`, from the trailers or a trailers-only header block.
    pub fn grpc_status(&self) -> Option<i32> {
        self.status_field("grpc-status")?.parse().ok()
    }

    /// `grpc-message`, as sent (percent-encoded).
    pub fn grpc_message(&self) -> Option<&str> {
        self.status_field("grpc-message")
    }

    /// The first value of `name` in the header block that carries the status.
    pub fn status_field(&self, name: &str) -> Option<&str> {
        let block = self.trailers.as_ref().unwrap_or(&self.headers);
        block.get(name)?.to_str().ok()
    }

    /// The messages, decoded.
    pub fn decode<R: prost::Message + Default>(&self) -> Result<Vec<R>> {
        self.messages
            .iter()
            .map(|m| R::decode(m.clone()).context("decoding a reply"))
            .collect()
    }
}
