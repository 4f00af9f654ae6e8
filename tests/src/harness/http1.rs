//! HTTP/1.1 at the byte level: a client that sends exactly the bytes a test
//! writes (malformed framing included, which no HTTP library would send) and
//! reads responses strictly, and the `sidelb-test-http1` backend.
//!
//! [`Http1Conn`] is one TCP connection: several requests in a row test
//! keep-alive, [`Http1Conn::wait_closed`] tests that the peer closed it.
//! [`Http1Backend`] answers every request with its name and a JSON echo of
//! what it received ([`Http1Echo`]).

use super::backend::START_TIMEOUT;
use super::binary::binary_path;
use super::http_get;
use super::process::Process;
use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use serde::Deserialize;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/1.1 backend's binary name.
pub const HTTP1_BACKEND_BIN: &str = "sidelb-test-http1";
/// Bound on reading one response, or on waiting for a close.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 connection.
pub struct Http1Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Http1Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Http1Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as the HTTP/1.1 backend's echo.
    pub fn echo(&self) -> Result<Http1Echo> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not an echo ({}): {}", self.status, self.text()))
    }
}

impl Http1Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Http1Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Http1Conn {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// An HTTP/1.1 view of a connection opened otherwise.
    pub fn from_stream(stream: TcpStream) -> Http1Conn {
        Http1Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await.context("writing")
    }

    /// Sends `bytes` and reads one response.
    pub async fn request(&mut self, bytes: &[u8]) -> Result<Http1Response> {
        self.send(bytes).await?;
        self.response().await
    }

    /// Reads one response, bounded by [`READ_TIMEOUT`].
    pub async fn response(&mut self) -> Result<Http1Response> {
        tokio::time::timeout(READ_TIMEOUT, self.read_response())
            .await
            .context("no complete response in time")?
    }

    /// Waits, at most [`READ_TIMEOUT`], for the peer to close the
    /// connection; fails if it sends anything instead or keeps it open.
    pub async fn wait_closed(&mut self) -> Result<()> {
        self.wait_closed_within(READ_TIMEOUT).await
    }

    /// [`Http1Conn::wait_closed`] with another bound.
    pub async fn wait_closed_within(&mut self, bound: Duration) -> Result<()> {
        let mut byte = [0u8; 1];
        if !self.buf.is_empty() {
            bail!("unread bytes before the close: {:?}", self.buf);
        }
        match tokio::time::timeout(bound, self.stream.read(&mut byte)).await {
            Ok(Ok(0)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Ok(Ok(_)) => bail!("the peer sent more instead of closing: {byte:?}"),
            Ok(Err(e)) => Err(e).context("reading"),
            Err(_) => bail!("the connection is still open after {bound:?}"),
        }
    }

    /// Reads whatever the peer sends until it closes the connection, for at
    /// most `bound`; returns what it sent (e.g. an HTTP/2 SETTINGS frame).
    pub async fn read_until_closed(&mut self, bound: Duration) -> Result<Vec<u8>> {
        let reading = async {
            loop {
                match self.fill().await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => {
                        let reset = e
                            .downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
                        return if reset { Ok(()) } else { Err(e) };
                    }
                }
            }
        };
        tokio::time::timeout(bound, reading)
            .await
            .with_context(|| format!("the connection is still open after {bound:?}"))??;
        Ok(self.buf.split().to_vec())
    }

    async fn fill(&mut self) -> Result<usize> {
        self.buf.reserve(16 * 1024);
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    async fn read_response(&mut self) -> Result<Http1Response> {
        let (status, headers, len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf)? {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (parsed.code.unwrap_or_default(), headers, len);
            }
            if self.fill().await? == 0 {
                bail!("closed before a complete response head: {:?}", self.buf);
            }
        };
        self.buf.advance(len);
        let mut response = Http1Response {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        let length = response.header("content-length").map(str::to_string);
        if response.header("transfer-encoding") == Some("chunked") {
            response.chunked = true;
            response.body = self.read_chunked().await?;
        } else if let Some(length) = length {
            let length: usize = length.trim().parse().context("content-length")?;
            while self.buf.len() < length {
                if self.fill().await? == 0 {
                    bail!("closed in the middle of the body");
                }
            }
            response.body = self.buf.split_to(length).to_vec();
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            while self.fill().await? > 0 {}
            response.body = self.buf.split().to_vec();
        }
        Ok(response)
    }

    async fn read_line(&mut self) -> Result<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(at);
                self.buf.advance(2);
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.fill().await? == 0 {
                bail!("closed in the middle of a chunked body");
            }
        }
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, if any, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    bail!("closed in the middle of a chunk");
                }
            }
            body.extend_from_slice(&self.buf.split_to(size));
            if &self.buf[..2] != b"\r\n" {
                bail!("a chunk not followed by CRLF");
            }
            self.buf.advance(2);
        }
    }
}

/// What the HTTP/1.1 backend saw of a request.
#[derive(Clone, Debug, Deserialize)]
pub struct Http1Echo {
    pub backend: String,
    pub method: String,
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`…
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub body_bytes: usize,
}

impl Http1Echo {
    /// Every value of header `name`, in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the HTTP/1.1 backend has served.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Http1Stats {
    pub requests: u64,
    pub connections: u64,
}

/// A running `sidelb-test-http1`; killed when dropped.
pub struct Http1Backend {
    name: String,
    addr: SocketAddr,
    _process: Process,
}

impl Http1Backend {
    pub async fn spawn(name: &str) -> Result<Http1Backend> {
        let mut command = Command::new(binary_path(HTTP1_BACKEND_BIN)?);
        command.args(["--name", name, "--addr", "127.0.0.1:0"]);
        let process = Process::spawn(name, command)?;
        let line = process
            .wait_for_line("its address", START_TIMEOUT, |l| {
                l.starts_with("listening ")
            })
            .await?;
        let addr = line
            .trim_start_matches("listening ")
            .parse()
            .with_context(|| format!("{name} printed an unreadable address: {line}"))?;
        Ok(Http1Backend {
            name: name.to_string(),
            addr,
            _process: process,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests served so far (asked directly, not counted).
    pub async fn stats(&self) -> Result<Http1Stats> {
        let (status, body) = http_get::get(self.addr, "/__stats").await?;
        if !status.is_success() {
            bail!("{}: /__stats answered {status}: {body}", self.name);
        }
        serde_json::from_str(&body).with_context(|| format!("{}: /__stats: {body}", self.name))
    }
}
