//! The HTTP/2 connections of one endpoint.
//!
//! Normally one: every request to the endpoint is a stream on it. When the
//! peer's `MAX_CONCURRENT_STREAMS` is reached the driver is asked for another
//! connection (up to [`MAX_CONNECTIONS`]) while the stream waits for a slot.

use bytes::Bytes;
use h2::client::SendRequest;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub const MAX_CONNECTIONS: usize = 8;

#[derive(Debug)]
pub struct H2Conn {
    send: SendRequest<Bytes>,
    active: AtomicUsize,
    closed: AtomicBool,
    /// Signalled when a stream finds the connection refusing new streams.
    pub closing: Notify,
}

impl H2Conn {
    pub fn new(send: SendRequest<Bytes>) -> Arc<Self> {
        Arc::new(H2Conn {
            send,
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        })
    }

    pub fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    fn has_room(&self) -> bool {
        !self.closed.load(Relaxed) && self.active() < self.send.current_max_send_streams()
    }
}

/// A stream's claim on a connection slot; released on drop.
#[derive(Debug)]
pub struct StreamSlot(Arc<H2Conn>);

impl StreamSlot {
    /// The connection refused new streams (GOAWAY): stop using it.
    pub fn mark_closed(&self) {
        if !self.0.closed.swap(true, Relaxed) {
            self.0.closing.notify_one();
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct ConnSet {
    conns: Mutex<Vec<Arc<H2Conn>>>,
    /// Signalled when every connection is at its stream limit.
    pub want_more: Notify,
}

impl ConnSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<H2Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, conn: Arc<H2Conn>) {
        self.lock().push(conn);
    }

    /// Removes a connection; returns how many remain usable.
    pub fn remove(&self, conn: &Arc<H2Conn>) -> usize {
        conn.closed.store(true, Relaxed);
        let mut conns = self.lock();
        conns.retain(|c| !Arc::ptr_eq(c, conn));
        conns.iter().filter(|c| !c.closed.load(Relaxed)).count()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A connection for one more stream: the first with room, else the least
    /// busy (h2 then queues the stream until a slot frees) while another
    /// connection is asked for.
    pub fn acquire(&self) -> Option<(SendRequest<Bytes>, StreamSlot)> {
        let conns = self.lock();
        let mut chosen = conns.iter().find(|c| c.has_room());
        if chosen.is_none() {
            let open = conns.iter().filter(|c| !c.closed.load(Relaxed));
            chosen = open.min_by_key(|c| c.active());
            if chosen.is_some() && conns.len() < MAX_CONNECTIONS {
                self.want_more.notify_one();
            }
        }
        let conn = chosen?;
        conn.active.fetch_add(1, Relaxed);
        Some((conn.send.clone(), StreamSlot(conn.clone())))
    }

    /// Drops every connection (the endpoint was removed and drained).
    pub fn clear(&self) {
        for c in self.lock().drain(..) {
            c.closed.store(true, Relaxed);
        }
    }
}
