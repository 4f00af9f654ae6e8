//! The HTTP/2 connections of one endpoint.
//!
//! Normally one: every request to the endpoint is a stream on it. When every
//! connection is at the peer's `MAX_CONCURRENT_STREAMS`, the driver is asked
//! for another one (up to [`MAX_CONNECTIONS`]) and the request waits, briefly,
//! for whichever comes first: a free stream slot or the new connection.

use bytes::Bytes;
use h2::client::SendRequest;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub(crate) const MAX_CONNECTIONS: usize = 8;

/// Wakes requests waiting for a stream slot; costs nothing when none wait.
#[derive(Debug, Default)]
struct Room {
    freed: Notify,
    waiting: AtomicUsize,
}

impl Room {
    fn signal(&self) {
        if self.waiting.load(Relaxed) > 0 {
            self.freed.notify_waiters();
        }
    }
}

#[derive(Debug)]
pub(crate) struct H2Conn {
    send: SendRequest<Bytes>,
    active: AtomicUsize,
    closed: AtomicBool,
    room: Arc<Room>,
    /// Signalled when a stream finds the connection refusing new streams.
    pub(crate) closing: Notify,
}

impl H2Conn {
    pub(crate) fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Relaxed)
    }

    fn has_room(&self) -> bool {
        self.is_open() && self.active() < self.send.current_max_send_streams()
    }

    /// A stream slot on this connection, whether or not it has room.
    pub(super) fn claim(self: &Arc<Self>) -> (SendRequest<Bytes>, StreamSlot) {
        self.active.fetch_add(1, Relaxed);
        (self.send.clone(), StreamSlot(self.clone()))
    }
}

/// A stream's claim on a connection slot; released on drop.
#[derive(Debug)]
pub(crate) struct StreamSlot(Arc<H2Conn>);

impl StreamSlot {
    /// The connection refused new streams (GOAWAY): stop using it.
    pub(crate) fn mark_closed(&self) {
        if !self.0.closed.swap(true, Relaxed) {
            self.0.closing.notify_one();
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
        self.0.room.signal();
    }
}

/// What a request can have now.
pub(crate) enum Acquire {
    Ready(SendRequest<Bytes>, StreamSlot),
    /// Every open connection is at its stream limit.
    Full,
    /// No open connection.
    Empty,
}

#[derive(Debug, Default)]
pub(crate) struct ConnSet {
    conns: Mutex<Vec<Arc<H2Conn>>>,
    room: Arc<Room>,
    /// Signalled when every connection is at its stream limit.
    pub(crate) want_more: Notify,
}

impl ConnSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<H2Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a newly opened connection.
    pub(crate) fn add(&self, send: SendRequest<Bytes>) -> Arc<H2Conn> {
        let conn = Arc::new(H2Conn {
            send,
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            room: self.room.clone(),
            closing: Notify::new(),
        });
        self.lock().push(conn.clone());
        self.room.signal();
        conn
    }

    /// Removes a connection; returns how many remain usable.
    pub(crate) fn remove(&self, conn: &Arc<H2Conn>) -> usize {
        conn.closed.store(true, Relaxed);
        let mut conns = self.lock();
        conns.retain(|c| !Arc::ptr_eq(c, conn));
        conns.iter().filter(|c| c.is_open()).count()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// A stream slot on a connection with room, if there is one.
    pub(crate) fn try_acquire(&self) -> Acquire {
        let conns = self.lock();
        if let Some(conn) = conns.iter().find(|c| c.has_room()) {
            let (send, slot) = conn.claim();
            return Acquire::Ready(send, slot);
        }
        if !conns.iter().any(|c| c.is_open()) {
            return Acquire::Empty;
        }
        if conns.len() < MAX_CONNECTIONS {
            self.want_more.notify_one();
        }
        Acquire::Full
    }

    /// A slot on the least busy open connection, even a full one: h2 then
    /// holds the stream until the peer allows it.
    pub(crate) fn acquire_least_busy(&self) -> Option<(SendRequest<Bytes>, StreamSlot)> {
        let conns = self.lock();
        let conn = conns
            .iter()
            .filter(|c| c.is_open())
            .min_by_key(|c| c.active())?;
        Some(conn.claim())
    }

    /// A slot, waiting at most `wait` for room (a stream finishing or a new
    /// connection) when every connection is full.
    pub(crate) async fn acquire(&self, wait: Duration) -> Option<(SendRequest<Bytes>, StreamSlot)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.room.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            self.room.waiting.fetch_add(1, Relaxed);
            let acquired = self.try_acquire();
            if !matches!(acquired, Acquire::Full) {
                self.room.waiting.fetch_sub(1, Relaxed);
            }
            match acquired {
                Acquire::Ready(send, slot) => return Some((send, slot)),
                Acquire::Empty => return None,
                Acquire::Full => {
                    let woken = tokio::time::timeout_at(deadline, freed).await;
                    self.room.waiting.fetch_sub(1, Relaxed);
                    if woken.is_err() {
                        return self.acquire_least_busy();
                    }
                }
            }
        }
    }

    /// Drops every connection (the endpoint was removed and drained).
    pub(crate) fn clear(&self) {
        for c in self.lock().drain(..) {
            c.closed.store(true, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A client connection to an in-memory HTTP/2 server that allows
    /// `max_streams` concurrent streams, its SETTINGS already applied.
    async fn connection(max_streams: u32) -> SendRequest<Bytes> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut server = h2::server::Builder::new()
                .max_concurrent_streams(max_streams)
                .handshake::<_, Bytes>(server_io)
                .await
                .expect("server handshake");
            let mut held = Vec::new();
            while let Some(Ok(stream)) = server.accept().await {
                held.push(stream);
            }
        });
        let (send, mut connection) = h2::client::handshake(client_io)
            .await
            .expect("client handshake");
        let mut pings = connection.ping_pong().expect("ping-pong");
        pings.send_ping(h2::Ping::opaque()).expect("ping");
        tokio::select! {
            r = &mut connection => panic!("connection ended: {r:?}"),
            r = poll_fn(|cx| pings.poll_pong(cx)) => r.expect("pong"),
        };
        tokio::spawn(connection);
        send
    }

    fn ready(acquire: Acquire) -> StreamSlot {
        match acquire {
            Acquire::Ready(_, slot) => slot,
            Acquire::Full => panic!("full"),
            Acquire::Empty => panic!("empty"),
        }
    }

    /// A bound for what must happen at once, so a regression fails rather than hangs.
    async fn soon<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("in time")
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_full_set_asks_for_a_connection_and_a_waiter_takes_the_first_room() {
        let set = ConnSet::default();
        assert!(matches!(set.try_acquire(), Acquire::Empty));
        assert!(
            soon(set.acquire(LONG)).await.is_none(),
            "no connection: no wait"
        );

        let first = set.add(connection(1).await);
        let held = ready(set.try_acquire());
        assert_eq!(first.active(), 1);
        let want_more = set.want_more.notified();
        tokio::pin!(want_more);
        want_more.as_mut().enable();
        assert!(matches!(set.try_acquire(), Acquire::Full));
        soon(want_more).await;

        // A stream finishing frees its slot for the waiter.
        let (got, ()) = soon(async { tokio::join!(set.acquire(LONG), async { drop(held) }) }).await;
        let (_, slot) = got.expect("a slot");
        assert!(Arc::ptr_eq(&slot.0, &first));

        // So does a new connection.
        let second = connection(1).await;
        let (got, added) =
            soon(async { tokio::join!(set.acquire(LONG), async { set.add(second) }) }).await;
        let (_, on_second) = got.expect("a slot");
        assert!(Arc::ptr_eq(&on_second.0, &added));
        assert_eq!(set.len(), 2);
    }

    #[tokio::test]
    async fn when_the_wait_is_over_the_least_busy_connection_takes_the_stream() {
        let set = ConnSet::default();
        let a = set.add(connection(1).await);
        let b = set.add(connection(1).await);
        let _on_a = ready(set.try_acquire());
        let _on_b = ready(set.try_acquire());
        let (_, over_a) = soon(set.acquire(Duration::ZERO)).await.expect("a slot");
        let least = if Arc::ptr_eq(&over_a.0, &a) { &b } else { &a };
        let (_, next) = soon(set.acquire(Duration::ZERO)).await.expect("a slot");
        assert!(Arc::ptr_eq(&next.0, least), "the one with fewer streams");
        assert_eq!((a.active(), b.active()), (2, 2));
    }

    #[tokio::test]
    async fn a_connection_that_refused_a_stream_takes_no_more() {
        let set = ConnSet::default();
        let a = set.add(connection(10).await);
        let slot = ready(set.try_acquire());
        slot.mark_closed();
        assert!(matches!(set.try_acquire(), Acquire::Empty));
        assert!(set.acquire_least_busy().is_none());
        let b = set.add(connection(10).await);
        assert!(Arc::ptr_eq(&ready(set.try_acquire()).0, &b));
        assert_eq!(set.remove(&a), 1, "one usable left");
        set.clear();
        assert_eq!(set.len(), 0);
    }
}
