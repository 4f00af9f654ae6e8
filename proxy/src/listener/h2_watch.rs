//! Watching an HTTP/2 connection's header blocks as they are read.
//!
//! A request head is a HEADERS frame and the CONTINUATION frames that
//! complete it; until the one with END_HEADERS arrives, nothing else may be
//! sent on the connection. The h2 server waits for it without a bound, so a
//! client could hold a connection (and the partial block) open forever by
//! never finishing one. [`HeaderWatch`] wraps the connection's reads, follows
//! the frame boundaries (headers only; payloads are counted, not looked at)
//! and records since when a header block has been open, so the listener can
//! apply the header read timeout to request heads after the preface too.

use crate::time::now_us;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 1;
const PUSH_PROMISE: u8 = 5;
const CONTINUATION: u8 = 9;
const END_HEADERS: u8 = 0x4;

/// Since when a header block has been open (µs of [`now_us`]), 0 if none.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpenBlock(Arc<AtomicU64>);

impl OpenBlock {
    /// How long the current header block has been open, if one is.
    pub(crate) fn open_for_us(&self, now: u64) -> Option<u64> {
        match self.0.load(Relaxed) {
            0 => None,
            since => Some(now.saturating_sub(since)),
        }
    }
}

/// Follows frame boundaries in a stream of HTTP/2 bytes.
#[derive(Debug)]
struct Frames {
    /// Bytes of the connection preface (or a payload) still to skip.
    skip: usize,
    header: [u8; FRAME_HEADER],
    have: usize,
    open: OpenBlock,
}

impl Frames {
    fn new(preface_len: usize, open: OpenBlock) -> Self {
        Frames {
            skip: preface_len,
            header: [0; FRAME_HEADER],
            have: 0,
            open,
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER {
                self.have = 0;
                self.frame();
            }
        }
    }

    fn frame(&mut self) {
        let h = &self.header;
        self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (kind, flags) = (h[3], h[4]);
        let ends = flags & END_HEADERS != 0;
        match kind {
            HEADERS | PUSH_PROMISE if !ends => {
                self.open.0.store(now_us().max(1), Relaxed);
            }
            CONTINUATION if ends => self.open.0.store(0, Relaxed),
            _ => {}
        }
    }
}

/// A connection whose reads are followed by [`Frames`].
pub(crate) struct HeaderWatch<T> {
    inner: T,
    frames: Frames,
}

impl<T> HeaderWatch<T> {
    /// Wraps a connection whose first `preface_len` bytes are the magic
    /// string; returns it and the handle on its open header block.
    pub(crate) fn new(inner: T, preface_len: usize) -> (Self, OpenBlock) {
        let open = OpenBlock::default();
        let frames = Frames::new(preface_len, open.clone());
        (HeaderWatch { inner, frames }, open)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeaderWatch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.frames.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeaderWatch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut out = (payload as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        out.extend(std::iter::repeat_n(0xAB, payload));
        out
    }

    fn open_after(chunks: &[&[u8]]) -> bool {
        let open = OpenBlock::default();
        let mut frames = Frames::new(3, open.clone());
        for chunk in chunks {
            frames.scan(chunk);
        }
        open.open_for_us(now_us() + 1).is_some()
    }

    #[test]
    fn follows_header_blocks_across_reads() {
        let preface = b"PRI";
        let headers = frame(HEADERS, 0, 20);
        let data = frame(0, 0, 100);
        let end = frame(CONTINUATION, END_HEADERS, 5);
        let whole = frame(HEADERS, END_HEADERS, 30);
        assert!(!open_after(&[preface, &whole, &data]));
        assert!(open_after(&[preface, &headers]));
        assert!(!open_after(&[preface, &headers, &end]));
        // Byte by byte, and the payload of a DATA frame that looks like a
        // HEADERS header is skipped, not read as one.
        let mut all = preface.to_vec();
        all.extend(frame(0, 0, 9));
        let len = all.len();
        all[len - 9..].copy_from_slice(&frame(HEADERS, 0, 0)[..9]);
        all.extend(&headers);
        all.extend(&end);
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert!(!open_after(&bytes));
        let cut: Vec<&[u8]> = all[..all.len() - end.len()].chunks(7).collect();
        assert!(open_after(&cut));
    }
}
