//! HTTP/2 byte by byte: frames written by hand, for malformed input that no
//! HTTP/2 library would send (a DATA frame on stream 0, a bad HPACK index,
//! an even stream id, a header block that is never finished), and the
//! frames that come back, read without interpretation.
//!
//! Header blocks are written as HPACK literals without indexing and without
//! Huffman coding ([`header_block`]), which every decoder must accept, so the
//! test controls every byte. Responses are not decoded (their header blocks
//! use the peer's dynamic table); a test looks at frame types, flags, stream
//! ids and the error codes of `RST_STREAM` and `GOAWAY`.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0;
pub const PROTOCOL_ERROR: u32 = 1;
pub const FLOW_CONTROL_ERROR: u32 = 3;
pub const FRAME_SIZE_ERROR: u32 = 6;
pub const COMPRESSION_ERROR: u32 = 9;

/// One frame as it came over the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a `RST_STREAM` or `GOAWAY`.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A frame's bytes: 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with `(identifier, value)` pairs.
pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in pairs {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    // 7-bit prefix integer, no Huffman (RFC 7541 §5.1, §5.2).
    let mut len = s.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

/// A header block of literal fields without indexing, in order, exactly as
/// given (uppercase names, pseudo-headers anywhere, any bytes).
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_string(&mut out, name);
        hpack_string(&mut out, value);
    }
    out
}

/// The header fields of a gRPC unary call of `/sidelb.test.Echo/Unary` to
/// `authority`.
pub fn grpc_request_fields(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/sidelb.test.Echo/Unary"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

/// A whole gRPC unary call with an empty request message on `stream`:
/// HEADERS, then DATA with END_STREAM.
pub fn grpc_call(stream: u32, authority: &str) -> Vec<u8> {
    let fields = grpc_request_fields(authority);
    let borrowed: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let mut out = frame(HEADERS, END_HEADERS, stream, &header_block(&borrowed));
    out.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    out
}

/// A raw HTTP/2 client connection.
pub struct RawH2 {
    stream: TcpStream,
    buf: BytesMut,
    closed: bool,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr) -> Result<RawH2> {
        let mut h2 = RawH2::connect_bare(addr).await?;
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(&[]));
        h2.send(&hello).await?;
        Ok(h2)
    }

    /// Connects and sends nothing.
    pub async fn connect_bare(addr: SocketAddr) -> Result<RawH2> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(RawH2 {
            stream,
            buf: BytesMut::new(),
            closed: false,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await.context("sending")
    }

    /// Whether the peer has closed the connection (seen by a read).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next frame, or `None` once the peer has closed the connection.
    /// The peer's SETTINGS are acknowledged as they come.
    pub async fn next_frame(&mut self, bound: Duration) -> Result<Option<Frame>> {
        let deadline = Instant::now() + bound;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let header = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).to_vec();
                    let frame = Frame {
                        kind: header[3],
                        flags: header[4],
                        stream: (&header[5..9]).get_u32() & 0x7fff_ffff,
                        payload,
                    };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 && !self.closed {
                        let _ = self.send(&frame_ack()).await;
                    }
                    return Ok(Some(frame));
                }
            }
            if self.closed {
                return Ok(None);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .with_context(|| format!("no frame within {bound:?}"))?;
            match read {
                Ok(0) | Err(_) => self.closed = true,
                Ok(_) => {}
            }
        }
    }

    /// Frames until one matches `wanted` (returned last), at most `bound` in all.
    pub async fn until(
        &mut self,
        bound: Duration,
        wanted: impl Fn(&Frame) -> bool,
    ) -> Result<Vec<Frame>> {
        let deadline = Instant::now() + bound;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await? {
                Some(frame) => {
                    let done = wanted(&frame);
                    seen.push(frame);
                    if done {
                        return Ok(seen);
                    }
                }
                None => bail!("the connection closed first; frames: {seen:?}"),
            }
        }
    }

    /// Every frame until the peer closes the connection, at most `bound`.
    pub async fn until_closed(&mut self, bound: Duration) -> Result<Vec<Frame>> {
        let deadline = Instant::now() + bound;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Ok(Some(frame)) => seen.push(frame),
                Ok(None) => return Ok(seen),
                Err(e) => bail!("{e:#}; still open; frames: {seen:?}"),
            }
        }
    }
}

fn frame_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_literals() {
        assert_eq!(
            frame(PING, 0, 0, &[1; 8])[..9],
            [0, 0, 8, PING, 0, 0, 0, 0, 0]
        );
        assert_eq!(header_block(&[(b"a", b"bc")]), [0, 1, b'a', 2, b'b', b'c']);
        let mut long = Vec::new();
        hpack_string(&mut long, &[b'x'; 200]);
        assert_eq!(long[..3], [127, 73, b'x']);
        let rst = Frame {
            kind: RST_STREAM,
            flags: 0,
            stream: 1,
            payload: vec![0, 0, 0, 1],
        };
        assert_eq!(rst.error_code(), Some(PROTOCOL_ERROR));
    }
}
