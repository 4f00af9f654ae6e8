//! HTTP/1.1 request bodies: read from the app's connection by their
//! framing (a length, or chunked with optional trailers) and handed to the
//! upstream request through a small channel, so a slow endpoint slows the
//! reading and the proxy buffers at most a couple of chunks.

use super::head::Framing;
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

const READ_CHUNK: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

pub type FrameResult = Result<Frame<Bytes>, BodyError>;

/// Where the body's receiving end waits until an attempt takes it. A request
/// whose body is still here was never started, so it can be retried.
pub(crate) type BodySlot = Arc<Mutex<Option<mpsc::Receiver<FrameResult>>>>;

pub(crate) fn channel() -> (mpsc::Sender<FrameResult>, BodySlot) {
    let (tx, rx) = mpsc::channel(2);
    (tx, Arc::new(Mutex::new(Some(rx))))
}

/// Whether no attempt has taken the body yet.
pub(crate) fn untouched(slot: &BodySlot) -> bool {
    slot.lock().map(|s| s.is_some()).unwrap_or(false)
}

/// The upstream request's body.
pub(crate) struct ChannelBody {
    slot: BodySlot,
    rx: Option<mpsc::Receiver<FrameResult>>,
    framing: Framing,
    done: bool,
}

impl ChannelBody {
    pub(crate) fn new(slot: BodySlot, framing: Framing) -> Self {
        ChannelBody {
            slot,
            rx: None,
            done: framing == Framing::Empty,
            framing,
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.rx.is_none() {
            let taken = self.slot.lock().ok().and_then(|mut s| s.take());
            match taken {
                Some(rx) => self.rx = Some(rx),
                None => {
                    self.done = true;
                    return Poll::Ready(Some(Err(BodyError(
                        "the request body was already sent".into(),
                    ))));
                }
            }
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        let next = std::task::ready!(rx.poll_recv(cx));
        if next.is_none() {
            self.done = true;
        }
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked => SizeHint::default(),
        }
    }
}

/// Why reading a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the app closed the connection in the middle of the body")]
    Eof,
    #[error("reading the body: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    #[error("the upstream request stopped taking the body")]
    Abandoned,
}

/// Reads one body from `rd` (after the bytes in `buf`), sending its frames
/// to `tx`. On success the bytes after the body are left in `buf`.
pub async fn read<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    framing: Framing,
    tx: mpsc::Sender<FrameResult>,
    max_trailer_bytes: usize,
) -> Result<(), ReadError> {
    let result = match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => read_exact(rd, buf, n, &tx).await,
        Framing::Chunked => read_chunked(rd, buf, &tx, max_trailer_bytes).await,
    };
    if let Err(e) = &result {
        let _ = tx.try_send(Err(BodyError(e.to_string())));
    }
    result
}

async fn fill<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<(), ReadError> {
    buf.reserve(READ_CHUNK);
    match rd.read_buf(buf).await? {
        0 => Err(ReadError::Eof),
        _ => Ok(()),
    }
}

async fn send(tx: &mpsc::Sender<FrameResult>, frame: Frame<Bytes>) -> Result<(), ReadError> {
    tx.send(Ok(frame)).await.map_err(|_| ReadError::Abandoned)
}

async fn read_exact<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    mut remaining: u64,
    tx: &mpsc::Sender<FrameResult>,
) -> Result<(), ReadError> {
    while remaining > 0 {
        if buf.is_empty() {
            fill(rd, buf).await?;
        }
        let n = (buf.len() as u64).min(remaining) as usize;
        remaining -= n as u64;
        send(tx, Frame::data(buf.split_to(n).freeze())).await?;
    }
    Ok(())
}

/// Takes one CRLF-terminated line from `buf`, reading more as needed.
async fn line<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let mut searched = 0;
    loop {
        if let Some(pos) = buf[searched..].windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(searched + pos).freeze();
            buf.advance(2);
            if line.contains(&b'\n') || line.contains(&b'\r') {
                return Err(ReadError::Malformed("bare CR or LF in a chunk line"));
            }
            return Ok(line);
        }
        searched = buf.len().saturating_sub(1);
        if buf.len() > limit {
            return Err(ReadError::Malformed("chunk line too long"));
        }
        fill(rd, buf).await?;
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let size = line.split(|b| *b == b';').next().unwrap_or_default();
    let size = size.trim_ascii();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(ReadError::Malformed("invalid chunk size"));
    }
    let text = std::str::from_utf8(size).map_err(|_| ReadError::Malformed("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| ReadError::Malformed("invalid chunk size"))
}

async fn read_chunked<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    tx: &mpsc::Sender<FrameResult>,
    max_trailer_bytes: usize,
) -> Result<(), ReadError> {
    loop {
        let size = chunk_size(&line(rd, buf, MAX_CHUNK_LINE).await?)?;
        if size == 0 {
            break;
        }
        read_exact(rd, buf, size, tx).await?;
        // The CRLF after the data, checked by its two bytes so the error is
        // the same however the input was cut into reads.
        while buf.len() < 2 {
            fill(rd, buf).await?;
        }
        if &buf[..2] != b"\r\n" {
            return Err(ReadError::Malformed("chunk data longer than its size"));
        }
        buf.advance(2);
    }
    let mut trailers = HeaderMap::new();
    let mut total = 0;
    loop {
        let l = line(rd, buf, max_trailer_bytes).await?;
        if l.is_empty() {
            break;
        }
        total += l.len() + 2;
        if total > max_trailer_bytes {
            return Err(ReadError::Malformed("trailers too large"));
        }
        let (name, value) = l
            .iter()
            .position(|b| *b == b':')
            .map(|i| (&l[..i], l[i + 1..].trim_ascii()))
            .ok_or(ReadError::Malformed("trailer line without a colon"))?;
        let name = http::HeaderName::from_bytes(name)
            .map_err(|_| ReadError::Malformed("invalid trailer name"))?;
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| ReadError::Malformed("invalid trailer value"))?;
        trailers.append(name, value);
    }
    if !trailers.is_empty() {
        send(tx, Frame::trailers(trailers)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode(
        framing: Framing,
        wire: &[u8],
    ) -> (Result<(), ReadError>, Vec<u8>, Option<HeaderMap>, BytesMut) {
        let (tx, mut rx) = mpsc::channel(64);
        let mut buf = BytesMut::new();
        let mut rd = wire;
        let r = read(&mut rd, &mut buf, framing, tx, 1024).await;
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Ok(Ok(frame)) = rx.try_recv() {
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        (r, data, trailers, buf)
    }

    #[tokio::test]
    async fn lengths_and_chunks() {
        let (r, data, _, rest) = decode(Framing::Length(5), b"helloGET").await;
        assert!(r.is_ok());
        assert_eq!(data, b"hello");
        assert_eq!(&rest[..], b"GET");
        let (r, data, trailers, rest) = decode(
            Framing::Chunked,
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 9\r\n\r\nNEXT",
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "9");
        assert_eq!(&rest[..], b"NEXT");
    }

    #[tokio::test]
    async fn malformed_chunks() {
        for wire in [
            &b"z\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"-1\r\n",
            b"5\r\nhel",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            let (r, ..) = decode(Framing::Chunked, wire).await;
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }
}
