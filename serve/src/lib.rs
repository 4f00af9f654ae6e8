//! How sidelb's own HTTP servers bound what one client can hold.
//!
//! The proxy's admin port and the injector are reached from outside their
//! pod: the kubelet probes them, Prometheus scrapes them, kube-apiserver
//! calls the injector. Anyone else who can reach the port can open
//! connections too, and a connection that sends nothing, or half a request,
//! costs a file descriptor and buffers for as long as the server keeps it.
//! Three bounds keep that small without starving the kubelet's probes:
//!
//! - **A connection cap that displaces, not refuses.** At most `max`
//!   connections are open; one more displaces the connection that has been
//!   idle longest (no request in flight). A probe's connection is new and
//!   busy for the moment it lives, so a few hundred idle or half-sent
//!   connections cannot keep it out. Only when every open connection has a
//!   request in flight is the new one closed at once.
//! - **An idle timeout.** A connection with no request in flight for
//!   `idle_timeout` (counted from its start or its last answer) is shut
//!   down gracefully (HTTP/2 GOAWAY), then closed if it lingers. Silent and
//!   trickling connections count as idle: only a complete request is
//!   activity.
//! - **A header read timeout** for HTTP/1.1, set by the caller on the
//!   builder (hyper's own), which also runs between keep-alive requests.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// How long a connection told to close (idle, or shutting down) gets to
/// finish before it is dropped: HTTP/2's graceful close waits for the
/// peer's PING acknowledgement, which a hostile peer never sends.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The open connections of one server, at most `max` of them.
pub struct Connections {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<Vec<Arc<Slot>>>,
}

struct Slot {
    id: u64,
    activity: Arc<Activity>,
    displace: Notify,
}

/// Whether a connection has a request in flight, and since when it has not.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` of the connection's start or last answer.
    last_active_ms: AtomicU64,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long the connection has been idle, `None` while it is busy.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let last = self.last_active_ms.load(Relaxed);
        Some(Duration::from_millis(self.now_ms().saturating_sub(last)))
    }
}

/// Every open connection has a request in flight: the new one is closed.
#[derive(Debug)]
pub struct AllBusy {
    pub max: usize,
}

impl fmt::Display for AllBusy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all {} connections have a request in flight; closing the new one",
            self.max
        )
    }
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        })
    }

    /// Counts a new connection in, displacing the longest-idle one at the cap.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, AllBusy> {
        let activity = Arc::new(Activity {
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
        });
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Relaxed),
            activity,
            displace: Notify::new(),
        });
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            let idlest = open
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.activity.idle_for()?)))
                .max_by_key(|&(_, idle)| idle);
            let Some((i, _)) = idlest else {
                return Err(AllBusy { max: self.max });
            };
            open.swap_remove(i).displace.notify_one();
        }
        open.push(slot.clone());
        Ok(Admitted {
            slot,
            connections: self.clone(),
        })
    }

    /// Connections counted in now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One counted connection; dropping it counts it out.
pub struct Admitted {
    slot: Arc<Slot>,
    connections: Arc<Connections>,
}

impl Admitted {
    /// Completes when a new connection has taken this one's place, for work
    /// done before [`serve_connection`] (a TLS handshake).
    pub async fn displaced(&self) {
        self.slot.displace.notified().await
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = open.iter().position(|s| s.id == self.slot.id) {
            open.swap_remove(i);
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The client closed it, or it finished.
    Closed,
    /// No request in flight for the idle timeout.
    Idle(Duration),
    /// A new connection took its place at the cap.
    Displaced,
    /// The server is shutting down.
    ShutDown,
    /// The connection failed (a protocol error, the header read timeout).
    Failed(BoxError),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed => f.write_str("closed"),
            Ended::Idle(after) => write!(f, "closed after {after:?} without a request"),
            Ended::Displaced => f.write_str("closed while idle to make room at the connection cap"),
            Ended::ShutDown => f.write_str("closed for shutdown"),
            Ended::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// Serves one admitted connection until it ends, is idle for
/// `idle_timeout`, is displaced, or `shutdown` completes.
pub async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    admitted: Admitted,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = admitted.slot.activity.clone();
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::pin!(shutdown);
    let why = loop {
        let check_in = match activity.idle_for() {
            Some(idle) if idle >= idle_timeout => break Ended::Idle(idle),
            Some(idle) => idle_timeout - idle,
            None => idle_timeout,
        };
        tokio::select! {
            result = conn.as_mut() => return match result {
                Ok(()) => Ended::Closed,
                Err(e) => Ended::Failed(e),
            },
            () = admitted.slot.displace.notified() => return Ended::Displaced,
            () = &mut shutdown => break Ended::ShutDown,
            () = tokio::time::sleep(check_in) => {}
        }
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
    why
}

/// The service, counting its requests in flight on the connection.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> Service<R> for Tracked<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Busy<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Relaxed);
        Busy {
            inner: Box::pin(self.inner.call(req)),
            activity: self.activity.clone(),
        }
    }
}

/// A request in flight; answered or dropped, it marks the connection active.
struct Busy<F> {
    inner: Pin<Box<F>>,
    activity: Arc<Activity>,
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<F> Drop for Busy<F> {
    fn drop(&mut self) {
        let now = self.activity.now_ms();
        self.activity.last_active_ms.store(now, Relaxed);
        self.activity.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
