//! Moving bodies between HTTP/2 streams with backpressure end to end.
//!
//! A chunk is read from one side only when the other side has taken the
//! previous one, and the reading side's flow-control window is released as
//! chunks are handed on. So a slow reader slows the writer through HTTP/2
//! flow control, and the proxy holds at most a window per stream, never an
//! unbounded buffer.
//!
//! The request body keeps a copy of what it has sent (up to
//! [`REPLAY_LIMIT`]) so that a request that provably never reached an app can
//! be sent again to another endpoint, whole.

use crate::endpoint::load_report::LoadReport;
use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use http::HeaderMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::Poll;

/// Largest request body kept for a retry.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// Chunks already received are joined up to this size (one default-size
/// HTTP/2 frame).
const COALESCE_LIMIT: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) enum PumpError {
    /// Reading the source failed (the sender reset or the connection broke).
    Recv(h2::Error),
    /// The destination stream failed or was reset by its peer.
    Send,
}

/// Waits until `tx` has flushed what it buffered and can take more.
///
/// The last chunk is handed over at once: nothing more will be read from the
/// source, so waiting for the peer's window would hold no less memory and
/// only cost a wake-up (most unary calls are one such chunk).
async fn send_chunk(tx: &mut SendStream<Bytes>, chunk: Bytes, eos: bool) -> Result<(), PumpError> {
    if !chunk.is_empty() && !eos {
        tx.reserve_capacity(1);
        while tx.capacity() == 0 {
            match poll_fn(|cx| tx.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(_)) => return Err(PumpError::Send),
                None => return Err(PumpError::Send),
            }
        }
    }
    tx.send_data(chunk, eos).map_err(|_| PumpError::Send)
}

/// Reads the next chunk of `rx`, or notices that `tx`'s peer reset it.
///
/// Chunks that have already arrived are joined (up to [`COALESCE_LIMIT`]),
/// so a burst of small gRPC messages crosses the proxy as one DATA frame
/// instead of one frame each.
async fn next_chunk(
    rx: &mut RecvStream,
    tx: &mut SendStream<Bytes>,
) -> Result<Option<Bytes>, PumpError> {
    let first = poll_fn(|cx| match rx.poll_data(cx) {
        Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Ok(Some(chunk))),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Err(PumpError::Recv(e))),
        Poll::Ready(None) => Poll::Ready(Ok(None)),
        // Only while waiting does the other side's reset need watching.
        Poll::Pending => match tx.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(Err(PumpError::Send)),
            Poll::Pending => Poll::Pending,
        },
    })
    .await;
    let Some(first) = first? else {
        return Ok(None);
    };
    let _ = rx.flow_control().release_capacity(first.len());
    if first.len() >= COALESCE_LIMIT {
        return Ok(Some(first));
    }
    let mut joined: Option<BytesMut> = None;
    loop {
        let more = poll_fn(|cx| Poll::Ready(rx.poll_data(cx))).await;
        match more {
            Poll::Ready(Some(Ok(chunk))) => {
                let _ = rx.flow_control().release_capacity(chunk.len());
                let buf = joined.get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(COALESCE_LIMIT);
                    b.extend_from_slice(&first);
                    b
                });
                buf.extend_from_slice(&chunk);
                if buf.len() >= COALESCE_LIMIT {
                    break;
                }
            }
            Poll::Ready(Some(Err(e))) => return Err(PumpError::Recv(e)),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    Ok(Some(joined.map_or(first, BytesMut::freeze)))
}

async fn trailers(rx: &mut RecvStream) -> Result<Option<HeaderMap>, PumpError> {
    poll_fn(|cx| rx.poll_trailers(cx))
        .await
        .map_err(PumpError::Recv)
}

/// How a copied response ended: its trailers' grpc-status and load report.
#[derive(Default)]
pub(crate) struct ResponseEnd {
    pub(crate) grpc_status: Option<u16>,
    pub(crate) load: Option<LoadReport>,
}

/// Copies a response body and its trailers; says what the trailers held.
pub(crate) async fn pump_response(
    rx: &mut RecvStream,
    tx: &mut SendStream<Bytes>,
) -> Result<ResponseEnd, PumpError> {
    while let Some(chunk) = next_chunk(rx, tx).await? {
        let eos = rx.is_end_stream();
        send_chunk(tx, chunk, eos).await?;
        if eos {
            return Ok(ResponseEnd::default());
        }
    }
    match trailers(rx).await? {
        Some(t) => {
            let end = ResponseEnd {
                grpc_status: super::grpc::status_of(&t),
                load: LoadReport::from_headers(&t),
            };
            tx.send_trailers(t).map_err(|_| PumpError::Send)?;
            Ok(end)
        }
        None => {
            tx.send_data(Bytes::new(), true)
                .map_err(|_| PumpError::Send)?;
            Ok(ResponseEnd::default())
        }
    }
}

/// A request body that can be sent again from the start.
pub(crate) struct RequestBody {
    rx: RecvStream,
    replay: Vec<Bytes>,
    replay_len: usize,
    replayable: bool,
    data_done: bool,
    trailers_done: bool,
    trailers: Option<HeaderMap>,
}

impl RequestBody {
    pub(crate) fn new(rx: RecvStream) -> Self {
        let done = rx.is_end_stream();
        RequestBody {
            rx,
            replay: Vec::new(),
            replay_len: 0,
            replayable: true,
            data_done: done,
            trailers_done: done,
            trailers: None,
        }
    }

    /// Whether the request has no body at all (END_STREAM on its headers).
    pub(crate) fn is_empty(&self) -> bool {
        self.data_done && self.trailers_done && self.replay.is_empty() && self.trailers.is_none()
    }

    /// Whether everything sent so far is kept, so the body can be sent again.
    pub(crate) fn is_replayable(&self) -> bool {
        self.replayable
    }

    /// Sends the whole body on `tx`: what earlier attempts read, then the rest.
    /// Stops keeping a copy once `keep` is false (the response has begun).
    pub(crate) async fn pump(
        &mut self,
        tx: &mut SendStream<Bytes>,
        keep: &AtomicBool,
    ) -> Result<(), PumpError> {
        let mut sent = 0;
        loop {
            if sent < self.replay.len() {
                let chunk = self.replay[sent].clone();
                sent += 1;
                let eos = sent == self.replay.len()
                    && self.data_done
                    && self.trailers_done
                    && self.trailers.is_none();
                send_chunk(tx, chunk, eos).await?;
                if eos {
                    return Ok(());
                }
                continue;
            }
            if self.data_done {
                break;
            }
            let Some(chunk) = next_chunk(&mut self.rx, tx).await? else {
                self.data_done = true;
                break;
            };
            let eos = self.rx.is_end_stream();
            if eos {
                self.data_done = true;
                self.trailers_done = true;
            }
            if self.replayable
                && keep.load(Relaxed)
                && self.replay_len + chunk.len() <= REPLAY_LIMIT
            {
                self.replay_len += chunk.len();
                self.replay.push(chunk.clone());
                sent += 1;
            } else if self.replayable {
                self.replayable = false;
                self.replay = Vec::new();
                sent = 0;
            }
            send_chunk(tx, chunk, eos).await?;
            if eos {
                return Ok(());
            }
        }
        if !self.trailers_done {
            self.trailers = trailers(&mut self.rx).await?;
            self.trailers_done = true;
        }
        match &self.trailers {
            Some(t) => tx.send_trailers(t.clone()),
            None => tx.send_data(Bytes::new(), true),
        }
        .map_err(|_| PumpError::Send)
    }
}
